use clap::Parser;

use cart_service::{
    app::{Application, shutdown_signal},
    config::Config,
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.log_format);
    tracing::info!(?config, "starting");
    let app = Application::build(config).await?;
    app.run_until(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
