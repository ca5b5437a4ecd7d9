//! The fairness scenario: two tenants on one replica, A closed-loop and B
//! paced, and both tenants' results.

use super::*;

/// Two tenants on one replica: A closed-loop at `--concurrency` (none when
/// 0), B paced at `--rate-b`; answers both tenants' results.
pub(crate) async fn fairness(ctx_a: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let args = &ctx_a.args;
    let key_b = args
        .api_key_b
        .as_ref()
        .context("fairness needs --api-key-b (tenant B)")?;
    let ctx_b = Ctx {
        // B always seeds its own carts.
        args: Args {
            concurrency: args.concurrency_b,
            seed: args.seed ^ 0xB,
            no_seed: false,
            ..args.clone()
        },
        channels: connect(&args.addr, 2).await?,
        auth: Some(
            format!("Bearer {key_b}")
                .parse()
                .context("bad --api-key-b")?,
        ),
        carts: Vec::new(),
        request_seq: AtomicU64::new(0),
        run_id: ctx_a.run_id ^ 0xB,
    };
    let carts = seed(Arc::new(Ctx {
        args: ctx_b.args.clone(),
        channels: ctx_b.channels.clone(),
        auth: ctx_b.auth.clone(),
        carts: Vec::new(),
        request_seq: AtomicU64::new(0),
        run_id: ctx_b.run_id,
    }))
    .await?;
    let ctx_b = Arc::new(Ctx { carts, ..ctx_b });
    let (warmup, duration) = (args.warmup, args.duration);
    let a = async {
        if args.concurrency == 0 {
            return Ok((Stats::default(), duration));
        }
        drive(
            ctx_a.clone(),
            Scenario::AddItems,
            args.concurrency,
            None,
            warmup,
            duration,
            None,
        )
        .await
    };
    let b = drive(
        ctx_b.clone(),
        Scenario::AddItems,
        args.concurrency_b,
        Some(args.rate_b),
        warmup,
        duration,
        None,
    );
    let (a, b) = tokio::join!(a, b);
    let ((a, d), (b, _)) = (a?, b?);
    let secs = d.as_secs_f64();
    print_table(
        &format!(
            "tenant A: add-items closed loop, concurrency {} (load {})",
            args.concurrency,
            loadavg()
        ),
        &a,
        secs,
    );
    print_table(
        &format!("tenant B: add-items at {}/s", args.rate_b),
        &b,
        secs,
    );
    Ok(serde_json::json!({ "a": stats_json(&a, secs), "b": stats_json(&b, secs) }))
}
