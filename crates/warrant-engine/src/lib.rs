//! The decision path: `engine::Engine::check` resolves a request's facts, evaluates it with
//! Cedar, applies the fail-closed rules and says how long the answer holds;
//! `engine::Engine::search` answers who can do what as one Check per candidate would; `cache`
//! keeps answers that stay true; `limits` bounds what a request may hold.
//!
//! May depend on: `warrant-domain`, `warrant-facts`, `warrant-policy`; never a wire format, a
//!   network or a database client.
//! Invariant: fail closed: `Err` only for a malformed request, every other problem a deny; a cache
//!   hit equals a fresh evaluation.

pub mod cache;
pub mod engine;
pub mod limits;
