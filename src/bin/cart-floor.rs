//! The floor of our stack (issue 14): `cart.v1` GetCart and AddItems over
//! the service's schema and the service's own statements (`GET_CART`,
//! `WRITE_CART_ONE_LINE_PLAIN`), with the least work around them: no auth, metrics,
//! logging, idempotency, validation or use-case layer; rows become the
//! domain cart and go out through the service's own conversion. Like the
//! service it remembers the carts it read or wrote (without bound: the
//! bench's carts are few): GetCart of a remembered cart checks its version
//! (`STAMP_CART`) and reads it whole only when it changed, and AddItems of
//! a remembered cart is its write alone. Same session settings as the
//! service's pool. GetCart of the id `echo` answers a fixed 3-line
//! cart without the database: the cost of gRPC alone. Same server and pool
//! settings as the service. `bench/floor.sh` drives it and the service
//! back to back. Every other RPC is UNIMPLEMENTED.
//!
//!   DATABASE_URL=postgres://... cart-floor --listen 127.0.0.1:50061

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use cart_service::{
    domain::{Cart, CartStatus, LineItem},
    grpc::convert::cart_into_proto,
    proto::{self, cart_service_server::CartService, cart_service_server::CartServiceServer},
    store::postgres::statements::{
        GET_CART, SESSION_SETTINGS, STAMP_CART, WRITE_CART_ONE_LINE, WRITE_CART_ONE_LINE_PLAIN,
        prepare_shorter,
    },
};
use chrono::Utc;
use clap::Parser;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rust_decimal::Decimal;
use tokio_postgres::{NoTls, Row, types::Json};
use tonic::{Request, Response, Status, transport::Server};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// As the service's CART_DB_POOL_SIZE default.
    #[arg(long, default_value_t = 16)]
    pool_size: usize,
}

/// As the service's largest request.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Every cart is the bench's tenant's.
const TENANT: &str = "default";

struct Floor {
    pool: Pool,
    echo: proto::Cart,
    /// The carts last read or written, by id.
    known: Mutex<HashMap<Uuid, Cart>>,
}

fn internal(e: impl std::fmt::Debug) -> Status {
    Status::internal(format!("{e:?}"))
}

/// A cart as it stands from GET_CART's rows (kinds 0, 1, 2 of its
/// layout); `known`: the cart as remembered, when GET_CART was told its
/// version.
fn cart_of(rows: &[Row], known: Option<Cart>) -> Result<Option<Cart>, Status> {
    let (mut cart, mut lines) = (None, Vec::new());
    let mut stamp = None;
    for row in rows {
        match row.get::<_, i32>(0) {
            0 => {
                stamp = Some((
                    row.get::<_, i64>(3),
                    row.get::<_, String>(8),
                    row.get(9),
                    row.get(10),
                ))
            }
            1 => cart = Some(row.get::<_, Json<Cart>>(11).0),
            _ => {
                let attributes: Option<Json<BTreeMap<String, String>>> = row.get(11);
                lines.push((
                    row.get::<_, i64>(4),
                    LineItem {
                        sku: row.get(5),
                        name: row.get(6),
                        quantity: row.get(12),
                        unit_price: row.get(13),
                        list_price: row.get(14),
                        attributes: attributes.map(|a| a.0).unwrap_or_default(),
                        memo: Default::default(),
                    },
                ))
            }
        }
    }
    let Some((version, status, updated_at, expires_at)) = stamp else {
        return Ok(None);
    };
    let mut cart = match (cart, known) {
        (Some(mut cart), _) => {
            lines.sort_by_key(|(position, _)| *position);
            cart.items = lines.into_iter().map(|(_, l)| Arc::new(l)).collect();
            cart
        }
        (None, Some(known)) if known.version == version => known,
        _ => return Err(internal("a cart without its head")),
    };
    cart.version = version;
    cart.status = CartStatus::parse(&status).ok_or_else(|| internal("status"))?;
    cart.updated_at = updated_at;
    cart.expires_at = expires_at;
    Ok(Some(cart))
}

impl Floor {
    async fn read(&self, id: Uuid) -> Result<(deadpool_postgres::Object, Cart), Status> {
        let c = self.pool.get().await.map_err(internal)?;
        let known = self.known.lock().unwrap().get(&id).cloned();
        if let Some(known) = &known {
            let stmt = c.prepare_cached(STAMP_CART).await.map_err(internal)?;
            let rows = c.query(&stmt, &[&TENANT, &id]).await.map_err(internal)?;
            match rows.first() {
                Some(row) if row.get::<_, i64>(3) == known.version => {
                    return Ok((c, known.clone()));
                }
                Some(_) => {}
                None => return Err(Status::not_found("cart")),
            }
        }
        let stmt = c.prepare_cached(GET_CART).await.map_err(internal)?;
        let rows = c
            .query(&stmt, &[&TENANT, &id, &known.as_ref().map(|k| k.version)])
            .await
            .map_err(internal)?;
        let cart = cart_of(&rows, known)?.ok_or_else(|| Status::not_found("cart"))?;
        self.remember(&cart);
        Ok((c, cart))
    }

    fn remember(&self, cart: &Cart) {
        self.known.lock().unwrap().insert(cart.id, cart.clone());
    }
}

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

/// The echo's answer: a 3-line cart, as the bench's seeded carts are.
fn echo_cart() -> proto::Cart {
    let mut cart = proto::Cart {
        id: Uuid::nil().to_string(),
        currency: "USD".into(),
        channel: "default".into(),
        version: 4,
        ..Default::default()
    };
    for n in 0..3 {
        cart.items.push(proto::LineItem {
            sku: format!("SKU-{n:04}"),
            name: "Bench item".into(),
            quantity: 1,
            unit_price: "4.99".into(),
            list_price: "4.99".into(),
            line_total: "4.99".into(),
            ..Default::default()
        });
    }
    cart
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg: tokio_postgres::Config = args.database_url.parse()?;
    cfg.options(SESSION_SETTINGS);
    let manager = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(args.pool_size)
        .runtime(Runtime::Tokio1)
        .build()?;
    let floor = Floor {
        pool,
        echo: echo_cart(),
        known: Mutex::new(HashMap::new()),
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("cart-floor listening on {}", listener.local_addr()?);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(CartServiceServer::new(floor).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
