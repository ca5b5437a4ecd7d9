//! `cart.v1.CartService`: each RPC converts its request into domain values,
//! calls one use case (`crate::usecase`, or `crate::watch` for streams)
//! and renders the answer.

use std::{pin::Pin, sync::Arc, time::Duration};

use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{
    auth::authorize,
    convert::{self, cart_into_proto},
    parse,
    status::to_status,
    watchers::{WatcherLimit, WatcherSlot, run_holding},
};
use crate::{
    domain::{
        CartError, Command, Currency, IdempotencyKey, Reason, Scope, TenantId,
        limits::MAX_ID_CHARS, text::check_token,
    },
    metrics::Metrics,
    ports::{EventLog, ListQuery},
    proto::{self, cart_service_server::CartService},
    telemetry,
    usecase::{Carts, MergeRequest},
    watch::{self as watching, WatchStream},
};

pub struct CartApi {
    carts: Carts,
    events: Arc<dyn EventLog>,
    default_currency: Currency,
    stream_lifetime: Duration,
    /// Hosts callback URLs may name; None allows any.
    callback_hosts: Option<Vec<String>>,
    /// Turns true when the server shuts down, ending watch streams.
    closing: watch::Receiver<bool>,
    metrics: Metrics,
    watchers: Arc<WatcherLimit>,
}

impl CartApi {
    pub fn new(carts: Carts, events: Arc<dyn EventLog>, default_currency: Currency) -> Self {
        CartApi {
            carts,
            events,
            default_currency,
            stream_lifetime: Duration::from_secs(3600),
            callback_hosts: None,
            closing: watch::channel(false).1,
            metrics: Metrics::new(),
            watchers: WatcherLimit::new(usize::MAX),
        }
    }

    /// At most `max` watch streams per tenant on this replica.
    pub fn with_max_watchers(mut self, max: usize) -> Self {
        self.watchers = WatcherLimit::new(max);
        self
    }

    /// A watch slot of `tenant`, or RESOURCE_EXHAUSTED (counted as shed).
    fn open_watcher(&self, tenant: &TenantId) -> Result<WatcherSlot, Status> {
        self.watchers.try_open(tenant).map_err(|e| {
            self.metrics.shed(tenant.as_str(), e.reason().as_str());
            to_status(e)
        })
    }

    /// Where watch streams count themselves and their events.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Ends watch streams cleanly when `closing` turns true.
    pub fn with_shutdown(mut self, closing: watch::Receiver<bool>) -> Self {
        self.closing = closing;
        self
    }

    /// Restricts callback URLs to these hosts.
    pub fn with_callback_hosts(mut self, hosts: Option<Vec<String>>) -> Self {
        self.callback_hosts = hosts;
        self
    }

