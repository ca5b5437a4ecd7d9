//! The list scenario: ListCarts first pages, unfiltered or filtered by
//! status (`--list-status`) and/or customer (`--list-customer`, with `{n}`
//! a random customer of `--customers`), as the scale step of
//! bench/scale.sh runs them.

use super::*;

static PAGES: AtomicU64 = AtomicU64::new(0);
static CARTS: AtomicU64 = AtomicU64::new(0);

/// Mean carts per page answered so far (warm-up included).
pub(crate) fn carts_per_page() -> f64 {
    CARTS.load(Ordering::Relaxed) as f64 / PAGES.load(Ordering::Relaxed).max(1) as f64
}

/// `CONFIRMED` or `CART_STATUS_CONFIRMED` as the enum's number.
fn status(name: &str) -> Option<i32> {
    let name = name.trim().to_ascii_uppercase();
    let full = if name.starts_with("CART_STATUS_") {
        name
    } else {
        format!("CART_STATUS_{name}")
    };
    proto::CartStatus::from_str_name(&full).map(|s| s as i32)
}

pub(crate) async fn list_carts(
    ctx: &Ctx,
    c: &mut Client,
    rng: &mut Rng,
    stats: &mut Stats,
    started: Instant,
) {
    let args = &ctx.args;
    let statuses = args
        .list_status
        .iter()
        .map(|s| status(s).unwrap_or_else(|| panic!("--list-status: unknown status {s:?}")))
        .collect();
    let customer_id = match &args.list_customer {
        Some(c) => c.replace("{n}", &rng.below(args.customers.max(1)).to_string()),
        None => String::new(),
    };
    let r = proto::ListCartsRequest {
        customer_id,
        statuses,
        page_size: args.page_size,
        page_token: String::new(),
    };
    match c.list_carts(ctx.req(r)).await {
        Ok(page) => {
            stats.record("list-carts", started.elapsed());
            PAGES.fetch_add(1, Ordering::Relaxed);
            CARTS.fetch_add(page.into_inner().carts.len() as u64, Ordering::Relaxed);
        }
        Err(e) => ctx.failed(rng, stats, "list-carts", &e).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_taken_with_or_without_their_prefix() {
        assert_eq!(
            status("confirmed"),
            Some(proto::CartStatus::Confirmed as i32)
        );
        assert_eq!(
            status("CART_STATUS_ACTIVE"),
            Some(proto::CartStatus::Active as i32)
        );
        assert_eq!(status("nope"), None);
    }
}
