//! The gRPC adapter: the CartService implementation (proto <-> domain
//! only), request conversion, error statuses and authentication.

pub mod admission;
pub mod admission_layer;
mod answers;
pub mod around;
pub mod auth;
pub mod codec;
pub mod convert;
pub mod deadline;
pub mod encoded;
pub mod fair_gate;
pub mod parse;
pub mod routes;
pub mod service;
pub mod status;
mod tenant_counts;
pub mod watchers;
pub mod wire;
