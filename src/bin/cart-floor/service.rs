//! `cart.v1` on the floor: GetCart (and the echo), AddItems, and the
//! ListCarts paging cart-bench's `--no-seed` needs; every other RPC is
//! UNIMPLEMENTED.

use std::{pin::Pin, sync::Arc};

use cart_service::{
    domain::LineItem,
    grpc::convert::cart_into_proto,
    proto::{self, cart_service_server::CartService},
    store::postgres::statements::{
        WRITE_CART_ONE_LINE, WRITE_CART_ONE_LINE_PLAIN, prepare_shorter,
    },
};
use chrono::Utc;
use rust_decimal::Decimal;
use tokio_postgres::types::Json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::floor::{Floor, TENANT, internal};

type Stream = Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::CartEvent, Status>> + Send>>;

fn not_here<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not on the floor"))
}

#[tonic::async_trait]
impl CartService for Floor {
    async fn get_cart(
        &self,
        req: Request<proto::GetCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let id = req.into_inner().cart_id;
        if id == "echo" {
            return Ok(Response::new(self.echo.clone()));
        }
        let id = Uuid::parse_str(&id).map_err(|_| Status::invalid_argument("cart_id"))?;
        let (_, cart) = self.read(id).await?;
        Ok(Response::new(cart_into_proto(cart)))
    }

    /// One line of the request, added to an ACTIVE cart: the read and the
    /// one write statement the service sends, with what they need.
    async fn add_items(
        &self,
        req: Request<proto::AddItemsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        let req = req.into_inner();
        let id = Uuid::parse_str(&req.cart_id).map_err(|_| Status::invalid_argument("cart_id"))?;
        let input = req
            .items
            .first()
            .ok_or_else(|| Status::invalid_argument("items"))?;
        let remembered = self.known.lock().unwrap().get(&id).cloned();
        let (c, mut cart) = match remembered {
            Some(cart) => (self.pool.get().await.map_err(internal)?, cart),
            None => self.read(id).await?,
        };
        let price: Decimal = input
            .unit_price
            .parse()
            .map_err(|_| Status::invalid_argument("price"))?;
        let existing = cart.items.iter().position(|l| l.sku == input.sku);
        let line = LineItem {
            sku: input.sku.clone(),
            name: input.name.clone(),
            quantity: input.quantity + existing.map_or(0, |i| cart.items[i].quantity),
            unit_price: price,
            list_price: price,
            memo: Default::default(),
            attributes: input.attributes.clone().into_iter().collect(),
        };
        let ended: Option<&str> = existing.map(|_| input.sku.as_str());
        let now = Utc::now();
        let expires = now + chrono::TimeDelta::days(30);
        let version = cart.version + 1;
        let place = version << 16;
        let no_key: Option<&str> = None;
        let no_id: Option<Uuid> = None;
        let no_bytes: Option<&[u8]> = None;
        let no_json: Option<Json<&str>> = None;
        let no_version: Option<i64> = None;
        let no_time: Option<chrono::DateTime<Utc>> = None;
        let attributes = (!line.attributes.is_empty()).then_some(Json(&line.attributes));
        let stmt = prepare_shorter(&c, WRITE_CART_ONE_LINE, WRITE_CART_ONE_LINE_PLAIN)
            .await
            .map_err(internal)?;
        let written: i64 = c
            .query_one(
                &stmt,
                &[
                    &TENANT,
                    &id,
                    &version,
                    &"ACTIVE",
                    &cart.customer_id,
                    &now,
                    &Some(expires),
                    &no_json,
                    &0i32,
                    &"ITEMS_CHANGED",
                    &"ACTIVE",
                    &no_key,
                    &no_bytes,
                    &no_id,
                    &no_version,
                    &no_id,
                    &no_key,
                    &no_json,
                    &ended,
                    &line.sku.as_str(),
                    &place,
                    &line.name.as_str(),
                    &line.quantity,
                    &line.unit_price,
                    &line.list_price,
                    &attributes,
                    &no_time,
                ],
            )
            .await
            .map_err(internal)?
            .get(0);
        if written != 1 {
            self.known.lock().unwrap().remove(&id);
            return Err(Status::aborted("raced"));
        }
        let line = Arc::new(line);
        match existing {
            Some(i) => cart.items[i] = line,
            None => cart.items.push(line),
        }
        cart.version = version;
        cart.updated_at = now;
        cart.expires_at = Some(expires);
        self.remember(&cart);
        Ok(Response::new(cart_into_proto(cart)))
    }

    async fn create_cart(
        &self,
        _: Request<proto::CreateCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        not_here()
    }

    /// Only what cart-bench's `--no-seed` needs: the ACTIVE carts' ids,
    /// paged by offset (not measured).
    async fn list_carts(
        &self,
        req: Request<proto::ListCartsRequest>,
    ) -> Result<Response<proto::ListCartsResponse>, Status> {
        let req = req.into_inner();
        let offset: i64 = req.page_token.parse().unwrap_or(0);
        let size = i64::from(req.page_size.clamp(1, 1000));
        let c = self.pool.get().await.map_err(internal)?;
        let rows = c
            .query(
                "SELECT id FROM carts WHERE tenant = $1 AND status = 'ACTIVE' ORDER BY id LIMIT $2 OFFSET $3",
                &[&TENANT, &size, &offset],
            )
            .await
            .map_err(internal)?;
        let full = rows.len() as i64 == size;
        Ok(Response::new(proto::ListCartsResponse {
            carts: rows
                .iter()
                .map(|r| proto::Cart {
                    id: r.get::<_, Uuid>(0).to_string(),
                    ..Default::default()
                })
                .collect(),
            next_page_token: if full {
                (offset + size).to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn set_items(
        &self,
        _: Request<proto::SetItemsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        not_here()
    }

    async fn remove_items(
        &self,
        _: Request<proto::RemoveItemsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        not_here()
    }

    async fn clear_cart(
        &self,
        _: Request<proto::ClearCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        not_here()
    }

    async fn update_cart(
        &self,
        _: Request<proto::UpdateCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        not_here()
    }

    async fn merge_carts(
        &self,
        _: Request<proto::MergeCartsRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        not_here()
    }

    async fn submit_cart(
        &self,
        _: Request<proto::SubmitCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        not_here()
    }

    async fn confirm_cart(
        &self,
        _: Request<proto::ConfirmCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        not_here()
    }

    async fn cancel_cart(
        &self,
        _: Request<proto::CancelCartRequest>,
    ) -> Result<Response<proto::Cart>, Status> {
        not_here()
    }

    async fn watch_cart(
        &self,
        _: Request<proto::WatchCartRequest>,
    ) -> Result<Response<Stream>, Status> {
        not_here()
    }

    async fn watch_carts(
        &self,
        _: Request<proto::WatchCartsRequest>,
    ) -> Result<Response<Stream>, Status> {
        not_here()
    }

    type WatchCartStream = Stream;
    type WatchCartsStream = Stream;
}
