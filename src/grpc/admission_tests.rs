//! Unit tests of admission control (kept beside it, in their own file).

use tonic::codegen::http::{Request, Response};

use super::*;
use crate::{grpc::admission_layer::AdmissionLayer, metrics::Metrics};

/// The header a refusal echoes.
const REQUEST_ID: &str = "x-request-id";

#[test]
fn one_tenant_gets_the_capacity_and_no_more() {
    let a = Admission::new(8);
    let held: Vec<_> = (0..8).map(|_| a.try_admit("a").unwrap()).collect();
    assert!(a.try_admit("a").is_err());
    drop(held);
    assert!(a.try_admit("a").is_ok());
}

#[test]
fn a_quiet_tenant_is_admitted_while_a_noisy_one_holds_everything() {
    let a = Admission::new(8);
    let _noisy: Vec<_> = (0..8).map(|_| a.try_admit("noisy").unwrap()).collect();
    // The quiet tenant is under its share: it gets the reserve.
    let quiet: Vec<_> = (0..2).map(|_| a.try_admit("quiet").unwrap()).collect();
    assert!(a.try_admit("noisy").is_err());
    assert_eq!(quiet.len(), 2);
    // The reserve is bounded: the replica never holds more than capacity + reserve.
    let more: Vec<_> = (0..10).filter_map(|_| a.try_admit("quiet").ok()).collect();
    assert_eq!(8 + 2 + more.len(), 8 + 2);
    // A reserved slot freed goes back to the reserve, not to the noisy tenant.
    drop(quiet);
    assert!(a.try_admit("noisy").is_err());
    assert!(a.try_admit("quiet").is_ok());
}

#[test]
fn a_quiet_tenant_is_admitted_while_the_limit_falls_below_what_a_noisy_one_holds() {
    let a = Admission::with_bound(Bound::Adaptive {
        min: 4,
        max: 64,
        target: Duration::from_millis(50),
    });
    let _noisy: Vec<_> = (0..64).map(|_| a.try_admit("noisy").unwrap()).collect();
    // Latency rose: the limit falls far below the 64 calls held.
    a.lock().limit = 10;
    assert!(a.try_admit("noisy").is_err());
    // The quiet tenant holds less than the noisy one: it is admitted from
    // the reserve (64 / 4) up to its share of the ceiling (64 / 2).
    let quiet: Vec<_> = (0..8).filter_map(|_| a.try_admit("quiet").ok()).collect();
    assert_eq!(quiet.len(), 8);
    // Many quiet tenants together never take more than the reserve.
    let others: Vec<_> = (0..40)
        .filter_map(|n| a.try_admit(&format!("t{n}")).ok())
        .collect();
    assert_eq!(quiet.len() + others.len(), 16);
}

#[test]
fn a_quiet_tenant_keeps_its_share_when_the_limit_collapses_to_its_min() {
    let a = Admission::with_bound(Bound::Adaptive {
        min: 4,
        max: 64,
        target: Duration::from_millis(50),
    });
    let _noisy: Vec<_> = (0..20).map(|_| a.try_admit("noisy").unwrap()).collect();
    a.lock().limit = 4;
    // 4 / 2 tenants would be a share of 2: a quiet tenant holding 3 calls
    // (200 calls/s at 15 ms) would be refused its third.
    let quiet: Vec<_> = (0..3).filter_map(|_| a.try_admit("quiet").ok()).collect();
    assert_eq!(quiet.len(), 3);
    // The tenant holding the most never takes the reserve.
    assert!(a.try_admit("noisy").is_err());
}

#[test]
fn tenants_holding_alike_past_the_limit_do_not_take_the_reserve() {
    let a = Admission::new(8);
    let _a: Vec<_> = (0..4).map(|_| a.try_admit("a").unwrap()).collect();
    let _b: Vec<_> = (0..4).map(|_| a.try_admit("b").unwrap()).collect();
    assert!(a.try_admit("a").is_err());
    assert!(a.try_admit("b").is_err());
}

/// A refused call never reaches the layers inside (no request id, span
/// or log line, no work): it is answered OVERLOADED with RetryInfo,
/// echoes the caller's request id and is counted by tenant and reason.
#[tokio::test]
async fn a_refusal_is_answered_here_and_counted() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tonic_types::StatusExt as _;
    use tower::{Layer as _, ServiceExt as _, service_fn};

    let admission = Admission::new(1);
    let _held = admission.try_admit("").unwrap();
    let reached = Arc::new(AtomicBool::new(false));
    let r = reached.clone();
    let inner = service_fn(move |_req: Request<()>| {
        r.store(true, Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(Response::new(())) }
    });
    let metrics = Metrics::new();
    let req = Request::builder()
        .uri("/cart.v1.CartService/GetCart")
        .header(REQUEST_ID, "my-id")
        .body(())
        .unwrap();
    let res = AdmissionLayer::new(admission, metrics.clone())
        .layer(inner)
        .oneshot(req)
        .await
        .unwrap();
    assert!(!reached.load(Ordering::SeqCst));
    assert_eq!(res.headers()[REQUEST_ID], "my-id");
    let status = tonic::Status::from_header_map(res.headers()).unwrap();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "OVERLOADED"
    );
    assert_eq!(
        status.get_details_retry_info().unwrap().retry_delay,
        Some(std::time::Duration::from_millis(100))
    );
    let text = metrics.render(None, 0);
    assert!(
        text.lines()
            .any(|l| l == r#"cart_shed_calls_total{tenant="",reason="OVERLOADED"} 1"#),
        "{text}"
    );
}

