//! TLS: with a certificate configured, a TLS client is served and a
//! plaintext one is refused.

use cart_service::proto::{ListCartsRequest, cart_service_client::CartServiceClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::helpers::{Backend, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_are_served_and_plaintext_ones_refused() {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("cart-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();

    let app = spawn_app_with(Backend::Memory, |c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await;
    let port = app.port;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(issued.cert.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS client connects");
    let mut client = CartServiceClient::new(channel);
    client
        .list_carts(ListCartsRequest::default())
        .await
        .expect("served over TLS");

    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(ch) => CartServiceClient::new(ch)
            .list_carts(ListCartsRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext client gets nothing");
    std::fs::remove_dir_all(&dir).ok();
}