    /// Refuses callback URLs whose host is not on the allow-list.
    fn check_callback_hosts(&self, urls: &[(&str, &str)]) -> Result<(), Status> {
        let Some(allowed) = &self.callback_hosts else {
            return Ok(());
        };
        let violations: Vec<_> = urls
            .iter()
            .filter(|(_, url)| !url.is_empty() && !parse::url_host_allowed(url, allowed))
            .map(|(field, _)| {
                crate::domain::FieldViolation::new(
                    *field,
                    Reason::InvalidField,
                    "names a host that is not allowed",
                )
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(to_status(CartError::Invalid(violations)))
        }
    }

    /// How long one watch stream may stay open before the server ends it
    /// (the client resumes with its last version or sequence).
    pub fn with_stream_lifetime(mut self, lifetime: Duration) -> Self {
        self.stream_lifetime = lifetime;
        self
    }

    fn watcher(&self, tenant: TenantId, out: watching::Outlet) -> watching::Watcher {
        watching::Watcher {
            log: self.events.clone(),
            tenant,
            lifetime: self.stream_lifetime,
            closing: self.closing.clone(),
            metrics: self.metrics.clone(),
            out,
        }
    }

    async fn apply(
        &self,
        tenant: &TenantId,
        cart_id: &str,
        cmd: Result<Command, CartError>,
        expected_version: i64,
        idem: Option<IdempotencyKey>,
    ) -> Result<Response<proto::Cart>, Status> {
        let id = parse::cart_id(cart_id, "cart_id").map_err(to_status)?;
        telemetry::record_cart_id(id);
        let expected = parse::expected_version(expected_version).map_err(to_status)?;
        let cmd = cmd.map_err(to_status)?;
        let cart = self
            .carts
            .change(tenant, id, &cmd, expected, idem.as_ref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(cart_into_proto(cart)))
    }
}

/// SHA-256 of the method and the request with its `request_id` cleared:
/// the same request under the same key has the same fingerprint. Maps are
/// BTreeMaps in generated code, so the encoding is deterministic.
fn fingerprint<M: Message + Clone>(
    method: &str,
    msg: &M,
    clear_key: impl FnOnce(&mut M),
) -> [u8; 32] {
    let mut m = msg.clone();
    clear_key(&mut m);
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(m.encode_to_vec());
    h.finalize().into()
}

/// The idempotency key of a request, if it has one.
fn idempotency<M: Message + Clone>(
    method: &str,
    msg: &M,
    key: &str,
    clear_key: impl FnOnce(&mut M),
) -> Result<Option<IdempotencyKey>, Status> {
    idempotency_key(key, || fingerprint(method, msg, clear_key))
}

/// The key with its fingerprint, computed only when there is a key.
fn idempotency_key(
    key: &str,
    fingerprint: impl FnOnce() -> [u8; 32],
) -> Result<Option<IdempotencyKey>, Status> {
    if key.is_empty() {
        return Ok(None);
    }
    check_token(key, "request_id", MAX_ID_CHARS)
        .map_err(|v| to_status(CartError::Invalid(vec![v])))?;
    Ok(Some(IdempotencyKey {
        key: key.to_string(),
        fingerprint: fingerprint(),
    }))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::CartEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl CartService for CartApi {
    async fn create_cart(
        &self,
        req: Request<proto::CreateCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.into_inner();
        let fp = fingerprint("CreateCart", &r, |m| m.request_id.clear());
        // The same fingerprint guards the reference and the key.
        let idem = idempotency_key(&r.request_id, || fp)?;
        let new = parse::new_cart(&r, self.default_currency).map_err(to_status)?;
        self.check_callback_hosts(&[
            ("callback_url", &r.callback_url),
            ("callback_cancel_url", &r.callback_cancel_url),
        ])?;
        let cart = self
            .carts
            .create(&tenant, new, fp, idem.as_ref())
            .await
            .map_err(to_status)?;
        telemetry::record_cart_id(cart.id);
        Ok(Response::new(cart_into_proto(cart)))
    }

    async fn get_cart(
        &self,
        req: Request<proto::GetCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let tenant = authorize(&req, Scope::Read)?;
        let id = parse::cart_id(&req.get_ref().cart_id, "cart_id").map_err(to_status)?;
        telemetry::record_cart_id(id);
        let cart = self.carts.get(&tenant, id).await.map_err(to_status)?;
        Ok(Response::new(cart_into_proto(cart)))
    }

    async fn list_carts(
        &self,
        req: Request<proto::ListCartsRequest>,
    ) -> Result<Response<proto::ListCartsResponse>, Status> {
        let tenant = authorize(&req, Scope::Read)?;
        let r = req.get_ref();
        let query = (|| {
            Ok::<_, CartError>(ListQuery {
                customer_id: parse::customer_id(&r.customer_id)?,
                statuses: parse::statuses(&r.statuses)?,
                page_size: parse::page_size(r.page_size)?,
                after: parse::parse_page_token(&r.page_token)?,
            })
        })()
        .map_err(to_status)?;
        let page = self.carts.list(&tenant, &query).await.map_err(to_status)?;
        Ok(Response::new(proto::ListCartsResponse {
            carts: page.carts.into_iter().map(cart_into_proto).collect(),
            next_page_token: page
                .next
                .as_ref()
                .map(parse::page_token)
                .unwrap_or_default(),
        }))
    }

    async fn add_items(
        &self,
        req: Request<proto::AddItemsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("AddItems", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = require_items(&r.items)
            .and_then(|_| parse::items(&r.items, false).map(Command::AddItems));
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    async fn set_items(
        &self,
        req: Request<proto::SetItemsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("SetItems", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = require_items(&r.items)
            .and_then(|_| parse::items(&r.items, true).map(Command::SetItems));
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    async fn remove_items(
        &self,
        req: Request<proto::RemoveItemsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("RemoveItems", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = parse::skus(&r.skus).map(Command::RemoveItems);
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    async fn clear_cart(
        &self,
        req: Request<proto::ClearCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("ClearCart", r, &r.request_id, |m| m.request_id.clear())?;
        self.apply(
            &tenant,
            &r.cart_id,
            Ok(Command::Clear),
            r.expected_version,
            idem,
        )
        .await
    }

    async fn update_cart(
        &self,
        req: Request<proto::UpdateCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("UpdateCart", r, &r.request_id, |m| m.request_id.clear())?;
        self.check_callback_hosts(&[
            ("callback_url", r.callback_url.as_deref().unwrap_or("")),
            (
                "callback_cancel_url",
                r.callback_cancel_url.as_deref().unwrap_or(""),
            ),
        ])?;
        let cmd = parse::details(r).map(Command::Update);
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    async fn merge_carts(
        &self,
        req: Request<proto::MergeCartsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("MergeCarts", r, &r.request_id, |m| m.request_id.clear())?;
        let merge = (|| {
            let source = parse::cart_id(&r.source_cart_id, "source_cart_id")?;
            let target = parse::optional_cart_id(&r.target_cart_id, "target_cart_id")?;
            if target == Some(source) {
                return Err(CartError::invalid(
                    "target_cart_id",
                    Reason::InvalidField,
                    "must differ from source_cart_id",
                ));
            }
            Ok(MergeRequest {
                source,
                target,
                customer_id: parse::customer_id(&r.customer_id)?,
                strategy: parse::merge_strategy(r.strategy)?,
                expected_version: parse::expected_version(r.expected_version)?,
            })
        })()
        .map_err(to_status)?;
        telemetry::record_cart_id(merge.source);
        let cart = self
            .carts
            .merge(&tenant, &merge, idem.as_ref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(cart_into_proto(cart)))
    }

    async fn submit_cart(
        &self,
        req: Request<proto::SubmitCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("SubmitCart", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = parse::expected_total(&r.expected_total)
            .map(|expected_total| Command::Submit { expected_total });
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    async fn confirm_cart(
        &self,
        req: Request<proto::ConfirmCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let r = req.get_ref();
        // The actor decides the scope; an invalid one is bad input first.
        let actor = parse::actor(r.actor, true)
            .map_err(to_status)?
            .unwrap_or(crate::domain::Actor::Customer);
        let tenant = authorize(&req, Scope::of_actor(Some(actor)))?;
        let idem = idempotency("ConfirmCart", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = Ok(Command::Confirm(actor));
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    async fn cancel_cart(
        &self,
        req: Request<proto::CancelCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let r = req.get_ref();
        let actor = parse::actor(r.actor, false).map_err(to_status)?;
        let tenant = authorize(&req, Scope::of_actor(actor))?;
        let idem = idempotency("CancelCart", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = parse::cancel_reason(&r.reason).map(|reason| Command::Cancel { actor, reason });
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    type WatchCartStream = EventStream;

    async fn watch_cart(
        &self,
        req: Request<proto::WatchCartRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let stream = self.open_cart_watch(&req).await?;
        Ok(Response::new(events_to_proto(stream)))
    }

    type WatchCartsStream = EventStream;

    async fn watch_carts(
        &self,
        req: Request<proto::WatchCartsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let stream = self.open_tenant_watch(&req).await?;
        Ok(Response::new(events_to_proto(stream)))
    }
}

/// The two watch calls up to their stream of domain items: how the items
/// are put on the wire is the caller's (`events_to_proto` here; encoded
/// once per replica in `super::watch_routes`).
impl CartApi {
    pub(super) async fn open_cart_watch(
        &self,
        req: &Request<proto::WatchCartRequest>,
    ) -> Result<WatchStream, Status> {
        let tenant = authorize(req, Scope::Watch)?;
        let slot = self.open_watcher(&tenant)?;
        let r = req.get_ref();
        let id = parse::cart_id(&r.cart_id, "cart_id").map_err(to_status)?;
        telemetry::record_cart_id(id);
        if r.after_version < 0 {
            return Err(to_status(CartError::invalid(
                "after_version",
                Reason::InvalidField,
                "must not be negative",
            )));
        }
        // Subscribe before reading, so no change falls between the two.
        let live = self.events.feed().subscribe_cart(id);
        let current = self
            .events
            .current_event(&tenant, id)
            .await
            .map_err(to_status)?;
        let first = (r.after_version == 0).then(|| Arc::new(current));
        Ok(streamed(slot, |out| {
            watching::cart_events(self.watcher(tenant, out), id, first, r.after_version, live)
        }))
    }

    pub(super) async fn open_tenant_watch(
        &self,
        req: &Request<proto::WatchCartsRequest>,
    ) -> Result<WatchStream, Status> {
        let tenant = authorize(req, Scope::Watch)?;
        let slot = self.open_watcher(&tenant)?;
        let r = req.get_ref();
        let statuses = parse::statuses(&r.statuses).map_err(to_status)?;
        let progress = parse::progress_interval(r.progress_interval.as_ref()).map_err(to_status)?;
        if r.after_sequence < 0 {
            return Err(to_status(CartError::invalid(
                "after_sequence",
                Reason::InvalidField,
                "must not be negative",
            )));
        }
        // "From now on" is fixed before answering, so that every change
        // committed after the call returns is sent.
        let after = match r.after_sequence {
            0 => self.events.head_now().await.map_err(to_status)?,
            n => n,
        };
        Ok(streamed(slot, |out| {
            watching::tenant_events(self.watcher(tenant, out), statuses, after, progress)
        }))
    }
}

/// A watcher loop made by `make` as the response stream, holding the
/// stream's slot while it runs.
fn streamed<F>(slot: WatcherSlot, make: impl FnOnce(watching::Outlet) -> F) -> WatchStream
where
    F: Future<Output = ()> + Send + 'static,
{
    let out = watching::Outlet::new();
    // Boxed: the stream would otherwise hold the loop's state twice.
    let run = Box::pin(make(out.clone()));
    WatchStream::new(&out, run_holding(slot, run))
}

/// A watcher's stream, as proto events.
fn events_to_proto(stream: WatchStream) -> EventStream {
    Box::pin(stream.map(|r| match r {
        Ok(w) => Ok(convert::watched_to_proto(&w)),
        Err(e) => Err(to_status(*e)),
    }))
}

fn require_items(items: &[proto::ItemInput]) -> Result<(), CartError> {
    if items.is_empty() {
        return Err(CartError::invalid(
            "items",
            Reason::InvalidField,
            "is required",
        ));
    }
    Ok(())
}
