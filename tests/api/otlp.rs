//! OpenTelemetry traces, end to end: the binary exports to a real OTLP/gRPC
//! receiver in this process; the spans that arrive are checked for names,
//! parent/child links, attributes, error status and leaked values. Without
//! an endpoint nothing connects anywhere.

use std::time::Duration;

use cart_service::proto::{
    self, Actor, ConfirmCartRequest, CreateCartRequest, GetCartRequest, SubmitCartRequest,
    cart_service_client::CartServiceClient,
};
use futures::FutureExt as _;
use tokio::net::TcpListener;
use tonic::{Code, Request, metadata::MetadataValue};

use crate::{
    collector::{Binary, Collector, Exported, finished_by_request_id},
    helpers::{fresh_database, item},
    receiver::Receiver,
};

/// The caller's trace and span, as a W3C `traceparent` would carry them.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
/// Values of the request that must never appear in a span.
const CUSTOMER: &str = "cust-secret-7";
const SKU: &str = "SKU-SECRET-9";
const KEY: &str = "key-never-traced";

/// Span kinds of OTLP.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn with_metadata<T>(msg: T, pairs: &[(&'static str, &str)]) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {KEY}")).unwrap(),
    );
    for (k, v) in pairs {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}

fn one<'a>(spans: &'a [Exported], what: &str, f: impl Fn(&Exported) -> bool) -> &'a Exported {
    let found: Vec<_> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "one span {what} in {spans:#?}");
    found[0]
}

