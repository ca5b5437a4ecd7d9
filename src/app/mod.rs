//! Wires config, store and gRPC services into a server bound to its port.

mod health;
mod request_id;
mod settings;

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
};
use tonic::transport::{Server, server::TcpIncoming};
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

use self::{
    health::{refresh_health, report_health},
    request_id::MakeRequestUuid,
    settings::{authenticator, callback_settings, in_flight_bound, keep, policy, running_slots},
};
use crate::{
    auth::{layer::AuthLayer, reload::KeyFile},
    boutique::BoutiqueCart,
    callbacks::CallbackWorker,
    config::Config,
    grpc::{
        admission::Admission,
        admission_layer::AdmissionLayer,
        deadline::DeadlineLayer,
        fair_gate::{FairGate, FairGateLayer},
        routes::CartRoutes,
        service::CartApi,
    },
    hipstershop::cart_service_server::CartServiceServer as BoutiqueServer,
    metrics::http::PoolProbe,
    metrics::{Metrics, rpc::RpcLayer},
    ports::Store,
    proto,
    store::{
        memory::MemoryStore,
        postgres::{PgOptions, PgStore},
    },
    usecase::{Carts, Housekeeping},
};

/// Largest request accepted (4 MiB), so an oversized message is refused early.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

type ServeFuture = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

pub struct Application {
    addr: SocketAddr,
    serve: ServeFuture,
    stop: oneshot::Sender<()>,
    store: Arc<dyn Store>,
    carts: Carts,
    housekeeping: Housekeeping,
    pool: Option<PoolProbe>,
    metrics: Metrics,
    metrics_addr: SocketAddr,
    metrics_serve: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Background work (health, expiry, callbacks) that ends with the server.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Set on shutdown: watch streams end so that the server can stop.
    closing: watch::Sender<bool>,
}

/// The store the configuration names, and how to read its pool's use.
pub async fn build_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Option<PoolProbe>)> {
    Ok(match &config.database_url {
        Some(url) => {
            let opts = PgOptions {
                url: url.clone(),
                pool_size: config.db_pool_size,
                timeout: config.db_timeout,
                cache_bytes: config.cache_mib.saturating_mul(1024 * 1024),
            };
            let store = Arc::new(
                PgStore::connect(&opts)
                    .await
                    .context("connecting to Postgres")?,
            );
            let pool = store.clone();
            let probe: PoolProbe = Arc::new(move || pool.pool_use());
            (store, Some(probe))
        }
        None => {
            tracing::warn!("DATABASE_URL is not set: carts live in memory and are lost on restart");
            (Arc::new(MemoryStore::new()), None)
        }
    })
}

impl Application {
    /// Connects the store, migrates it and binds the listener (port 0 picks one).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let (store, pool) = build_store(&config).await?;
        let carts = Carts::new(store.clone(), policy(&config)?);
        let housekeeping = Housekeeping::new(store.clone(), store.clone(), keep(&config)?);
        let metrics = Metrics::new();
        let auth = authenticator(&config, &metrics)?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding {}", config.listen_addr))?;
        let addr = listener.local_addr()?;
        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .await
            .with_context(|| format!("binding {}", config.metrics_addr))?;
        let metrics_addr = metrics_listener.local_addr()?;
        let metrics_serve = crate::metrics::http::serve(
            metrics_listener,
            metrics.clone(),
            store.clone(),
            pool.clone(),
        );

