//! The calls that answer carts, as the service works them out: the
//! request checked and turned into domain values, one use case, the cart
//! (or ListCarts page) it answers. `service` renders the answer as a message for the generated
//! server; `routes` encodes it straight from the cart (`wire`).

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use super::{auth::authorize, parse, service::CartApi, status::to_status, wire::Page};
use crate::{
    domain::{
        Cart, CartError, Command, IdempotencyKey, Reason, Scope, TenantId, limits::MAX_ID_CHARS,
        text::check_token,
    },
    ports::ListQuery,
    proto, telemetry,
    usecase::MergeRequest,
};

impl CartApi {
    pub(super) async fn answer_create_cart(
        &self,
        req: Request<proto::CreateCartRequest>,
    ) -> Result<Cart, Status> {
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
        Ok(cart)
    }

    pub(super) async fn answer_get_cart(
        &self,
        req: Request<proto::GetCartRequest>,
    ) -> Result<Cart, Status> {
        let tenant = authorize(&req, Scope::Read)?;
        let id = parse::cart_id(&req.get_ref().cart_id, "cart_id").map_err(to_status)?;
        telemetry::record_cart_id(id);
        self.carts.get(&tenant, id).await.map_err(to_status)
    }

    pub(super) async fn answer_list_carts(
        &self,
        req: Request<proto::ListCartsRequest>,
    ) -> Result<Page, Status> {
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
        Ok(Page {
            carts: page.carts,
            next_page_token: page
                .next
                .as_ref()
                .map(parse::page_token)
                .unwrap_or_default(),
        })
    }

    pub(super) async fn answer_add_items(
        &self,
        req: Request<proto::AddItemsRequest>,
    ) -> Result<Cart, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("AddItems", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = require_items(&r.items)
            .and_then(|_| parse::items(&r.items, false).map(Command::AddItems));
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    pub(super) async fn answer_set_items(
        &self,
        req: Request<proto::SetItemsRequest>,
    ) -> Result<Cart, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("SetItems", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = require_items(&r.items)
            .and_then(|_| parse::items(&r.items, true).map(Command::SetItems));
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    pub(super) async fn answer_remove_items(
        &self,
        req: Request<proto::RemoveItemsRequest>,
    ) -> Result<Cart, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("RemoveItems", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = parse::skus(&r.skus).map(Command::RemoveItems);
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    pub(super) async fn answer_clear_cart(
        &self,
        req: Request<proto::ClearCartRequest>,
    ) -> Result<Cart, Status> {
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

    pub(super) async fn answer_update_cart(
        &self,
        req: Request<proto::UpdateCartRequest>,
    ) -> Result<Cart, Status> {
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

    pub(super) async fn answer_merge_carts(
        &self,
        req: Request<proto::MergeCartsRequest>,
    ) -> Result<Cart, Status> {
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
        Ok(cart)
    }

    pub(super) async fn answer_submit_cart(
        &self,
        req: Request<proto::SubmitCartRequest>,
    ) -> Result<Cart, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let r = req.get_ref();
        let idem = idempotency("SubmitCart", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = parse::expected_total(&r.expected_total)
            .map(|expected_total| Command::Submit { expected_total });
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    pub(super) async fn answer_confirm_cart(
        &self,
        req: Request<proto::ConfirmCartRequest>,
    ) -> Result<Cart, Status> {
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

    pub(super) async fn answer_cancel_cart(
        &self,
        req: Request<proto::CancelCartRequest>,
    ) -> Result<Cart, Status> {
        let r = req.get_ref();
        let actor = parse::actor(r.actor, false).map_err(to_status)?;
        let tenant = authorize(&req, Scope::of_actor(actor))?;
        let idem = idempotency("CancelCart", r, &r.request_id, |m| m.request_id.clear())?;
        let cmd = parse::cancel_reason(&r.reason).map(|reason| Command::Cancel { actor, reason });
        self.apply(&tenant, &r.cart_id, cmd, r.expected_version, idem)
            .await
    }

    /// Refuses callback URLs whose host is not on the allow-list.
    pub(super) fn check_callback_hosts(&self, urls: &[(&str, &str)]) -> Result<(), Status> {
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

    async fn apply(
        &self,
        tenant: &TenantId,
        cart_id: &str,
        cmd: Result<Command, CartError>,
        expected_version: i64,
        idem: Option<IdempotencyKey>,
    ) -> Result<Cart, Status> {
        let id = parse::cart_id(cart_id, "cart_id").map_err(to_status)?;
        telemetry::record_cart_id(id);
        let expected = parse::expected_version(expected_version).map_err(to_status)?;
        let cmd = cmd.map_err(to_status)?;
        self.carts
            .change(tenant, id, &cmd, expected, idem.as_ref())
            .await
            .map_err(to_status)
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
