//! A real OTLP/gRPC trace receiver (the collector's TraceService from
//! `opentelemetry-proto`) on port 0, and the service's binary run as a
//! child process with JSON logs, so that traces go through the real
//! environment variables, start-up and shutdown flush.

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value::Value},
    trace::v1::Span,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    net::TcpListener,
    process::{Child, ChildStdout, Command},
};
use tonic::{Request, Response, Status};

/// One exported span with the `service.name` of its resource.
#[derive(Debug, Clone)]
pub struct Exported {
    pub service: String,
    pub span: Span,
}

impl Exported {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    pub fn str_attr(&self, key: &str) -> Option<&str> {
        match self.attr(key) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(Value::IntValue(i)) => Some(*i),
            _ => None,
        }
    }

    /// Every attribute as `key=value` text, to look for leaked values.
    pub fn attr_text(&self) -> Vec<String> {
        self.span
            .attributes
            .iter()
            .map(|kv| format!("{}={:?}", kv.key, kv.value))
            .collect()
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// The OTLP status code: 0 unset, 1 ok, 2 error.
    pub fn status_code(&self) -> i32 {
        self.span.status.as_ref().map_or(0, |s| s.code)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<Exported>>>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.clone())
                .and_then(|AnyValue { value }| match value {
                    Some(Value::StringValue(s)) => Some(s),
                    _ => None,
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Exported {
                    service: service.clone(),
                    span,
                });
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

pub struct Collector {
    pub addr: SocketAddr,
    sink: Sink,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = Sink::default();
        let service = TraceServiceServer::new(sink.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Collector { addr, sink, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Exported> {
        self.sink.0.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The service's binary with JSON logs on stdout.
pub struct Binary {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every log line read so far, parsed.
    pub logs: Vec<serde_json::Value>,
    pub addr: String,
}

impl Binary {
    /// Starts the binary with these variables set (None: removed) and
    /// waits until it listens.
    pub async fn start(env: &[(&str, Option<&str>)]) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cart-service"));
        cmd.args(["--log-format", "json"])
            .env("CART_LISTEN_ADDR", "127.0.0.1:0")
            .env("CART_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        let mut child = cmd.spawn().expect("start the binary");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut bin = Binary {
            child,
            lines,
            logs: Vec::new(),
            addr: String::new(),
        };
        let listening = bin
            .wait_for_log(|l| l["message"] == "cart service listening")
            .await;
        bin.addr = listening["addr"].as_str().unwrap().to_string();
        bin
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to the binary")
    }

    /// Reads log lines until one matches (20 s at most per line).
    pub async fn wait_for_log(
        &mut self,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await
                .expect("a log line in time")
                .unwrap()
                .expect("the binary is still running");
            let json: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            self.logs.push(json.clone());
            if matches(&json) {
                return json;
            }
        }
    }

    /// SIGTERM, then waits for a clean exit, keeping the remaining log lines.
    pub async fn stop(mut self) -> Vec<serde_json::Value> {
        let pid = self.child.id().expect("running").to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success(), "kill -TERM {pid}");
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(30), self.lines.next_line()).await
        {
            if let Ok(json) = serde_json::from_str(&line) {
                self.logs.push(json);
            }
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the binary exits within 30 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "exit status {status}");
        self.logs
    }
}

/// Log lines `rpc finished` by request id.
pub fn finished_by_request_id(logs: &[serde_json::Value]) -> HashMap<String, serde_json::Value> {
    logs.iter()
        .filter(|l| l["message"] == "rpc finished")
        .map(|l| {
            (
                l["request_id"].as_str().unwrap_or("").to_string(),
                l.clone(),
            )
        })
        .collect()
}
