//! A tower layer around every gRPC service on the port: counts and times
//! each call by method and code, and logs it once when it ends.
//!
//! The code of a call is in the `grpc-status` response header for
//! trailers-only answers (most errors), otherwise in the trailers that end
//! the body, so the call is finished by whichever comes first; a body
//! dropped before its trailers is a call the client cancelled.

use std::{
    collections::HashSet,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prost::Message as _;
use tonic::{
    Code,
    codegen::http::{HeaderMap, Request, Response},
};
use tower::{Layer, Service};
use tracing::{Instrument as _, Span};

use super::Metrics;
use crate::domain::Authentication;

/// The method label of paths that no service on the port declares, so
/// that scanners cannot blow up the number of series.
const UNKNOWN_METHOD: &str = "unknown";

#[derive(Clone)]
pub struct RpcLayer {
    shared: Arc<Shared>,
}

struct Shared {
    metrics: Metrics,
    /// `package.Service/Method` of every method the port serves.
    methods: HashSet<String>,
}

impl RpcLayer {
    /// `descriptor_sets`: encoded file descriptor sets of every service served.
    pub fn new(metrics: Metrics, descriptor_sets: &[&[u8]]) -> RpcLayer {
        let mut methods = HashSet::new();
        for set in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        methods.insert(format!(
                            "{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        RpcLayer {
            shared: Arc::new(Shared { metrics, methods }),
        }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let mut call = Call::start(&self.shared, &req);
        let span = call.span.clone();
        let fut = span.in_scope(|| self.inner.call(req)).instrument(span);
        // The call finishes outside its span: the log line carries its own fields.
        Box::pin(async move {
            match fut.await {
                Ok(res) => {
                    let call = match status_of(res.headers()) {
                        Some(code) => {
                            call.finish(code);
                            None
                        }
                        None => Some(call),
                    };
                    Ok(res.map(|inner| RpcBody { inner, call }))
                }
                Err(e) => {
                    call.finish(Code::Unknown);
                    Err(e)
                }
            }
        })
    }
}

pin_project! {
    /// A response body that finishes its call when the trailers go out.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

/// An empty body of no call: what a layer outside this one answers with
/// when it refuses a call before it is timed (admission).
impl<B: Default> Default for RpcBody<B> {
    fn default() -> Self {
        RpcBody {
            inner: B::default(),
            call: None,
        }
    }
}

impl<B: Body> Body for RpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        // Streaming handlers run while the body is polled: keep their logs in the call's span.
        let span = this.call.as_ref().map(|c| c.span.clone());
        let poll = {
            let _entered = span.as_ref().map(Span::enter);
            this.inner.poll_frame(cx)
        };
        let ended = match &poll {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(status_of),
            Poll::Ready(Some(Err(_))) => Some(Some(Code::Unknown)),
            // An end with no trailers is a gRPC protocol error.
            Poll::Ready(None) => Some(None),
            Poll::Pending => None,
        };
        if let Some(code) = ended
            && let Some(mut call) = this.call.take()
        {
            call.finish(code.unwrap_or(Code::Unknown));
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn status_of(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// One call in flight; recorded and logged once, by `finish` or, when
/// the client went away first, on drop as CANCELLED.
struct Call {
    shared: Arc<Shared>,
    method: String,
    tenant: String,
    request_id: String,
    start: Instant,
    span: Span,
    finished: bool,
}

impl Call {
    fn start<B>(shared: &Arc<Shared>, req: &Request<B>) -> Call {
        let path = req.uri().path().trim_start_matches('/');
        let method = if shared.methods.contains(path) {
            path.to_string()
        } else {
            UNKNOWN_METHOD.to_string()
        };
        let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes());
        // The authentication layer ran first; unauthenticated calls log an
        // empty tenant, and the key itself never is.
        let tenant = match req.extensions().get::<Authentication>() {
            Some(Authentication(Ok(caller))) => caller.tenant.0.clone(),
            _ => String::new(),
        };
        let request_id = header("x-request-id")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let span = crate::telemetry::rpc_span(&method, &request_id, &tenant, req.headers());
        Call {
            shared: shared.clone(),
            method,
            tenant,
            request_id,
            start: Instant::now(),
            span,
            finished: false,
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        self.shared.metrics.rpc(&self.method, code, elapsed);
        crate::telemetry::record_rpc_status(&self.span, code);
        let trace_id = crate::telemetry::trace_id(&self.span);
        // Microsecond precision, so the number prints short.
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        // A root event: its fields are on the line, not repeated from a span.
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    parent: None,
                    method = %self.method,
                    code = %code_name(code),
                    duration_ms,
                    tenant = %self.tenant,
                    request_id = %self.request_id,
                    trace_id = trace_id.as_deref().map(tracing::field::display),
                    "rpc finished"
                )
            };
        }
        if is_server_fault(code) {
            log!(warn);
        } else {
            log!(info);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// Codes that point at the service rather than the caller.
fn is_server_fault(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown | Code::Internal | Code::Unavailable | Code::DataLoss
    )
}

/// The canonical upper-case name of a gRPC code, as other gRPC tooling labels it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use tower::{ServiceExt as _, service_fn};

    use super::*;

    const METHOD: &str = "grpc.health.v1.Health/Check";

    /// A server answering `status` in a header (trailers-only) or in trailers.
    async fn call_with(
        path: &str,
        status: &'static str,
        in_header: bool,
        read_body: bool,
    ) -> String {
        let metrics = Metrics::new();
        let layer = RpcLayer::new(metrics.clone(), &[tonic_health::pb::FILE_DESCRIPTOR_SET]);
        let inner = service_fn(move |_req: Request<()>| async move {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            let body = Full::new(Bytes::from_static(b"x"))
                .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
            let mut res = Response::new(body);
            if in_header {
                res.headers_mut()
                    .insert("grpc-status", status.parse().unwrap());
            }
            Ok::<_, Infallible>(res)
        });
        let req = Request::builder().uri(path).body(()).unwrap();
        let res = layer.layer(inner).oneshot(req).await.unwrap();
        if read_body {
            res.into_body().collect().await.unwrap();
        } else {
            drop(res);
        }
        metrics.render(None, 0)
    }

    fn count(text: &str, method: &str, code: &str) -> bool {
        let series = format!(r#"cart_rpc_requests_total{{method="{method}",code="{code}"}} 1"#);
        text.lines().any(|l| l == series)
    }

    #[tokio::test]
    async fn the_code_comes_from_the_header_or_the_trailers() {
        let text = call_with(&format!("/{METHOD}"), "5", true, false).await;
        assert!(count(&text, METHOD, "NOT_FOUND"), "{text}");
        let text = call_with(&format!("/{METHOD}"), "0", false, true).await;
        assert!(count(&text, METHOD, "OK"), "{text}");
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_trailers_is_cancelled() {
        let text = call_with(&format!("/{METHOD}"), "0", false, false).await;
        assert!(count(&text, METHOD, "CANCELLED"), "{text}");
    }

    #[tokio::test]
    async fn paths_nobody_serves_share_one_label() {
        let text = call_with("/scan/me", "12", true, false).await;
        assert!(count(&text, UNKNOWN_METHOD, "UNIMPLEMENTED"), "{text}");
        assert!(!text.contains("scan"), "{text}");
    }
}
