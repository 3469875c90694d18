//! Runs the gRPC server: loads and validates policies and facts, builds the engine, and serves
//! `warrant.v1.Authorizer` and server reflection on one listener until shut down.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::grpc::AuthorizerService;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::engine::{Engine, EngineSettings, Snapshot};
use crate::facts::Facts;
use crate::policy::PolicySnapshot;
use crate::proto;

/// Loads the policy directory: schema, policies (strictly validated) and facts.
pub fn load_snapshot(dir: &Path) -> anyhow::Result<Snapshot> {
    let policies = PolicySnapshot::load(dir)?;
    let facts = Facts::load(dir, &policies.schema)?;
    Ok(Snapshot { policies, facts })
}

/// Binds the listener and serves until `shutdown` completes. `on_bound` hears the address
/// actually bound (useful with port 0).
pub async fn serve(
    config: Config,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let snapshot = load_snapshot(&config.policies)?;
    tracing::info!(
        policies = snapshot.policies.policy_count(),
        policy_version = %snapshot.policies.version,
        entities = snapshot.facts.entities.len(),
        approvals = snapshot.facts.approvals.len(),
        facts_version = %snapshot.facts.version,
        "policies and facts loaded from {}",
        config.policies.display()
    );
    let engine = Arc::new(Engine::new(
        Arc::new(snapshot),
        Arc::new(SystemClock),
        EngineSettings {
            decision_max_age_ms: config.decision_max_age.as_millis().min(i64::MAX as u128) as i64,
        },
    ));

    let authorizer = proto::authorizer_server::AuthorizerServer::new(AuthorizerService::new(
        engine,
        config.batch_max_items,
    ))
    .max_decoding_message_size(config.max_message_bytes);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "serving warrant.v1.Authorizer");
    on_bound(bound);
    tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .add_service(authorizer)
        .add_service(reflection)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .context("gRPC server failed")?;
    tracing::info!("shut down");
    Ok(())
}
