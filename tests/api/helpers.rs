//! Test harness: starts the real server on port 0 over a chosen store
//! (Postgres gets a fresh database per test) and hands out generated clients.

use std::sync::Arc;

use cart_service::{
    app::Application,
    auth::keys::{ApiKeys, parse_list},
    config::Config,
    ports::Store,
    proto::{self, cart_service_client::CartServiceClient},
    usecase::Housekeeping,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Code, Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_types::StatusExt;

/// The store a test runs against; every shared test runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Postgres,
}

/// Runs each named `async fn(Backend)` as two tests: `memory::name` and `postgres::name`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Memory).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Admin connection for creating test databases; TEST_DATABASE_URL overrides.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database and answers its URL. Panics (failing the
/// test loudly) when Postgres cannot be reached.
pub async fn fresh_database() -> String {
    let admin = admin_url();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("tests need Postgres at {admin} (set TEST_DATABASE_URL): {e}"));
    tokio::spawn(conn);
    let name = format!("cart_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("admin url has a database");
    let query = admin
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{base}/{name}{query}")
}

/// Adds `authorization: Bearer <key>` when a key is set.
#[derive(Clone)]
pub struct Key(pub Option<AsciiMetadataValue>);

impl Interceptor for Key {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = CartServiceClient<InterceptedService<Channel, Key>>;

pub struct TestApp {
    pub port: u16,
    channel: Channel,
    pub client: Client,
    pub store: Arc<dyn Store>,
    /// The retention use case the server's sweeper runs.
    pub housekeeping: Housekeeping,
    /// The connection pool's use, read when called (None on memory).
    pub pool: Option<cart_service::metrics::http::PoolProbe>,
    stop: Option<oneshot::Sender<()>>,
    running: Option<JoinHandle<anyhow::Result<()>>>,
    /// Where /metrics, /healthz and /readyz answer.
    pub metrics_addr: std::net::SocketAddr,
    pub metrics: cart_service::metrics::Metrics,
}

impl TestApp {
    /// A client that sends `key` (None: no authorization header).
    pub fn client_with_key(&self, key: Option<&str>) -> Client {
        let v = key.map(|k| MetadataValue::try_from(format!("Bearer {k}")).unwrap());
        CartServiceClient::with_interceptor(self.channel.clone(), Key(v))
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Stops the server (and its background work) and waits for it.
    pub async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

/// Starts a server with default settings on `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Starts a server after `customize` has changed its settings.
pub async fn spawn_app_with(backend: Backend, customize: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::defaults();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.metrics_addr = "127.0.0.1:0".parse().unwrap();
    if backend == Backend::Postgres {
        config.database_url = Some(fresh_database().await);
    }
    customize(&mut config);
    serve(config).await
}

/// Starts a server on an existing database (several servers may share one).
pub async fn spawn_app_on(database_url: &str, customize: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::defaults();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.metrics_addr = "127.0.0.1:0".parse().unwrap();
    config.database_url = Some(database_url.to_string());
    customize(&mut config);
    serve(config).await
}

/// Starts a server on exactly this configuration.
pub async fn serve(config: Config) -> TestApp {
    let app = Application::build(config).await.expect("app builds");
    let port = app.port();
    let store = app.store();
    let housekeeping = app.housekeeping();
    let pool = app.pool_probe();
    let metrics_addr = ([127, 0, 0, 1], app.metrics_port()).into();
    let metrics = app.metrics();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    // Lazy: a TLS-only server would refuse an eager plaintext handshake.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let client = CartServiceClient::with_interceptor(channel.clone(), Key(None));
    TestApp {
        port,
        channel,
        client,
        store,
        housekeeping,
        pool,
        stop: Some(stop),
        running: Some(running),
        metrics_addr,
        metrics,
    }
}

/// `tenant:key` pairs for `Config::api_keys` (a key may end in `:scope+scope`).
pub fn keys(pairs: &[(&str, &str)]) -> Option<ApiKeys> {
    let list: Vec<String> = pairs.iter().map(|(t, k)| format!("{t}:{k}")).collect();
    Some(parse_list(&list.join(",")).expect("valid test keys"))
}

/// Asserts a failed call's gRPC code and ErrorInfo (domain cart.v1, reason).
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
) -> Status {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "code of {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "cart.v1");
    assert_eq!(info.reason, reason, "reason of {status:?}");
    status
}

/// The fields named by an error's BadRequest.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

pub fn item(sku: &str, quantity: i32, unit_price: &str) -> proto::ItemInput {
    proto::ItemInput {
        sku: sku.into(),
        name: format!("{sku} name"),
        quantity,
        unit_price: unit_price.into(),
        ..Default::default()
    }
}

/// Creates a USD cart holding `items`.
pub async fn create_cart(client: &mut Client, items: Vec<proto::ItemInput>) -> proto::Cart {
    client
        .create_cart(proto::CreateCartRequest {
            currency: "USD".into(),
            items,
            ..Default::default()
        })
        .await
        .expect("create cart")
        .into_inner()
}

pub async fn get(client: &mut Client, id: &str) -> proto::Cart {
    client
        .get_cart(proto::GetCartRequest { cart_id: id.into() })
        .await
        .expect("get cart")
        .into_inner()
}

pub fn status(cart: &proto::Cart) -> proto::CartStatus {
    proto::CartStatus::try_from(cart.status).expect("known status")
}

/// Submits a cart (it must hold items).
pub async fn submit(client: &mut Client, id: &str) -> proto::Cart {
    client
        .submit_cart(proto::SubmitCartRequest {
            cart_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
}

pub async fn confirm(
    client: &mut Client,
    id: &str,
    actor: proto::Actor,
) -> Result<proto::Cart, Status> {
    client
        .confirm_cart(proto::ConfirmCartRequest {
            cart_id: id.into(),
            actor: actor as i32,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn cancel(client: &mut Client, id: &str) -> Result<proto::Cart, Status> {
    client
        .cancel_cart(proto::CancelCartRequest {
            cart_id: id.into(),
            actor: proto::Actor::Customer as i32,
            reason: "changed my mind".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// The next message of a server stream, failing the test after 5 s.
pub async fn next<T>(stream: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.message())
        .await
        .expect("a stream message within 5 s")
        .expect("stream message")
        .expect("the stream is still open")
}

/// Asserts that a stream ends (cleanly) within 5 s.
pub async fn assert_ends<T: std::fmt::Debug>(stream: &mut tonic::Streaming<T>) {
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends within 5 s");
    assert!(
        matches!(end, Ok(None)),
        "expected the end of the stream, got {end:?}"
    );
}

/// A plain HTTP/1.1 GET: the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}