fn children<'a>(spans: &'a [Exported], parent: &Exported) -> Vec<&'a Exported> {
    spans
        .iter()
        .filter(|s| s.parent_id() == parent.span_id() && s.trace_id() == parent.trace_id())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_callbacks_and_statements_arrive_as_linked_spans() {
    let collector = Collector::start().await;
    let receiver = Receiver::start(&[]).await;
    let db = fresh_database().await;
    let endpoint = collector.endpoint();
    let mut bin = Binary::start(&[
        ("DATABASE_URL", Some(&db)),
        ("CART_API_KEYS", Some(&format!("shop-t:{KEY}"))),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", Some(&endpoint)),
        ("OTEL_SERVICE_NAME", Some("cart-under-test")),
    ])
    .await;
    let channel = bin.channel().await;
    let mut client = CartServiceClient::new(channel.clone());

    // Continues the caller's trace.
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let created = client
        .create_cart(with_metadata(
            CreateCartRequest {
                currency: "USD".into(),
                customer_id: CUSTOMER.into(),
                callback_url: receiver.url("/paid"),
                items: vec![item(SKU, 2, "4.50")],
                ..Default::default()
            },
            &[
                ("traceparent", &traceparent),
                ("x-request-id", "otlp-create"),
            ],
        ))
        .await
        .expect("create")
        .into_inner();
    // Starts a trace of its own.
    let get = GetCartRequest {
        cart_id: created.id.clone(),
    };
    client
        .get_cart(with_metadata(get, &[("x-request-id", "otlp-get")]))
        .await
        .expect("get");
    let missing = GetCartRequest {
        cart_id: uuid::Uuid::new_v4().to_string(),
    };
    let status = client
        .get_cart(with_metadata(missing, &[("x-request-id", "otlp-missing")]))
        .await
        .expect_err("not found");
    assert_eq!(status.code(), Code::NotFound);
    // A path nobody serves: UNIMPLEMENTED, a server-side error.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            with_metadata(GetCartRequest::default(), &[("x-request-id", "otlp-nope")]),
            "/cart.v1.CartService/NoSuchMethod".parse().unwrap(),
            tonic_prost::ProstCodec::<GetCartRequest, proto::Cart>::default(),
        )
        .await
        .expect_err("unimplemented");
    assert_eq!(status.code(), Code::Unimplemented);
    // Confirming posts the callback.
    let id = created.id.clone();
    let submit = SubmitCartRequest {
        cart_id: id.clone(),
        ..Default::default()
    };
    client
        .submit_cart(with_metadata(submit, &[]))
        .await
        .unwrap();
    let confirm = ConfirmCartRequest {
        cart_id: id.clone(),
        actor: Actor::Customer as i32,
        ..Default::default()
    };
    client
        .confirm_cart(with_metadata(confirm, &[]))
        .await
        .unwrap();
    let posted = receiver.wait_for(1, Duration::from_secs(30)).await;
    bin.wait_for_log(|l| l["message"] == "callback delivered")
        .await;

    // Shutdown flushes every span still queued.
    let logs = bin.stop().await;
    let spans = collector.spans();
    assert!(spans.iter().all(|s| s.service == "cart-under-test"));

    let create = one(&spans, "CreateCart", |s| {
        s.span.name == "cart.v1.CartService/CreateCart"
    });
    assert_eq!(create.trace_id(), TRACE, "continues the caller's trace");
    assert_eq!(create.parent_id(), PARENT);
    assert_eq!(create.span.kind, SERVER);
    assert_eq!(create.str_attr("rpc.system"), Some("grpc"));
    assert_eq!(create.str_attr("rpc.service"), Some("cart.v1.CartService"));
    assert_eq!(create.str_attr("rpc.method"), Some("CreateCart"));
    assert_eq!(create.int_attr("rpc.grpc.status_code"), Some(0));
    assert_eq!(create.str_attr("cart.tenant"), Some("shop-t"));
    assert_eq!(create.str_attr("cart.id"), Some(id.as_str()));
    assert_eq!(create.status_code(), 0, "OK leaves the status unset");
    let statements = children(&spans, create);
    assert!(
        statements.iter().any(|s| s.span.name == "INSERT_CART"),
        "{statements:#?}"
    );
    for s in &statements {
        assert_eq!(s.span.kind, CLIENT, "{s:#?}");
        assert_eq!(s.str_attr("db.system"), Some("postgresql"));
        assert_eq!(s.str_attr("db.operation.name"), Some(s.span.name.as_str()));
    }

    let get = one(&spans, "GetCart of the cart", |s| {
        s.span.name == "cart.v1.CartService/GetCart" && s.str_attr("cart.id") == Some(&id)
    });
    assert_ne!(get.trace_id(), TRACE);
    assert!(get.parent_id().is_empty(), "a root span: {get:#?}");
    let reads = children(&spans, get);
    assert_eq!(reads.len(), 1, "{reads:#?}");
    // The replica that made the cart remembers it: it checks the version.
    assert_eq!(reads[0].span.name, "STAMP_CART");

    let missing = one(&spans, "GetCart NOT_FOUND", |s| {
        s.int_attr("rpc.grpc.status_code") == Some(Code::NotFound as i64)
    });
    assert_eq!(missing.span.name, "cart.v1.CartService/GetCart");
    assert_eq!(
        missing.status_code(),
        0,
        "a caller's error is not the server's"
    );
    let nope = one(&spans, "unimplemented", |s| {
        s.int_attr("rpc.grpc.status_code") == Some(Code::Unimplemented as i64)
    });
    assert_eq!(nope.span.name, "unknown", "no name from an undeclared path");
    assert_eq!(nope.status_code(), 2, "UNIMPLEMENTED is a server error");

    // The callback POST: a client span whose context the receiver got.
    let post = one(&spans, "callback POST", |s| s.span.name == "POST");
    assert_eq!(post.span.kind, CLIENT);
    assert_eq!(post.int_attr("http.response.status_code"), Some(200));
    assert_eq!(post.str_attr("server.address"), Some("127.0.0.1"));
    assert_eq!(
        posted[0].header("traceparent"),
        Some(format!("00-{}-{}-01", post.trace_id(), post.span_id()).as_str()),
    );

    // No request value, key or statement parameter in any span.
    for s in &spans {
        for kv in s.attr_text() {
            for secret in [CUSTOMER, SKU, KEY, "4.50"] {
                assert!(!kv.contains(secret), "{secret} leaked in {kv} of {s:#?}");
            }
        }
        if s.str_attr("db.system").is_some() {
            let keys: Vec<_> = s.span.attributes.iter().map(|kv| kv.key.as_str()).collect();
            for key in keys {
                assert!(
                    ["db.system", "db.system.name", "db.operation.name"].contains(&key),
                    "unexpected {key} on {s:#?}"
                );
            }
        }
    }

    // The JSON log line of each call carries its trace id.
    let lines = finished_by_request_id(&logs);
    assert_eq!(lines["otlp-create"]["trace_id"], TRACE, "{logs:#?}");
    assert_eq!(lines["otlp-get"]["trace_id"], get.trace_id().as_str());
}

/// With OTEL_EXPORTER_OTLP_ENDPOINT unset nothing connects, not even to
/// the traces-only variable an exporter built with defaults would read;
/// with it set, the same run connects (so the check can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_exporter_runs_without_an_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let run = |endpoint: Option<String>| {
        let url = url.clone();
        async move {
            let bin = Binary::start(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_deref()),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", Some(&url)),
            ])
            .await;
            let mut client = CartServiceClient::new(bin.channel().await);
            client
                .create_cart(CreateCartRequest {
                    currency: "USD".into(),
                    ..Default::default()
                })
                .await
                .expect("create");
            // Shutdown flushes: an exporter, if any, connects by then.
            bin.stop().await
        }
    };

    let logs = run(None).await;
    assert!(
        listener.accept().now_or_never().is_none(),
        "something connected to the collector with the endpoint unset"
    );
    assert!(
        !logs
            .iter()
            .any(|l| l["message"] == "exporting traces over otlp/grpc")
    );
    let finished = finished_by_request_id(&logs);
    assert!(
        finished.values().all(|l| l.get("trace_id").is_none()),
        "{logs:#?}"
    );

    let logs = run(Some(url.clone())).await;
    tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("with the endpoint set, the exporter connects")
        .unwrap();
    assert!(
        logs.iter()
            .any(|l| l["message"] == "exporting traces over otlp/grpc")
    );
}
