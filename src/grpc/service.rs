//! `cart.v1.CartService`: each RPC converts its request into domain values,
//! calls one use case (`crate::usecase`, or `crate::watch` for streams)
//! and renders the answer. The calls that answer a cart are worked out in
//! `answers`, shared with the routes that encode carts straight.

use std::{pin::Pin, sync::Arc, time::Duration};

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
    domain::{Cart, CartError, Currency, Reason, Scope, TenantId},
    metrics::Metrics,
    ports::EventLog,
    proto::{self, cart_service_server::CartService},
    telemetry,
    usecase::Carts,
    watch::{self as watching, WatchStream},
};

pub struct CartApi {
    pub(super) carts: Carts,
    events: Arc<dyn EventLog>,
    pub(super) default_currency: Currency,
    stream_lifetime: Duration,
    /// Hosts callback URLs may name; None allows any.
    pub(super) callback_hosts: Option<Vec<String>>,
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
}

/// A cart answer as the generated server sends it.
fn rendered(answer: Result<Cart, Status>) -> Result<Response<proto::Cart>, Status> {
    answer.map(|cart| Response::new(cart_into_proto(cart)))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::CartEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl CartService for CartApi {
    async fn create_cart(
        &self,
        req: Request<proto::CreateCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_create_cart(req).await)
    }

    async fn get_cart(
        &self,
        req: Request<proto::GetCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_get_cart(req).await)
    }

    async fn list_carts(
        &self,
        req: Request<proto::ListCartsRequest>,
    ) -> Result<Response<proto::ListCartsResponse>, Status> {
        let page = self.answer_list_carts(req).await?;
        Ok(Response::new(proto::ListCartsResponse {
            carts: page.carts.into_iter().map(cart_into_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn add_items(
        &self,
        req: Request<proto::AddItemsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_add_items(req).await)
    }

    async fn set_items(
        &self,
        req: Request<proto::SetItemsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_set_items(req).await)
    }

    async fn remove_items(
        &self,
        req: Request<proto::RemoveItemsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_remove_items(req).await)
    }

    async fn clear_cart(
        &self,
        req: Request<proto::ClearCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_clear_cart(req).await)
    }

    async fn update_cart(
        &self,
        req: Request<proto::UpdateCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_update_cart(req).await)
    }

    async fn merge_carts(
        &self,
        req: Request<proto::MergeCartsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_merge_carts(req).await)
    }

    async fn submit_cart(
        &self,
        req: Request<proto::SubmitCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_submit_cart(req).await)
    }

    async fn confirm_cart(
        &self,
        req: Request<proto::ConfirmCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_confirm_cart(req).await)
    }

    async fn cancel_cart(
        &self,
        req: Request<proto::CancelCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        rendered(self.answer_cancel_cart(req).await)
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
/// once per replica in `super::routes`).
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
