//! The operations port (/metrics, /healthz, /readyz) and the JSON log lines.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use cart_service::{
    metrics::CallbackOutcome,
    proto::{
        CreateCartRequest, GetCartRequest, ListCartsRequest, cart_service_client::CartServiceClient,
    },
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::{Code, Request};

use crate::{
    both_stores,
    helpers::{Backend, Key, assert_error, fresh_database, http_get, spawn_app, spawn_app_with},
    operations::postgres_addr,
    proxy::Proxy,
};

/// The value of the sample `name{labels}` in an OpenMetrics text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

fn rpc(method: &str, code: &str) -> String {
    format!(r#"{{method="cart.v1.CartService/{method}",code="{code}"}}"#)
}

async fn metrics_count_rpcs_by_method_and_code(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    for _ in 0..2 {
        c.create_cart(CreateCartRequest::default()).await.unwrap();
    }
    let missing = GetCartRequest {
        cart_id: uuid::Uuid::new_v4().to_string(),
    };
    assert_error(c.get_cart(missing).await, Code::NotFound, "CART_NOT_FOUND");
    c.list_carts(ListCartsRequest::default()).await.unwrap();

    let (status, text) = http_get(app.metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    let created = rpc("CreateCart", "OK");
    let not_found = rpc("GetCart", "NOT_FOUND");
    assert_eq!(
        sample(&text, &format!("cart_rpc_requests_total{created}")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("cart_rpc_requests_total{not_found}")),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("cart_rpc_requests_total{}", rpc("ListCarts", "OK"))
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("cart_rpc_duration_seconds_count{created}")),
        Some(2.0)
    );
    // prometheus-client writes `le` first.
    let inf = r#"{le="+Inf",method="cart.v1.CartService/GetCart",code="NOT_FOUND"}"#;
    assert_eq!(
        sample(&text, &format!("cart_rpc_duration_seconds_bucket{inf}")),
        Some(1.0)
    );
    assert!(text.contains("# TYPE cart_rpc_duration_seconds histogram"));
    assert_eq!(sample(&text, "cart_watch_streams_open"), Some(0.0));

    if b == Backend::Postgres {
        assert_eq!(sample(&text, "cart_db_pool_max_connections"), Some(16.0));
        let open = sample(&text, "cart_db_pool_connections").unwrap();
        assert!(open >= 1.0, "the calls above opened a connection: {open}");
    }
}

async fn the_metrics_handle_feeds_the_endpoint(b: Backend) {
    let app = spawn_app(b).await;
    let m = &app.metrics;
    m.watch_stream_opened();
    m.watch_stream_opened();
    m.watch_stream_closed();
    m.event_delivered();
    m.callback_delivery("default", CallbackOutcome::Delivered);
    m.expiry_sweep(3);
    m.expiry_sweep(0);
    let (_, text) = http_get(app.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(&text, "cart_watch_streams_open"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "cart_events_delivered_total"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            r#"cart_callback_deliveries_total{outcome="delivered",tenant="default"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"cart_callback_deliveries_total{outcome="abandoned",tenant="default"}"#
        ),
        Some(0.0)
    );
    assert_eq!(sample(&text, "cart_expiry_sweeps_total"), Some(2.0));
    assert_eq!(sample(&text, "cart_carts_expired_total"), Some(3.0));
}

async fn probes_answer_and_unknown_paths_do_not(b: Backend) {
    let app = spawn_app(b).await;
    assert_eq!(http_get(app.metrics_addr, "/healthz").await.0, 200);
    assert_eq!(http_get(app.metrics_addr, "/readyz").await.0, 200);
    assert_eq!(http_get(app.metrics_addr, "/nope").await.0, 404);
}

both_stores!(
    metrics_count_rpcs_by_method_and_code,
    the_metrics_handle_feeds_the_endpoint,
    probes_answer_and_unknown_paths_do_not,
);

async fn wait_for_status(addr: std::net::SocketAddr, path: &str, want: u16) {
    let start = Instant::now();
    loop {
        if http_get(addr, path).await.0 == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{path} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_postgres_is_unreachable() {
    let db = fresh_database().await;
    let mut proxy = Proxy::start(postgres_addr()).await;
    let name = db.rsplit('/').next().unwrap().to_string();
    let app = spawn_app_with(Backend::Memory, |c| {
        c.database_url = Some(format!("postgres://postgres@{}/{name}", proxy.addr));
        c.db_timeout = Duration::from_millis(500);
    })
    .await;
    assert_eq!(http_get(app.metrics_addr, "/readyz").await.0, 200);

    proxy.cut();
    wait_for_status(app.metrics_addr, "/readyz", 503).await;
    assert_eq!(
        http_get(app.metrics_addr, "/healthz").await.0,
        200,
        "alive all along"
    );

    proxy.restore().await;
    wait_for_status(app.metrics_addr, "/readyz", 200).await;
}

/// Runs the binary with JSON logs, makes two calls and reads its stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_each_rpc_once_and_no_secrets() {
    let password = "pw-never-logged";
    let db = fresh_database().await;
    let db = db.replacen("postgres@", &format!("postgres:{password}@"), 1);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart-service"))
        .args(["--log-format", "json"])
        .env("CART_LISTEN_ADDR", "127.0.0.1:0")
        .env("CART_METRICS_ADDR", "127.0.0.1:0")
        .env("CART_API_KEYS", "shop-j:key-never-logged")
        .env("DATABASE_URL", &db)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut next = async || {
        let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .expect("a log line in time")
            .unwrap()
            .expect("the binary is still running");
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        (line, json)
    };

    let addr = loop {
        let (line, json) = next().await;
        seen.push(line);
        if json["message"] == "cart service listening" {
            break json["addr"].as_str().unwrap().to_string();
        }
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the binary");
    let client = |key: &str| {
        let v = format!("Bearer {key}").parse().unwrap();
        CartServiceClient::with_interceptor(channel.clone(), Key(Some(v)))
    };
    let mut c = client("key-never-logged");
    let mut req = Request::new(CreateCartRequest::default());
    req.metadata_mut()
        .insert("x-request-id", "json-log-1".parse().unwrap());
    c.create_cart(req).await.unwrap();
    let mut req = Request::new(ListCartsRequest::default());
    req.metadata_mut()
        .insert("x-request-id", "json-log-2".parse().unwrap());
    let r = client("wrong").list_carts(req).await;
    assert_error(r, Code::Unauthenticated, "UNAUTHENTICATED");

    let mut rpcs = Vec::new();
    while rpcs.len() < 2 {
        let (line, json) = next().await;
        seen.push(line);
        if json["message"] == "rpc finished" {
            rpcs.push(json);
        }
    }
    let (ok, denied) = (&rpcs[0], &rpcs[1]);
    assert_eq!(ok["method"], "cart.v1.CartService/CreateCart", "{ok}");
    assert_eq!(ok["code"], "OK");
    assert_eq!(ok["tenant"], "shop-j");
    assert_eq!(ok["request_id"], "json-log-1");
    assert!(ok["duration_ms"].as_f64().unwrap() > 0.0, "{ok}");
    assert_eq!(denied["method"], "cart.v1.CartService/ListCarts");
    assert_eq!(denied["code"], "UNAUTHENTICATED");
    assert_eq!(denied["request_id"], "json-log-2");
    assert_eq!(denied["tenant"], "");
    for line in &seen {
        assert!(
            !line.contains("key-never-logged") && !line.contains(password),
            "a secret in {line}"
        );
    }
    child.kill().await.unwrap();
}
