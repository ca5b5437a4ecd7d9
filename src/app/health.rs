//! `grpc.health.v1` kept in step with the store.

use std::{sync::Arc, time::Duration};

use tonic_health::{ServingStatus, server::HealthReporter};

use crate::ports::{CartRepository, Store};

/// How often the health service asks the store whether it can serve.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps `grpc.health.v1` in step with the store: NOT_SERVING while it is unreachable.
pub(super) async fn report_health(
    store: Arc<dyn Store>,
    reporter: HealthReporter,
    mut last: ServingStatus,
) {
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        last = refresh_health(&*store, &reporter, Some(last)).await;
    }
}

/// Asks the store once, publishes the status when it changed and answers it.
pub(super) async fn refresh_health(
    store: &dyn CartRepository,
    reporter: &HealthReporter,
    last: Option<ServingStatus>,
) -> ServingStatus {
    let status = match store.check_health().await {
        Ok(()) => ServingStatus::Serving,
        Err(e) => {
            if last != Some(ServingStatus::NotServing) {
                tracing::warn!(error = %e, "store unreachable: health is NOT_SERVING");
            }
            ServingStatus::NotServing
        }
    };
    if last != Some(status) {
        for service in ["", "cart.v1.CartService", "hipstershop.CartService"] {
            reporter.set_service_status(service, status).await;
        }
        if last.is_some() && status == ServingStatus::Serving {
            tracing::info!("store reachable again: health is SERVING");
        }
    }
    status
}
