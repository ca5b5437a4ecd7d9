//! The client's deadline (`grpc-timeout`) is honoured: a call still
//! waiting (for a slot, a connection, a lock) when its deadline passes is
//! dropped, its work undone by dropping it, and answered
//! `DEADLINE_EXCEEDED` (reason `DEADLINE_EXCEEDED`). A call that arrives
//! with no time left does no work at all.
//!
//! tonic's own timeout fires at the same deadline with CANCELLED and no
//! ErrorInfo; this layer answers a moment before it ([`MARGIN`]), which
//! also lets the answer reach the client before the client gives up.

use std::{future::Future, time::Duration};

use tokio::time::Instant;
use tonic::codegen::http::{HeaderMap, Request, Response};

use super::{
    around::{Around, AroundLayer, BoxFuture},
    status::to_status,
};
use crate::{
    domain::{Authentication, CartError},
    metrics::Metrics,
};

/// How much earlier than the client's deadline the call is given up.
const MARGIN: Duration = Duration::from_millis(2);

/// The `grpc-timeout` of a request: 1 to 8 digits and a unit.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What the deadline layer does around a call (`DeadlineLayer`).
#[derive(Clone)]
pub struct Deadline {
    metrics: Metrics,
}

pub type DeadlineLayer = AroundLayer<Deadline>;

impl DeadlineLayer {
    pub fn new(metrics: Metrics) -> DeadlineLayer {
        AroundLayer(Deadline { metrics })
    }
}

impl Around for Deadline {
    fn around<B, R, E, F>(
        &self,
        req: Request<B>,
        call: impl FnOnce(Request<B>) -> F,
    ) -> BoxFuture<Result<Response<R>, E>>
    where
        R: Default + Send + 'static,
        E: Send + 'static,
        F: Future<Output = Result<Response<R>, E>> + Send + 'static,
    {
        let Some(timeout) = grpc_timeout(req.headers()) else {
            return Box::pin(call(req));
        };
        let tenant = tenant_of(&req);
        let metrics = self.metrics.clone();
        let expired = move || {
            metrics.shed(&tenant, CartError::DeadlineExceeded.reason().as_str());
            Ok(to_status(CartError::DeadlineExceeded).into_http())
        };
        if timeout <= MARGIN {
            return Box::pin(async move { expired() });
        }
        let deadline = Instant::now() + (timeout - MARGIN);
        let call = call(req);
        Box::pin(async move {
            tokio::select! {
                r = call => r,
                () = tokio::time::sleep_until(deadline) => expired(),
            }
        })
    }
}

/// The tenant label of a request (empty when not authenticated).
pub fn tenant_of<B>(req: &Request<B>) -> String {
    match req.extensions().get::<Authentication>() {
        Some(Authentication(Ok(c))) => c.tenant.0.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use tower::{Layer as _, ServiceExt as _, service_fn};

    use super::*;

    /// Calls through the layer with `grpc-timeout: timeout`; the inner
    /// service takes `work` and records that it started and finished.
    async fn call(timeout: &str, work: Duration) -> (tonic::Code, bool, bool) {
        let (started, finished) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (s, f) = (started.clone(), finished.clone());
        let inner = service_fn(move |_req: Request<()>| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.store(true, Ordering::SeqCst);
                tokio::time::sleep(work).await;
                f.store(true, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(Response::new(()))
            }
        });
        let req = Request::builder()
            .header("grpc-timeout", timeout)
            .body(())
            .unwrap();
        let res = DeadlineLayer::new(Metrics::new())
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        let code = res
            .headers()
            .get("grpc-status")
            .map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()));
        (
            code,
            started.load(Ordering::SeqCst),
            finished.load(Ordering::SeqCst),
        )
    }

    #[tokio::test]
    async fn no_time_left_means_no_work() {
        let (code, started, _) = call("1m", Duration::ZERO).await;
        assert_eq!((code, started), (tonic::Code::DeadlineExceeded, false));
    }

    #[tokio::test]
    async fn work_past_the_deadline_is_dropped() {
        let (code, started, finished) = call("100m", Duration::from_secs(5)).await;
        assert_eq!(code, tonic::Code::DeadlineExceeded);
        assert!(started && !finished);
        let (code, _, finished) = call("20S", Duration::from_millis(10)).await;
        assert_eq!((code, finished), (tonic::Code::Ok, true));
    }

    #[test]
    fn timeouts_parse_in_every_unit() {
        let parse = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(parse("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "10", "10x", "123456789m", "-1m"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
