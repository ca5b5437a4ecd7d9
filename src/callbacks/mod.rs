//! Callback delivery: POSTs the outbox rows (`callback_deliveries`, written
//! in the same statement as the status change) to the providers, signed,
//! with retries. Every replica runs a worker; a claim leases a row to one
//! worker, so in the normal case each callback is POSTed once, and a crash
//! only delays it until the lease ends (at least once).
//!
//! A worker runs deliveries concurrently within caps (in all, per endpoint,
//! per tenant: `gates`), backs off an endpoint that keeps failing as a
//! whole (`breaker`), and claims as soon as rows may be due (`dispatch`).

mod breaker;
mod dispatch;
mod gates;
mod record;
pub mod sign;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use tracing::Instrument as _;

pub use self::{breaker::BreakerSettings, gates::Caps};
use self::{breaker::Health, dispatch::Done, sign::SigningKey};
use crate::{
    metrics::{CallbackOutcome, Metrics},
    ports::{Delivery, Outbox, Outcome},
    telemetry,
};

/// Response bytes read before the connection is let go.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct CallbackSettings {
    /// Per tenant; a tenant without one gets unsigned callbacks.
    pub secrets: HashMap<String, String>,
    pub timeout: Duration,
    /// Pause before each retry; attempts = 1 + its length.
    pub backoff: Vec<Duration>,
    /// Concurrency caps: in all, per endpoint, per tenant.
    pub caps: Caps,
    pub breaker: BreakerSettings,
}

pub struct CallbackWorker {
    outbox: Arc<dyn Outbox>,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    keys: HashMap<String, SigningKey>,
    timeout: Duration,
    backoff: Vec<Duration>,
    caps: Caps,
    breaker: BreakerSettings,
    metrics: Metrics,
}

impl CallbackWorker {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        settings: &CallbackSettings,
        metrics: Metrics,
    ) -> CallbackWorker {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let keys = settings
            .secrets
            .iter()
            .map(|(tenant, secret)| (tenant.clone(), SigningKey::new(secret)))
            .collect();
        CallbackWorker {
            outbox,
            http: Client::builder(TokioExecutor::new()).build(https),
            keys,
            timeout: settings.timeout,
            backoff: settings.backoff.clone(),
            caps: settings.caps,
            breaker: settings.breaker,
            metrics,
        }
    }

    pub async fn run(self) {
        dispatch::run(Arc::new(self)).await
    }

    /// One attempt: POST, hand how it went to the recorder, and tell the loop.
    async fn attempt(&self, d: Delivery, record: &record::Outcomes) -> Done {
        let answer = self.post(&d).await;
        // Any answer but 5xx and 429 shows the endpoint is up, whatever it
        // thinks of this one callback.
        let health = match answer {
            Ok(status) if status < 500 && status != 429 => Health::Up,
            _ => Health::Down,
        };
        let outcome = match answer {
            Ok(200) => Outcome::Delivered { status: 200 },
            Ok(status) => self.failed(&d, Some(status), format!("answered {status}")),
            Err(error) => self.failed(&d, None, error),
        };
        let tenant = d.tenant.as_str();
        self.metrics.callback_delivery(
            tenant,
            match outcome {
                Outcome::Delivered { .. } => CallbackOutcome::Delivered,
                Outcome::Retry { .. } => CallbackOutcome::Failed,
                Outcome::GaveUp { .. } => CallbackOutcome::Abandoned,
            },
        );
        let endpoint = d.endpoint.as_str();
        match &outcome {
            Outcome::Delivered { .. } => {
                tracing::info!(id = %d.id, tenant, endpoint, attempt = d.attempts, "callback delivered")
            }
            Outcome::Retry { at, error, .. } => {
                tracing::warn!(id = %d.id, tenant, endpoint, attempt = d.attempts, %error, next_attempt_at = %at, "callback failed; will retry")
            }
            Outcome::GaveUp { error, .. } => {
                tracing::error!(id = %d.id, tenant, endpoint, attempt = d.attempts, %error, "callback failed; giving up")
            }
        }
        let retry_at = match outcome {
            Outcome::Retry { at, .. } => {
                Some(Instant::now() + (at - crate::domain::now()).to_std().unwrap_or_default())
            }
            _ => None,
        };
        // The recorder outlives the loop, so this only fails in a runtime
        // shutting down; the lease then runs out (at least once).
        let _ = record.send((d.id, outcome));
        Done {
            endpoint: d.endpoint,
            tenant: d.tenant.0,
            health,
            retry_at,
        }
    }

    /// What a failed attempt leads to: a retry after the backoff (with
    /// jitter), or giving up once the schedule is spent.
    fn failed(&self, d: &Delivery, status: Option<u16>, error: String) -> Outcome {
        let Some(pause) = self
            .backoff
            .get(usize::try_from(d.attempts - 1).unwrap_or(0))
        else {
            return Outcome::GaveUp { status, error };
        };
        // Up to 10% later, so retries from many carts do not arrive together.
        let jitter = pause.mul_f64(rand::random::<f64>() * 0.1);
        let at = crate::domain::now() + *pause + jitter;
        Outcome::Retry { at, status, error }
    }

    /// POSTs one callback; answers the HTTP status, or why there is none.
    async fn post(&self, d: &Delivery) -> Result<u16, String> {
        let id = d.id.to_string();
        let timestamp = crate::domain::now().timestamp();
        let mut req = hyper::Request::post(&d.url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("cart-service/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(key) = self.keys.get(d.tenant.as_str()) {
            req = req.header("webhook-signature", key.sign(&id, timestamp, &d.body));
        }
        let span = telemetry::callback_span(&d.url);
        if let Some(headers) = req.headers_mut() {
            telemetry::inject_context(&span, headers);
        }
        let req = req
            .body(Full::new(Bytes::from(d.body.clone())))
            .map_err(|e| format!("bad request: {e}"))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| format!("{e}"))?;
            let status = resp.status().as_u16();
            // Read (a bounded part of) the answer so the connection can be reused.
            let _ = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await;
            Ok(status)
        };
        let answer = tokio::time::timeout(self.timeout, exchange.instrument(span.clone()))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
        telemetry::record_callback_answer(&span, &answer);
        answer
    }
}