#[test]
fn the_retry_delay_grows_while_refusals_outnumber_a_quarter_of_admissions() {
    // (level, admitted, refused) -> next level
    assert_eq!(next_retry_level(0, 100, 30), 1);
    assert_eq!(next_retry_level(3, 100, 30), 4);
    assert_eq!(next_retry_level(4, 100, 300), 4, "at most the last delay");
    // Between a sixteenth and a quarter: kept.
    assert_eq!(next_retry_level(2, 100, 10), 2);
    // A sixteenth or fewer: shorter, down to the first delay.
    assert_eq!(next_retry_level(2, 100, 6), 1);
    assert_eq!(next_retry_level(0, 0, 0), 0);
    // Nothing admitted while calls are refused (a stalled store): longer.
    assert_eq!(next_retry_level(1, 0, 5), 2);
    assert_eq!(RETRY_AFTER[0], Duration::from_millis(100));
}

#[tokio::test]
async fn a_refusal_suggests_the_delay_of_the_current_level() {
    use tonic_types::StatusExt as _;
    use tower::{Layer as _, ServiceExt as _, service_fn};

    let admission = Admission::new(1);
    let _held = admission.try_admit("").unwrap();
    {
        let mut st = admission.lock();
        st.retry_level = 3;
        // The window does not end during the test, whatever its speed.
        st.window_start = Instant::now() + Duration::from_secs(3600);
    }
    let Err(refused) = admission.try_admit("") else {
        panic!("admitted past the limit")
    };
    assert_eq!(refused.retry_after(), Duration::from_millis(800));
    let inner = service_fn(|_req: Request<()>| async {
        Ok::<_, std::convert::Infallible>(Response::new(()))
    });
    let req = Request::builder()
        .uri("/cart.v1.CartService/GetCart")
        .body(())
        .unwrap();
    let res = AdmissionLayer::new(admission, Metrics::new())
        .layer(inner)
        .oneshot(req)
        .await
        .unwrap();
    let status = tonic::Status::from_header_map(res.headers()).unwrap();
    assert_eq!(
        status.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_millis(800))
    );
}

#[test]
fn the_limit_follows_latency() {
    let ms = Duration::from_millis;
    let target = ms(25);
    let w = |done: u32, each: u64, peak: usize, in_flight: usize| Window {
        done,
        busy: ms(each) * done,
        peak,
        in_flight,
        elapsed: ms(100),
    };
    // 350 calls/s taking 180 ms each (64 in flight, queued): 350 x 25 ms.
    assert_eq!(next_limit(64, &w(35, 180, 64, 64), target), 9);
    // Under the target: grows by a tenth (at least one).
    assert_eq!(next_limit(18, &w(35, 20, 10, 10), target), 19);
    assert_eq!(next_limit(4, &w(35, 20, 4, 4), target), 5);
    // Slow calls far below the limit are no queue: kept.
    assert_eq!(next_limit(64, &w(1, 300, 1, 0), target), 64);
    // Stuck (nothing finished, calls in flight): halves; idle: keeps.
    assert_eq!(next_limit(64, &w(0, 0, 64, 64), target), 32);
    assert_eq!(next_limit(64, &w(0, 0, 0, 0), target), 64);
}

#[test]
fn an_adaptive_limit_starts_at_its_max_and_stays_within_bounds() {
    let a = Admission::with_bound(Bound::Adaptive {
        min: 16,
        max: 64,
        target: Duration::from_millis(50),
    });
    assert_eq!(a.limit(), 64);
    let held: Vec<_> = (0..64).map(|_| a.try_admit("a").unwrap()).collect();
    assert!(a.try_admit("a").is_err());
    // A window with every call stuck halves the limit, never below min.
    for _ in 0..4 {
        let mut st = a.lock();
        st.window_start -= WINDOW;
        a.adapt(&mut st, Instant::now());
    }
    assert_eq!(a.limit(), 16);
    drop(held);
    assert!(a.try_admit("a").is_ok());
}

#[test]
fn watches_health_and_reflection_are_not_bounded() {
    assert!(is_bounded("/cart.v1.CartService/AddItems"));
    assert!(is_bounded("/hipstershop.CartService/AddItem"));
    assert!(!is_bounded("/cart.v1.CartService/WatchCarts"));
    assert!(!is_bounded("/cart.v1.CartService/WatchCart"));
    assert!(!is_bounded("/grpc.health.v1.Health/Check"));
}
