//! The Strata master: the sans-IO core (`core`), its driver, and the gRPC and HTTP
//! servers that feed it.

pub mod core;
