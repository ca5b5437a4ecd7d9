//! Callback delivery: POSTs the outbox rows (`callback_deliveries`, written
//! in the same statement as the status change) to the providers, signed,
//! with retries. Every replica runs a worker; a claim leases a row to one
//! worker, so in the normal case each callback is POSTed once, and a crash
//! only delays it until the lease ends (at least once).

pub mod sign;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use tracing::Instrument as _;

use self::sign::SigningKey;
use crate::{
    metrics::{CallbackOutcome, Metrics},
    ports::{Delivery, Outbox, Outcome},
    telemetry,
};

/// How often a worker looks for due callbacks.
const POLL: Duration = Duration::from_millis(250);
/// Callbacks claimed (and POSTed concurrently) per round.
const BATCH: usize = 16;
/// Response bytes read before the connection is let go.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct CallbackSettings {
    /// Per tenant; a tenant without one gets unsigned callbacks.
    pub secrets: HashMap<String, String>,
    pub timeout: Duration,
    /// Pause before each retry; attempts = 1 + its length.
    pub backoff: Vec<Duration>,
}

pub struct CallbackWorker {
    outbox: Arc<dyn Outbox>,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    keys: HashMap<String, SigningKey>,
    timeout: Duration,
    backoff: Vec<Duration>,
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
            metrics,
        }
    }

    pub async fn run(self) {
        let worker = Arc::new(self);
        loop {
            tokio::time::sleep(POLL).await;
            let lease = Utc::now() + worker.timeout + Duration::from_secs(5);
            let batch = match worker.outbox.claim_callbacks(BATCH, lease).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot claim callbacks");
                    continue;
                }
            };
            let attempts = batch.into_iter().map(|d| {
                let w = worker.clone();
                tokio::spawn(async move { w.attempt(d).await })
            });
            for a in attempts {
                let _ = a.await;
            }
        }
    }

    async fn attempt(&self, d: Delivery) {
        let outcome = match self.post(&d).await {
            Ok(200) => Outcome::Delivered { status: 200 },
            Ok(status) => self.failed(&d, Some(status), format!("answered {status}")),
            Err(error) => self.failed(&d, None, error),
        };
        self.metrics.callback_delivery(match outcome {
            Outcome::Delivered { .. } => CallbackOutcome::Delivered,
            Outcome::Retry { .. } => CallbackOutcome::Failed,
            Outcome::GaveUp { .. } => CallbackOutcome::Abandoned,
        });
        let host = d.url.split('/').nth(2).unwrap_or("");
        match &outcome {
            Outcome::Delivered { .. } => {
                tracing::info!(id = %d.id, tenant = d.tenant.as_str(), host, attempt = d.attempts, "callback delivered")
            }
            Outcome::Retry { at, error, .. } => {
                tracing::warn!(id = %d.id, tenant = d.tenant.as_str(), host, attempt = d.attempts, %error, next_attempt_at = %at, "callback failed; will retry")
            }
            Outcome::GaveUp { error, .. } => {
                tracing::error!(id = %d.id, tenant = d.tenant.as_str(), host, attempt = d.attempts, %error, "callback failed; giving up")
            }
        }
        if let Err(e) = self.outbox.record_callback(d.id, &outcome).await {
            // The lease runs out and another attempt follows: at least once.
            tracing::warn!(id = %d.id, error = %e, "cannot record callback attempt");
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
        let at = Utc::now() + *pause + jitter;
        Outcome::Retry { at, status, error }
    }

    /// POSTs one callback; answers the HTTP status, or why there is none.
    async fn post(&self, d: &Delivery) -> Result<u16, String> {
        let id = d.id.to_string();
        let timestamp = Utc::now().timestamp();
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
