//! The operations HTTP server (hyper, HTTP/1.1) on its own port:
//! `/metrics` (OpenMetrics text), `/healthz` (the process is up) and
//! `/readyz` (the store can serve: 503 while Postgres is unreachable),
//! for orchestrators and scrapers that do not speak gRPC.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, task::JoinSet};

use super::{Metrics, PoolUse};
use crate::ports::Store;

/// Bound on a readiness probe, so a hung store answers 503 rather than nothing.
const READY_TIMEOUT: Duration = Duration::from_secs(3);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads a connection pool's use at scrape time.
pub type PoolProbe = Arc<dyn Fn() -> PoolUse + Send + Sync>;

struct State {
    metrics: Metrics,
    store: Arc<dyn Store>,
    pool: Option<PoolProbe>,
}

/// Serves on `listener` until the future is dropped, which also closes
/// every open connection.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    store: Arc<dyn Store>,
    pool: Option<PoolProbe>,
) {
    let state = Arc::new(State {
        metrics,
        store,
        pool,
    });
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    let service = service_fn(move |req| handle(state.clone(), req));
                    conns.spawn(async move {
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), service);
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "metrics connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next() => {}
        }
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            let body = state.metrics.render(
                state.pool.as_ref().map(|p| p()),
                state.store.feed().watched_carts(),
            );
            let mut res = Response::new(Full::new(Bytes::from(body)));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(OPENMETRICS),
            );
            res
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match tokio::time::timeout(READY_TIMEOUT, state.store.check_health()).await {
            Ok(Ok(())) => text(StatusCode::OK, "ready\n"),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "not ready");
                text(StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n")
            }
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "store did not answer\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
