//! Setting a run up: the carts it works on, created, listed or read from
//! `--cart-ids`.

use super::*;

/// The deadline of the calls that set a run up (seeding, listing carts).
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// Creates `--carts` carts (or lists the tenant's existing ones); answers their ids.
pub(crate) async fn seed(ctx: Arc<Ctx>) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    if let Some(path) = &ctx.args.cart_ids {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --cart-ids {}", path.display()))?;
        let ids: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            bail!("--cart-ids {}: no ids", path.display());
        }
        eprintln!("using {} carts from {}", ids.len(), path.display());
        return Ok(ids);
    }
    if ctx.args.no_seed {
        let mut c = ctx.client(0);
        let mut token = String::new();
        let mut ids = Vec::new();
        while ids.len() < ctx.args.carts {
            let mut req = ctx.req(proto::ListCartsRequest {
                statuses: vec![proto::CartStatus::Active as i32],
                page_size: 100,
                page_token: token.clone(),
                ..Default::default()
            });
            // Setting up is not measured: --deadline is for the calls measured.
            req.set_timeout(SETUP_DEADLINE);
            let page = c.list_carts(req).await?.into_inner();
            ids.extend(page.carts.into_iter().map(|c| c.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        ids.truncate(ctx.args.carts);
        if ids.is_empty() {
            bail!("--no-seed: the tenant has no ACTIVE carts");
        }
        eprintln!("using {} existing carts", ids.len());
        return Ok(ids);
    }
    let workers = ctx.args.concurrency.clamp(1, 32);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = ctx.client(w);
            let mut rng = Rng::new(ctx.args.seed ^ ((w as u64 + 1) << 32));
            let mut ids = Vec::new();
            let mut n = w;
            while n < ctx.args.carts {
                let mut r = new_cart_request(&ctx, &mut rng, n, ctx.args.seed_items);
                if ctx.args.distinct_lines {
                    r.items = (0..ctx.args.seed_items).map(item_n).collect();
                }
                let cart = loop {
                    let mut req = ctx.req(r.clone());
                    req.set_timeout(SETUP_DEADLINE);
                    match c.create_cart(req).await {
                        Ok(cart) => break cart.into_inner(),
                        // Past the server's limit: back off as any client would.
                        Err(e) if e.code() == Code::ResourceExhausted => {
                            rng.refusals += 1;
                            let wait = ctx.backoff(&mut rng, &e);
                            tokio::time::sleep(wait).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                rng.refusals = 0;
                ids.push(cart.id);
                n += workers;
            }
            Ok::<_, anyhow::Error>(ids)
        }));
    }
    let mut ids = Vec::with_capacity(ctx.args.carts);
    for t in tasks {
        ids.extend(t.await??);
    }
    eprintln!(
        "seeded {} carts in {:.1}s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ids)
}
