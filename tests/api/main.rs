//! One integration-test binary: the real server on port 0, over the memory
//! store and over Postgres (a fresh database per test), driven through the
//! generated client.

mod collector;
mod helpers;
mod proxy;
mod receiver;

mod boutique;
mod callback_delivery;
mod callbacks;
mod carts;
mod clock;
mod concurrency;
mod dashboard;
mod hostile;
mod idempotency;
mod items;
mod lifecycle;
mod limits;
mod merge;
mod migration;
mod observability;
mod operations;
mod otlp;
mod ports;
mod remembered;
mod replicas;
mod retention;
mod scopes;
mod security;
mod tenancy;
mod tls;
mod watch;
mod watch_cleanup;
mod watch_progress;
mod wire;
