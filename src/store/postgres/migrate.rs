//! Embedded schema migrations (refinery), applied at start-up. Replicas
//! starting together take a session advisory lock first, so exactly one of
//! them migrates and the others wait, then find nothing to do.

use tokio_postgres::NoTls;

use crate::domain::CartError;

refinery::embed_migrations!("migrations");

/// Arbitrary, fixed: "cart" in ASCII.
const MIGRATION_LOCK: i64 = 0x6361_7274;

pub async fn run(cfg: &tokio_postgres::Config) -> Result<(), CartError> {
    run_to(cfg, None).await
}

/// Applies the migrations up to `version` (all when None).
pub async fn run_to(cfg: &tokio_postgres::Config, version: Option<i32>) -> Result<(), CartError> {
    let unavailable = |e: tokio_postgres::Error| CartError::Unavailable(format!("migrations: {e}"));
    let (mut client, conn) = cfg.connect(NoTls).await.map_err(unavailable)?;
    let conn = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "migration connection ended");
        }
    });
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(unavailable)?;
    let mut runner = migrations::runner();
    if let Some(v) = version {
        runner = runner.set_target(refinery::Target::Version(v));
    }
    let report = runner
        .run_async(&mut client)
        .await
        .map_err(|e| CartError::internal_from("migrations failed", e));
    // Closing the session releases the lock even if the unlock is not sent.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    drop(client);
    let _ = conn.await;
    for m in report?.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "migration applied");
    }
    Ok(())
}
