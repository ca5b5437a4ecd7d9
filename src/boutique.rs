//! `hipstershop.CartService`, the cart API of Google's Online Boutique demo,
//! as a thin adapter over the cart use cases ([`Carts`]), so that a deployment of the demo
//! can swap its cartservice for this one.
//!
//! A user's cart is that customer's newest ACTIVE cart of the caller's
//! tenant (`default` in open mode, as the demo sends no credentials),
//! created on the first AddItem. The demo sends no prices, so lines cost 0
//! in the cart's currency; products are SKUs and also name their lines.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        Amount, Cart, CartError, CartStatus, Command, ConfirmationType, Currency, FieldViolation,
        ItemInput, NewCart, Reason, Scope, TenantId,
        command::check_quantity,
        error::Violations,
        limits::MAX_ID_CHARS,
        text::{check_sku, check_token},
    },
    grpc::{auth::authorize, status::to_status},
    hipstershop::{self, cart_service_server::CartService},
    ports::ListQuery,
    usecase::Carts,
};

/// Lookups before AddItem gives up on a cart that stops being ACTIVE under it.
const ATTEMPTS: usize = 3;

pub struct BoutiqueCart {
    carts: Carts,
    default_currency: Currency,
}

impl BoutiqueCart {
    pub fn new(carts: Carts, default_currency: Currency) -> Self {
        BoutiqueCart {
            carts,
            default_currency,
        }
    }

    /// The user's newest cart, of any status when `statuses` is empty.
    async fn newest(
        &self,
        tenant: &TenantId,
        user: &str,
        statuses: Vec<CartStatus>,
    ) -> Result<Option<Cart>, CartError> {
        let query = ListQuery {
            customer_id: user.to_string(),
            statuses,
            page_size: 1,
            after: None,
        };
        let page = self.carts.list(tenant, &query).await?;
        Ok(page.carts.into_iter().next())
    }

    async fn active(&self, tenant: &TenantId, user: &str) -> Result<Option<Cart>, CartError> {
        self.newest(tenant, user, vec![CartStatus::Active]).await
    }

    /// The user's ACTIVE cart, created when there is none.
    ///
    /// Two first AddItem calls for one user both find no ACTIVE cart. Rather
    /// than let each create one (and the user's lines split between two
    /// carts), both create with the same `reference`, made from the user and
    /// the user's newest cart (none yet, or the one just checked out): the
    /// store keeps references unique per tenant and answers an identical
    /// create with the cart already made, so both calls fill one cart. After
    /// a checkout the newest cart differs, so the next cart gets a new reference.
    async fn active_or_create(&self, tenant: &TenantId, user: &str) -> Result<Cart, CartError> {
        if let Some(cart) = self.active(tenant, user).await? {
            return Ok(cart);
        }
        let previous = self.newest(tenant, user, Vec::new()).await?;
        // A concurrent first AddItem created it since the lookup above: share
        // it (deriving a reference from it would make a second cart).
        if let Some(cart) = previous.as_ref().filter(|c| c.status == CartStatus::Active) {
            return Ok(cart.clone());
        }
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        if let Some(p) = &previous {
            h.update(p.id.as_bytes());
        }
        let reference = format!("hipstershop:{}", hex(&h.finalize()));
        let fingerprint: [u8; 32] =
            Sha256::digest(format!("hipstershop.AddItem\0{reference}")).into();
        let new = NewCart {
            customer_id: user.to_string(),
            reference,
            currency: self.default_currency,
            country: None,
            channel: "default".into(),
            description: String::new(),
            metadata: BTreeMap::new(),
            confirmation_type: ConfirmationType::Automatic,
            callback_url: String::new(),
            callback_cancel_url: String::new(),
            items: Vec::new(),
        };
        self.carts.create(tenant, new, fingerprint, None).await
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A user id is a customer id that must be given: an empty one would be
/// every customer's carts.
fn user_id(s: &str) -> Result<String, Status> {
    let check = if s.is_empty() {
        Err(FieldViolation::new(
            "user_id",
            Reason::InvalidField,
            "is required",
        ))
    } else {
        check_token(s, "user_id", MAX_ID_CHARS)
    };
    check.map_err(|v| to_status(CartError::Invalid(vec![v])))?;
    Ok(s.to_string())
}

fn item(item: Option<&hipstershop::CartItem>) -> Result<ItemInput, Status> {
    let item = item.ok_or_else(|| {
        to_status(CartError::Invalid(vec![FieldViolation::new(
            "item",
            Reason::InvalidField,
            "is required",
        )]))
    })?;
    let mut v = Violations::default();
    v.check(check_sku(&item.product_id, "item.product_id"));
    v.check(check_quantity(item.quantity, "item.quantity", false));
    v.into_result().map_err(to_status)?;
    Ok(ItemInput {
        sku: item.product_id.clone(),
        name: item.product_id.clone(),
        quantity: item.quantity,
        unit_price: Amount(Decimal::ZERO),
        list_price: None,
        attributes: BTreeMap::new(),
    })
}

#[tonic::async_trait]
impl CartService for BoutiqueCart {
    async fn add_item(
        &self,
        req: Request<hipstershop::AddItemRequest>,
    ) -> Result<Response<hipstershop::Empty>, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let user = user_id(&req.get_ref().user_id)?;
        let cmd = Command::AddItems(vec![item(req.get_ref().item.as_ref())?]);
        let mut attempt = 1;
        loop {
            let cart = self
                .active_or_create(&tenant, &user)
                .await
                .map_err(to_status)?;
            match self.carts.change(&tenant, cart.id, &cmd, 0, None).await {
                Ok(_) => return Ok(Response::new(hipstershop::Empty {})),
                // Checked out or expired between the lookup and the change: look again.
                Err(CartError::NotEditable { .. }) if attempt < ATTEMPTS => attempt += 1,
                Err(e) => return Err(to_status(e)),
            }
        }
    }

    async fn get_cart(
        &self,
        req: Request<hipstershop::GetCartRequest>,
    ) -> Result<Response<hipstershop::Cart>, Status> {
        let tenant = authorize(&req, Scope::Read)?;
        let user = user_id(&req.get_ref().user_id)?;
        let cart = self.active(&tenant, &user).await.map_err(to_status)?;
        let items = cart
            .map(|c| c.items)
            .unwrap_or_default()
            .into_iter()
            .map(|line| hipstershop::CartItem {
                product_id: line.sku.clone(),
                quantity: line.quantity,
            })
            .collect();
        Ok(Response::new(hipstershop::Cart {
            user_id: user,
            items,
        }))
    }

    async fn empty_cart(
        &self,
        req: Request<hipstershop::EmptyCartRequest>,
    ) -> Result<Response<hipstershop::Empty>, Status> {
        let tenant = authorize(&req, Scope::Write)?;
        let user = user_id(&req.get_ref().user_id)?;
        if let Some(cart) = self.active(&tenant, &user).await.map_err(to_status)? {
            self.carts
                .change(&tenant, cart.id, &Command::Clear, 0, None)
                .await
                .map_err(to_status)?;
        }
        Ok(Response::new(hipstershop::Empty {}))
    }
}
