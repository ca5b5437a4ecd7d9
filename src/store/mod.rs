//! The store adapters: each implements every port of `crate::ports` and
//! only stores (the rules are in `crate::usecase`). Postgres is the real
//! one; memory is a faithful in-process stand-in for demos and tests.

pub mod memory;
pub mod postgres;
