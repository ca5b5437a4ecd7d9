//! A real HTTP server (hyper, port 0) that receives callbacks: it records
//! every request and answers with scripted statuses.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status it was (or is being) answered.
    pub status: u16,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Script {
    /// Statuses for the next requests; 200 once it is empty (or `always`).
    next: VecDeque<u16>,
    always: Option<u16>,
    received: Vec<Received>,
    /// Each request is answered this long after it arrives.
    delay: Duration,
    /// Each request is held until this many are in flight at once.
    gate: usize,
    /// Set once `gate` requests were in flight: a request whose task saw
    /// the count only after others were answered is let through too (on a
    /// loaded machine a task can wait longer than `delay` to run).
    gate_opened: bool,
    in_flight: usize,
}

pub struct Receiver {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Answers `statuses` in turn, then 200.
    pub async fn start(statuses: &[u16]) -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap(), statuses, None).await
    }

    /// Answers `status` to every request.
    pub async fn always(status: u16) -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap(), &[], Some(status)).await
    }

    pub async fn start_on(addr: SocketAddr, statuses: &[u16], always: Option<u16>) -> Receiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script {
            next: statuses.iter().copied().collect(),
            always,
            ..Script::default()
        }));
        let s = script.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let (status, delay, gate) = {
                                let mut s = s.lock().unwrap();
                                let status = s.always.or_else(|| s.next.pop_front()).unwrap_or(200);
                                s.received.push(Received {
                                    path,
                                    headers,
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                    status,
                                    at: Instant::now(),
                                });
                                s.in_flight += 1;
                                (status, s.delay, s.gate)
                            };
                            // Held until `gate` requests are in flight (bounded, so a
                            // failing test ends rather than hangs).
                            let held = Instant::now();
                            let open = || {
                                let mut s = s.lock().unwrap();
                                s.gate_opened |= s.in_flight >= gate;
                                s.gate_opened
                            };
                            while !open() && held.elapsed() < Duration::from_secs(60) {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            tokio::time::sleep(delay).await;
                            s.lock().unwrap().in_flight -= 1;
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, script, task }
    }

    /// Answers each request `delay` after it arrives (a slow or hanging receiver).
    pub fn set_delay(&self, delay: Duration) {
        self.script.lock().unwrap().delay = delay;
    }

    /// Holds each request until `n` are in flight at once: only a sender
    /// with `n` requests under way gets any answer.
    pub fn set_gate(&self, n: usize) {
        let mut s = self.script.lock().unwrap();
        s.gate = n;
        s.gate_opened = false;
    }

    /// Answers `status` to every request from now on (None: 200).
    pub fn set_always(&self, status: Option<u16>) {
        self.script.lock().unwrap().always = status;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Waits until `n` requests came (failing after `within`).
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < within,
                "expected {n} callbacks, got {}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
