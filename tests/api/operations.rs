//! Health, reflection, request ids and behaviour while Postgres is away.

use std::time::{Duration, Instant};

use cart_service::proto::{CreateCartRequest, GetCartRequest, ListCartsRequest};
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    both_stores,
    helpers::{Backend, admin_url, assert_error, fresh_database, spawn_app, spawn_app_with},
    proxy::Proxy,
};

async fn health_is_serving(b: Backend) {
    let app = spawn_app(b).await;
    let mut health = HealthClient::new(app.channel());
    for service in ["", "cart.v1.CartService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
}

async fn reflection_v1_and_v1alpha_describe_everything(b: Backend) {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = spawn_app(b).await;

    let mut v1c = v1::server_reflection_client::ServerReflectionClient::new(app.channel());
    let asks = vec![
        v1::ServerReflectionRequest {
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
            ..Default::default()
        },
        v1::ServerReflectionRequest {
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "google.rpc.ErrorInfo".into(),
                ),
            ),
            ..Default::default()
        },
    ];
    let mut answers = v1c
        .server_reflection_info(tokio_stream::iter(asks))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["cart.v1.CartService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let file = answers.next().await.unwrap().unwrap().message_response;
    assert!(
        matches!(
            file,
            Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "ErrorInfo is described: {file:?}"
    );

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel());
    let ask = v1alpha::ServerReflectionRequest {
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
        ..Default::default()
    };
    let mut answers = alpha
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    assert!(list.service.iter().any(|s| s.name == "cart.v1.CartService"));
}

async fn request_ids_are_echoed_or_made(b: Backend) {
    let app = spawn_app(b).await;
    let mut c = app.client.clone();
    let mut req = Request::new(ListCartsRequest::default());
    req.metadata_mut()
        .insert("x-request-id", "trace-123".parse().unwrap());
    let r = c.list_carts(req).await.unwrap();
    assert_eq!(r.metadata().get("x-request-id").unwrap(), "trace-123");
    let r = c.list_carts(ListCartsRequest::default()).await.unwrap();
    let made = r
        .metadata()
        .get("x-request-id")
        .expect("a request id is made");
    assert!(!made.is_empty());
    // Errors carry it too.
    let mut req = Request::new(GetCartRequest {
        cart_id: "x".into(),
    });
    req.metadata_mut()
        .insert("x-request-id", "trace-err".parse().unwrap());
    let err = c.get_cart(req).await.unwrap_err();
    assert_eq!(err.metadata().get("x-request-id").unwrap(), "trace-err");
}

both_stores!(
    health_is_serving,
    reflection_v1_and_v1alpha_describe_everything,
    request_ids_are_echoed_or_made
);

pub fn postgres_addr() -> std::net::SocketAddr {
    let cfg: tokio_postgres::Config = admin_url().parse().unwrap();
    let host = match &cfg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("tests need a TCP Postgres host, not {other:?}"),
    };
    let host = if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    format!(
        "{host}:{}",
        cfg.get_ports().first().copied().unwrap_or(5432)
    )
    .parse()
    .unwrap()
}

async fn wait_for_health(
    health: &mut HealthClient<tonic::transport::Channel>,
    want: ServingStatus,
) -> Duration {
    let start = Instant::now();
    loop {
        let r = health
            .check(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        if r.status() == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "health never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_unreachable_calls_are_unavailable_and_health_not_serving() {
    let db = fresh_database().await;
    let mut proxy = Proxy::start(postgres_addr()).await;
    let name = db.rsplit('/').next().unwrap().to_string();
    let url = format!("postgres://postgres@{}/{name}", proxy.addr);
    let app = spawn_app_with(Backend::Memory, |c| {
        c.database_url = Some(url);
        c.db_timeout = Duration::from_millis(500);
    })
    .await;
    let mut c = app.client.clone();
    let mut health = HealthClient::new(app.channel());
    let cart = c
        .create_cart(CreateCartRequest::default())
        .await
        .unwrap()
        .into_inner();

    proxy.cut();
    wait_for_health(&mut health, ServingStatus::NotServing).await;
    let start = Instant::now();
    let r = c
        .get_cart(GetCartRequest {
            cart_id: cart.id.clone(),
        })
        .await;
    assert_error(r, Code::Unavailable, "STORE_UNAVAILABLE");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "failed fast: {:?}",
        start.elapsed()
    );
    assert_error(
        c.create_cart(CreateCartRequest::default()).await,
        Code::Unavailable,
        "STORE_UNAVAILABLE",
    );

    proxy.restore().await;
    wait_for_health(&mut health, ServingStatus::Serving).await;
    let again = c
        .get_cart(GetCartRequest {
            cart_id: cart.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, cart, "the same process serves again, nothing lost");
}
