//! Wire formats. Each submodule turns one protocol's bytes into an engine `CheckRequest` and an
//! engine `Decision` back into that protocol's answer. No policy logic lives here.

pub mod admin;
pub mod auth;
pub mod authzen;
pub mod decider;
pub mod decision_log;
pub mod edge;
pub mod envoy;
pub mod grpc;
pub mod routes;
