//! The tower layer of admission control (`super::admission`). A refusal
//! is made cheap, because under overload most calls are refused:
//! the layer sits right after authentication (which finds the tenant), so
//! a refused call makes no request id, opens no span, writes no log line
//! and is not timed; it is counted in `cart_shed_calls_total{tenant,reason}`
//! and answered with headers encoded once at start-up (the caller's own
//! `x-request-id`, when it sent one, is echoed). Its RetryInfo suggests
//! 100 ms, doubling (up to 1.6 s) while refusals outnumber a quarter of
//! the calls admitted, so clients that honour it stop spending on
//! refusals the CPU admitted calls need (`admission::next_retry_level`).

use std::{future::Future, sync::Arc};

use tonic::codegen::http::{HeaderMap, HeaderValue, Request, Response};

use super::{
    admission::{Admission, RETRY_AFTER, Refused, is_bounded},
    around::{Around, AroundLayer, BoxFuture},
    deadline::tenant_of,
    status::to_status,
};
use crate::{
    domain::{CartError, Reason},
    metrics::Metrics,
};

/// What admission does around a call (`AdmissionLayer`).
#[derive(Clone)]
pub struct Admit {
    admission: Arc<Admission>,
    metrics: Metrics,
    /// The trailers-only answers of a refused call, encoded once per retry
    /// delay (`RETRY_AFTER`).
    refusals: Arc<[HeaderMap]>,
}

pub type AdmissionLayer = AroundLayer<Admit>;

impl AdmissionLayer {
    pub fn new(admission: Arc<Admission>, metrics: Metrics) -> AdmissionLayer {
        let refusals = RETRY_AFTER
            .iter()
            .map(|&retry_after| {
                let status = to_status(CartError::Overloaded { retry_after });
                status.into_http::<()>().headers().clone()
            })
            .collect();
        AroundLayer(Admit {
            admission,
            metrics,
            refusals,
        })
    }
}

/// `x-request-id`, echoed on a refusal as on any other answer.
const REQUEST_ID: &str = "x-request-id";

impl Admit {
    /// The answer to a refused call: no span, no log line, no request id made.
    fn refuse<B, R: Default>(
        &self,
        req: &Request<B>,
        tenant: &str,
        refused: Refused,
    ) -> Response<R> {
        self.metrics.shed(tenant, Reason::Overloaded.as_str());
        let mut res = Response::new(R::default());
        *res.headers_mut() = HeaderMap::clone(&self.refusals[refused.level()]);
        if let Some(id) = req.headers().get(REQUEST_ID) {
            res.headers_mut().insert(REQUEST_ID, HeaderValue::clone(id));
        }
        res
    }
}

impl Around for Admit {
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
        if !is_bounded(req.uri().path()) {
            return Box::pin(call(req));
        }
        let tenant = tenant_of(&req);
        let permit = match self.admission.try_admit(&tenant) {
            Ok(permit) => permit,
            Err(refused) => {
                let res = self.refuse(&req, &tenant, refused);
                return Box::pin(async { Ok(res) });
            }
        };
        let call = call(req);
        Box::pin(async move {
            let r = call.await;
            drop(permit);
            r
        })
    }
}
