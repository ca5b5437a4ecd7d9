//! Logs and traces. Logs: human-readable or JSON lines on stdout, filtered
//! by RUST_LOG (default `info`; the OpenTelemetry crates' own lines from
//! `warn`). Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the spans of
//! this crate go to an OTLP/gRPC collector through a batch processor (a
//! full queue drops spans, it never blocks a call); with it unset no
//! exporter is built and the span helpers do nothing.

mod otel;
mod spans;

use tracing_subscriber::{
    EnvFilter, Layer as _, fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

pub use self::spans::{
    callback_span, exporting, inject_context, record_callback_answer, record_cart_id,
    record_rpc_status, rpc_span, trace_id,
};

/// Keeps the trace pipeline alive; `shutdown` sends what is still queued.
#[must_use = "dropping it without shutdown loses the last spans"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What telemetry needs from the configuration (kept apart from `Config`
/// so that telemetry depends on nothing of ours).
pub struct Settings<'a> {
    pub log_format: LogFormat,
    /// Unset or empty: no trace export.
    pub otlp_endpoint: Option<&'a str>,
    pub service_name: &'a str,
}

/// Installs the global subscriber: logs always, the OpenTelemetry layer
/// only when an OTLP endpoint is configured.
pub fn init(config: &Settings<'_>) -> anyhow::Result<Telemetry> {
    // The OpenTelemetry crates log their own start-up at info; their
    // warnings (a collector that does not answer, dropped spans) stay.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry-otlp=warn")
    });
    let logs = match config.log_format {
        LogFormat::Text => fmt::layer().with_target(false).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(false)
            .boxed(),
    };
    let endpoint = config.otlp_endpoint.filter(|e| !e.is_empty());
    let provider = endpoint
        .map(|e| otel::provider(e, config.service_name))
        .transpose()?;
    let traces = provider.as_ref().map(otel::layer);
    // A second init (several apps in one test process) keeps the first.
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()
        .is_ok();
    if installed && let Some(endpoint) = endpoint {
        spans::enable();
        tracing::info!(
            endpoint,
            service = config.service_name,
            "exporting traces over otlp/grpc"
        );
    }
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Exports the spans still queued (bounded by the SDK's timeout), then
    /// stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK blocks while it flushes: keep that off the runtime's workers.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces failed"),
            Err(e) => tracing::warn!(error = %e, "flushing traces failed"),
        }
    }
}
