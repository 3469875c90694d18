//! Warrant's integration tests, in one binary so that the suite links once: each module is one
//! area (the Check API, the ledger, Envoy, AuthZEN, ...), most of them against the real server
//! binary on 127.0.0.1 with ephemeral ports (`common::Server`). The cache memory test stays a
//! binary of its own: it counts every allocation of its process.

// A test's helper that cannot do its job fails the test: unwrapping is how it says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod authoring;
mod authzen;
mod cache;
mod check_api;
mod common;
mod credentials;
mod docs;
mod docs_reference;
mod edges;
mod engine;
mod envoy;
mod fuzz_decoders;
mod human_loop;
mod ledger;
mod ledger_search;
mod links;
mod loadgen;
mod metrics;
mod policy_index;
mod reload;
mod replicas;
mod review;
mod search;
mod search_api;
mod shadow;
mod tls;
mod traces;
