//! The cart service: a gRPC API (cart.v1) over a transactional cart store.

pub mod app;
pub mod auth;
pub mod boutique;
pub mod callbacks;
pub mod config;
pub mod domain;
pub mod expiry;
pub mod feed;
pub mod grpc;
pub mod metrics;
pub mod ports;
pub mod store;
pub mod telemetry;
pub mod usecase;
pub mod watch;

/// Code generated from `proto/cart/v1/cart.proto`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("cart.v1");

    /// Descriptors of every file we compile, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cart_descriptor");
}

/// Code generated from `proto/hipstershop/demo.proto` (Online Boutique's cart).
pub mod hipstershop {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("hipstershop");
}
