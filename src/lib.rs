//! Warrant: a zero-trust policy decision point for non-human identities. See ARCHITECTURE.md
//! for the map of modules; a request flows api -> decide::engine -> (facts, policy) -> Cedar ->
//! ledger -> api.

pub mod api;
pub mod authoring;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod credentials;
pub mod decide;
pub mod domain;
pub mod facts;
pub mod files;
pub mod jwks;
pub mod ledger;
pub mod listeners;
pub mod observability;
pub mod outbound;
pub mod policy;
pub mod postgres;
pub mod proto;
pub mod server;
pub mod store;
pub mod tls;
pub mod webhook;
