//! Warrant: a zero-trust policy decision point for non-human identities. This crate is the
//! server and the shell over the workspace's crates (see ARCHITECTURE.md): a request flows
//! api -> warrant_engine -> (warrant_facts, warrant_policy) -> Cedar -> warrant_ledger -> api.

pub mod api;
pub mod authoring;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod jwks;
pub mod listeners;
pub mod observability;
pub mod outbound;
pub mod server;
pub mod tls;
pub mod watch;
pub mod webhook;