        let (reporter, health) = tonic_health::server::health_reporter();
        // The first status is in place before the port serves, so an early
        // probe never finds cart.v1.CartService unregistered.
        let first = refresh_health(&*store, &reporter, None).await;
        let mut tasks = vec![tokio::spawn(report_health(store.clone(), reporter, first))];
        tasks.push(tokio::spawn(crate::expiry::sweep_forever(
            carts.clone(),
            housekeeping.clone(),
            config.sweep_interval,
            metrics.clone(),
        )));
        // Tenants are configured, so per-tenant series are bounded; they show from the start.
        match &config.api_keys {
            Some(keys) => {
                metrics.callback_tenants(keys.0.iter().map(|k| k.tenant.as_str()));
                metrics.shed_tenants(keys.0.iter().map(|k| k.tenant.as_str()));
            }
            None => {
                metrics.callback_tenants(["default"]);
                metrics.shed_tenants(["default"]);
            }
        }
        let worker =
            CallbackWorker::new(store.clone(), &callback_settings(&config), metrics.clone());
        tasks.push(tokio::spawn(worker.run()));
        if let Some(path) = &config.api_keys_file {
            let file = KeyFile::new(
                auth.clone(),
                path.clone(),
                config.api_keys_poll,
                metrics.clone(),
            );
            tasks.push(tokio::spawn(file.watch()));
        }

        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let (closing, closing_rx) = watch::channel(false);
        let cart_api = CartApi::new(carts.clone(), store.clone(), config.default_currency)
            .with_stream_lifetime(config.watch_max_lifetime)
            .with_callback_hosts(config.callback_hosts.clone())
            .with_shutdown(closing_rx)
            .with_metrics(metrics.clone())
            .with_max_watchers(config.max_watchers_per_tenant);
        let api = CartRoutes::new(cart_api, MAX_MESSAGE_BYTES);
        let boutique =
            BoutiqueServer::new(BoutiqueCart::new(carts.clone(), config.default_currency))
                .max_decoding_message_size(MAX_MESSAGE_BYTES);

        // The caller is authenticated once, before anything reads it. Admission
        // comes next, so a refused call costs no request id, span or log line
        // (it is counted in cart_shed_calls_total). The request id is set
        // before the RPC layer logs it and sent back after.
        let rpc_layer = RpcLayer::new(
            metrics.clone(),
            &[
                proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
        );
        let layers = ServiceBuilder::new()
            .layer(AuthLayer::new(auth))
            .layer(AdmissionLayer::new(
                Admission::with_bound(in_flight_bound(&config)),
                metrics.clone(),
            ))
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(rpc_layer)
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(DeadlineLayer::new(metrics.clone()))
            .layer(FairGateLayer::new(FairGate::new(running_slots(&config))))
            .into_inner();

        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let (stop, stopped) = oneshot::channel::<()>();
        let mut server = Server::builder();
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            let read = |p: &std::path::Path| {
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))
            };
            let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
            server = server
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .context("TLS configuration")?;
            tracing::info!("serving gRPC over TLS only");
        }
        let serve = server
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(layers)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .add_service(boutique)
            // TCP_NODELAY: the builder's tcp_nodelay is ignored for an
            // incoming stream we bind ourselves; without it Nagle holds
            // small responses back for a delayed ACK (~40 ms per call).
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            });
        tracing::info!(%addr, %metrics_addr, "cart service listening");
        Ok(Application {
            addr,
            serve: Box::pin(serve),
            stop,
            store,
            carts,
            housekeeping,
            pool,
            metrics,
            metrics_addr,
            metrics_serve: Box::pin(metrics_serve),
            tasks,
            closing,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The port of /metrics, /healthz and /readyz.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_addr.port()
    }

    /// The store's ports, for tests and tools that look underneath the API.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Reads the connection pool's use; None on the memory store.
    pub fn pool_probe(&self) -> Option<PoolProbe> {
        self.pool.clone()
    }

    /// The cart use cases this server runs.
    pub fn carts(&self) -> Carts {
        self.carts.clone()
    }

    /// The retention use case this server's sweeper runs.
    pub fn housekeeping(&self) -> Housekeeping {
        self.housekeeping.clone()
    }

    /// The handle to record into (watch streams, callbacks, expiry sweeps).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Serves until `shutdown` completes, then lets in-flight calls finish.
    /// The operations endpoints stay up until the gRPC server has stopped.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            mut serve,
            stop,
            metrics_serve,
            tasks,
            closing,
            ..
        } = self;
        let ops = tokio::spawn(metrics_serve);
        let result = tokio::select! {
            r = &mut serve => r,
            () = shutdown => {
                tracing::info!("shutting down: finishing in-flight calls, ending watch streams");
                let _ = closing.send(true);
                let _ = stop.send(());
                serve.await
            }
        };
        // Undelivered callbacks stay in the outbox for the next instance.
        tasks.iter().for_each(|t| t.abort());
        ops.abort();
        result.context("gRPC server failed")
    }
}

/// Reflection over everything served on the port, error details included
/// (the hipstershop service is in the same descriptor set as cart.v1).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
