//! A local callback receiver (hyper, port 0) for the callback scenarios:
//! answers after a set delay with a set status, and logs every request
//! (cart id from the body, webhook-id, status, arrival).

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) cart: String,
    pub(crate) webhook_id: String,
    pub(crate) status: u16,
    pub(crate) at: Instant,
}

#[derive(Default)]
struct State {
    delay_ms: AtomicU64,
    status: AtomicU16,
    hits: Mutex<Vec<Hit>>,
}

pub(crate) struct Receiver {
    pub(crate) url: String,
    state: Arc<State>,
}

impl Receiver {
    pub(crate) async fn start(delay: Duration, status: u16) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/callback", listener.local_addr()?);
        let state = Arc::new(State::default());
        state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
        state.status.store(status, Ordering::Relaxed);
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let s = s.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| answer(s.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver { url, state })
    }

    pub(crate) fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }
}

async fn answer(
    s: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let webhook_id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let cart = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["cart_id"].as_str().map(str::to_string))
        .unwrap_or_default();
    let status = s.status.load(Ordering::Relaxed);
    s.hits.lock().unwrap().push(Hit {
        cart,
        webhook_id,
        status,
        at,
    });
    let delay = s.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    Ok(resp)
}
