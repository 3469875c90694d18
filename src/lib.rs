//! Warrant: a zero-trust policy decision point for non-human identities. See ARCHITECTURE.md
//! for the map of modules; a request flows api -> engine -> (facts, policy) -> Cedar -> api.

pub mod admin_cli;
pub mod api;
pub mod authoring;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod context_shape;
pub mod control;
pub mod domain;
pub mod engine;
pub mod facts;
pub mod files;
pub mod ledger;
pub mod limits;
pub mod listeners;
pub mod loadgen;
pub mod policy;
pub mod proto;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod traces;
