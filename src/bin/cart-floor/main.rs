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

use std::{collections::HashMap, net::SocketAddr, sync::Mutex, time::Duration};

use cart_service::{
    proto::cart_service_server::CartServiceServer, store::postgres::statements::SESSION_SETTINGS,
};
use clap::Parser;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tonic::transport::Server;

mod echo;
mod floor;
mod service;

use echo::echo_cart;
use floor::Floor;

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
