use clap::Parser;

use cart_service::{
    app::{Application, shutdown_signal},
    config::Config,
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = telemetry::init(&telemetry::Settings {
        log_format: config.log_format,
        otlp_endpoint: config.otlp_endpoint.as_deref(),
        service_name: &config.otel_service_name,
    })?;
    tracing::info!(?config, "starting");
    let app = Application::build(config).await?;
    let served = app.run_until(shutdown_signal()).await;
    // The last spans go out even when the server failed.
    telemetry.shutdown().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}
