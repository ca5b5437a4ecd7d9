//! The spans the service makes for OpenTelemetry: one per RPC (server),
//! one per callback POST (client); the Postgres statement spans are made by
//! the store. Field names follow the OpenTelemetry semantic conventions;
//! `otel.*` fields name the span and its kind. Every helper is a no-op
//! unless traces are exported, so log lines stay as they were without it.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::{Status, TraceContextExt as _},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::{
    Code,
    codegen::http::{HeaderMap, HeaderName, HeaderValue},
};
use tracing::{Span, field};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is set and the layer installed).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

pub(super) fn enable() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// The span of one call, named `package.Service/Method`; it continues the
/// caller's W3C `traceparent` when the metadata carries one.
pub fn rpc_span(method: &str, request_id: &str, tenant: &str, headers: &HeaderMap) -> Span {
    let on = exporting();
    let span = tracing::info_span!(
        "rpc",
        method = %method,
        request_id = %request_id,
        otel.name = on.then_some(method),
        otel.kind = on.then_some("server"),
        cart.id = field::Empty,
        trace_id = field::Empty,
    );
    if !on {
        return span;
    }
    let parent =
        TraceContextPropagator::new().extract_with_context(&Context::new(), &Headers(headers));
    let _ = span.set_parent(parent);
    span.set_attribute("rpc.system", "grpc");
    if let Some((service, name)) = method.split_once('/') {
        span.set_attribute("rpc.service", service.to_string());
        span.set_attribute("rpc.method", name.to_string());
    }
    if !tenant.is_empty() {
        span.set_attribute("cart.tenant", tenant.to_string());
    }
    if let Some(id) = trace_id(&span) {
        span.record("trace_id", id.as_str());
    }
    span
}

/// Records the call's gRPC code; server faults mark the span as an error
/// (the semantic conventions' list for gRPC servers).
pub fn record_rpc_status(span: &Span, code: Code) {
    if !exporting() {
        return;
    }
    span.set_attribute("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.set_status(Status::error(code.description()));
    }
}

/// Tags the current call's span with the cart it works on.
pub fn record_cart_id(id: impl std::fmt::Display) {
    if exporting() {
        Span::current().record("cart.id", field::display(id));
    }
}

/// The trace id (32 hex digits) of `span`, when traces are exported.
pub fn trace_id(span: &Span) -> Option<String> {
    if !exporting() {
        return None;
    }
    let cx = span.context();
    let span_cx = cx.span().span_context().clone();
    span_cx.is_valid().then(|| span_cx.trace_id().to_string())
}

/// The span of one callback POST to `url`. Only host and port are
/// recorded: a callback URL may carry a token in its path or query.
pub fn callback_span(url: &str) -> Span {
    if !exporting() {
        return Span::none();
    }
    let authority = url.split('/').nth(2).unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<i64>().ok()),
        _ => (authority, None),
    };
    tracing::info_span!(
        "callback",
        otel.name = "POST",
        otel.kind = "client",
        http.request.method = "POST",
        server.address = host,
        server.port = port,
        http.response.status_code = field::Empty,
        error.type = field::Empty,
    )
}

/// Records how a callback POST ended: the HTTP status, or why there was
/// none. Anything but 200 fails the delivery, so it marks an error.
pub fn record_callback_answer(span: &Span, answer: &Result<u16, String>) {
    if !exporting() {
        return;
    }
    match answer {
        Ok(status) => {
            span.record("http.response.status_code", i64::from(*status));
            if *status != 200 {
                span.record("error.type", status.to_string().as_str());
                span.set_status(Status::error(format!("answered {status}")));
            }
        }
        Err(error) => {
            span.record("error.type", "no answer");
            span.set_status(Status::error(error.clone()));
        }
    }
}

/// Adds `traceparent` (and `tracestate`) for `span` to outgoing headers.
pub fn inject_context(span: &Span, headers: &mut HeaderMap) {
    if exporting() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut HeadersMut(headers));
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
