//! Admission control: a replica works on at most `capacity` calls at once
//! and refuses the rest at once with `RESOURCE_EXHAUSTED` / `OVERLOADED`
//! (safe to retry with backoff) instead of queueing them without limit.
//!
//! Fairness: while several tenants have calls in flight, a tenant below
//! its fair share (`capacity / active tenants`) may go past `capacity` by
//! up to `headroom`; a tenant at or above its share only gets a slot while
//! the replica is under `capacity`. So a tenant bursting at 10x cannot take
//! the slots a quiet tenant needs: the quiet tenant's calls are admitted
//! and wait behind at most `capacity` others.
//!
//! Watch streams are long-lived and have their own cap
//! (`CART_MAX_WATCHERS_PER_TENANT`); health and reflection are never shed.
//!
//! A refusal is made cheap, because under overload most calls are refused:
//! the layer sits right after authentication (which finds the tenant), so
//! a refused call makes no request id, opens no span, writes no log line
//! and is not timed; it is counted in `cart_shed_calls_total{tenant,reason}`
//! and answered with headers encoded once at start-up (the caller's own
//! `x-request-id`, when it sent one, is echoed).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tonic::codegen::http::{HeaderMap, HeaderValue, Request, Response};
use tower::{Layer, Service};

use super::{deadline::tenant_of, status::to_status};
use crate::{domain::CartError, metrics::Metrics};

pub struct Admission {
    capacity: usize,
    headroom: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    /// Calls in flight per tenant; a tenant with none is not listed.
    tenants: HashMap<String, usize>,
}

impl Admission {
    pub fn new(capacity: usize) -> Arc<Admission> {
        let capacity = capacity.max(1);
        Arc::new(Admission {
            capacity,
            headroom: (capacity / 4).max(2),
            state: Mutex::new(State::default()),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A slot for one call of `tenant`, or None when it is to be shed.
    pub fn try_admit(self: &Arc<Self>, tenant: &str) -> Option<Permit> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine = st.tenants.get(tenant).copied().unwrap_or(0);
        let active = st.tenants.len() + usize::from(mine == 0);
        let share = (self.capacity / active).max(1);
        let bound = if active > 1 && mine < share {
            self.capacity + self.headroom
        } else {
            self.capacity
        };
        if st.in_flight >= bound {
            return None;
        }
        st.in_flight += 1;
        *st.tenants.entry(tenant.to_string()).or_insert(0) += 1;
        Some(Permit {
            admission: self.clone(),
            tenant: tenant.to_string(),
        })
    }

    fn release(&self, tenant: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.in_flight -= 1;
        if let Some(n) = st.tenants.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                st.tenants.remove(tenant);
            }
        }
    }
}

/// One admitted call; frees its slot when dropped (answered or abandoned).
pub struct Permit {
    admission: Arc<Admission>,
    tenant: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(&self.tenant);
    }
}

/// Calls admission applies to: unary calls of the cart services.
fn is_bounded(path: &str) -> bool {
    let cart = path.starts_with("/cart.v1.CartService/") || path.starts_with("/hipstershop.");
    cart && !path.ends_with("/WatchCart") && !path.ends_with("/WatchCarts")
}

#[derive(Clone)]
pub struct AdmissionLayer {
    admission: Arc<Admission>,
    metrics: Metrics,
    /// The trailers-only answer of a refused call, encoded once.
    refusal: Arc<HeaderMap>,
}

impl AdmissionLayer {
    pub fn new(admission: Arc<Admission>, metrics: Metrics) -> AdmissionLayer {
        let refusal = to_status(CartError::Overloaded).into_http::<()>();
        AdmissionLayer {
            admission,
            metrics,
            refusal: Arc::new(refusal.headers().clone()),
        }
    }
}

/// `x-request-id`, echoed on a refusal as on any other answer.
const REQUEST_ID: &str = "x-request-id";

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> AdmissionService<S> {
        AdmissionService {
            inner,
            admission: self.admission.clone(),
            metrics: self.metrics.clone(),
            refusal: self.refusal.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Arc<Admission>,
    metrics: Metrics,
    refusal: Arc<HeaderMap>,
}

impl<S> AdmissionService<S> {
    /// The answer to a refused call: no span, no log line, no request id made.
    fn refuse<B, R: Default>(&self, req: &Request<B>, tenant: &str) -> Response<R> {
        self.metrics
            .shed(tenant, CartError::Overloaded.reason().as_str());
        let mut res = Response::new(R::default());
        *res.headers_mut() = HeaderMap::clone(&self.refusal);
        if let Some(id) = req.headers().get(REQUEST_ID) {
            res.headers_mut().insert(REQUEST_ID, HeaderValue::clone(id));
        }
        res
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<Request<B>> for AdmissionService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !is_bounded(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let tenant = tenant_of(&req);
        let Some(permit) = self.admission.try_admit(&tenant) else {
            let res = self.refuse(&req, &tenant);
            return Box::pin(async { Ok(res) });
        };
        let call = self.inner.call(req);
        Box::pin(async move {
            let r = call.await;
            drop(permit);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tenant_gets_the_capacity_and_no_more() {
        let a = Admission::new(8);
        let held: Vec<_> = (0..8).map(|_| a.try_admit("a").unwrap()).collect();
        assert!(a.try_admit("a").is_none());
        drop(held);
        assert!(a.try_admit("a").is_some());
    }

    #[test]
    fn a_quiet_tenant_is_admitted_while_a_noisy_one_holds_everything() {
        let a = Admission::new(8);
        let _noisy: Vec<_> = (0..8).map(|_| a.try_admit("noisy").unwrap()).collect();
        // The quiet tenant is under its share: it gets the headroom.
        let quiet: Vec<_> = (0..2).map(|_| a.try_admit("quiet").unwrap()).collect();
        assert!(a.try_admit("noisy").is_none());
        assert_eq!(quiet.len(), 2);
        // Headroom is bounded: the replica never holds more than capacity + headroom.
        let more: Vec<_> = (0..10).filter_map(|_| a.try_admit("quiet")).collect();
        assert_eq!(8 + 2 + more.len(), 8 + a.headroom);
    }

    /// A refused call never reaches the layers inside (no request id, span
    /// or log line, no work): it is answered OVERLOADED with RetryInfo,
    /// echoes the caller's request id and is counted by tenant and reason.
    #[tokio::test]
    async fn a_refusal_is_answered_here_and_counted() {
        use std::sync::atomic::{AtomicBool, Ordering};

        use tonic_types::StatusExt as _;
        use tower::{ServiceExt as _, service_fn};

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
    fn watches_health_and_reflection_are_not_bounded() {
        assert!(is_bounded("/cart.v1.CartService/AddItems"));
        assert!(is_bounded("/hipstershop.CartService/AddItem"));
        assert!(!is_bounded("/cart.v1.CartService/WatchCarts"));
        assert!(!is_bounded("/cart.v1.CartService/WatchCart"));
        assert!(!is_bounded("/grpc.health.v1.Health/Check"));
    }
}
