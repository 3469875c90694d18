//! `warrant-bench propagation`: how long a change made through one replica's admin API takes to
//! be in force on the others. Each round grants an approval on the first replica, waits until
//! every other replica allows under it, revokes it, and times until every other replica denies,
//! from the moment the revocation was acknowledged (and from when it was sent). The other
//! replicas are asked over and over, with nothing between, so the figure is what a gateway
//! would see, within one Check's round trip.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use tonic::transport::Channel;
use warrant_proto as proto;

#[derive(Debug, clap::Args)]
pub struct PropagationArgs {
    /// The admin API of the replica the changes are made on.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub admin: String,
    /// Its admin token.
    #[arg(long, env = "WARRANT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// The Check API of each other replica (repeat the flag).
    #[arg(long = "replica", required = true)]
    pub replicas: Vec<String>,
    /// Rounds (one grant and one revocation each).
    #[arg(long, default_value_t = 1000)]
    pub rounds: u64,
    /// The approval's subject, approver, scope and action, and the resource each Check names,
    /// as the bundled policies have them.
    #[arg(long, default_value = "ServiceAccount::deploy-bot")]
    pub principal: String,
    #[arg(long, default_value = "Human::alice")]
    pub approver: String,
    #[arg(long, default_value = "Human::bob")]
    pub requester: String,
    #[arg(long, default_value = "Scope::production")]
    pub scope: String,
    #[arg(long, default_value = "update")]
    pub action: String,
    #[arg(long, default_value = "Config::payments-api")]
    pub resource: String,
}

/// Asks `client` until its answer's decision is `allow`; how many Checks it took.
async fn until(
    client: &mut proto::authorizer_client::AuthorizerClient<Channel>,
    request: &proto::CheckRequest,
    allow: bool,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut asked = 0;
    loop {
        asked += 1;
        let answer = client.check(request.clone()).await?.into_inner();
        if (answer.decision == proto::Decision::Allow as i32) == allow {
            return Ok(asked);
        }
        if Instant::now() > deadline {
            bail!(
                "no {} after 10 s: {:?}",
                if allow { "allow" } else { "deny" },
                answer.reasons
            );
        }
    }
}

fn quantiles(name: &str, histogram: &Histogram<u64>) -> String {
    let ms = |micros: u64| micros as f64 / 1000.0;
    format!(
        "{name}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} rounds)\n",
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.9)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
        histogram.len()
    )
}

pub async fn run(args: PropagationArgs) -> anyhow::Result<String> {
    let mut admin = crate::loadgen::admin_client(&args.admin, &args.admin_token).await?;
    let mut replicas = Vec::new();
    for url in &args.replicas {
        let channel = Channel::from_shared(url.clone())?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        replicas.push(proto::authorizer_client::AuthorizerClient::new(channel));
    }
    let mut revoked_after_ack = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut revoked_after_send = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut granted_after_ack = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut revoke_call = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let entity = |text: &str, flag: &str| warrant::cli::parse_entity(text, flag).map(Some);
    let (approver, requester) = (
        entity(&args.approver, "approver")?,
        entity(&args.requester, "requester")?,
    );
    let (principal, scope, resource) = (
        entity(&args.principal, "principal")?,
        entity(&args.scope, "scope")?,
        entity(&args.resource, "resource")?,
    );
    let run = std::process::id();
    for round in 0..args.rounds {
        let id = format!("propagation-{run}-{round}");
        let now = warrant_domain::clock::Clock::now(&warrant_domain::clock::SystemClock).0 / 1000;
        let spec = proto::ApprovalSpec {
            id: id.clone(),
            ticket: format!("BENCH-{round}"),
            approver: approver.clone(),
            requester: requester.clone(),
            subject: principal.clone(),
            actions: vec![args.action.clone()],
            scope: scope.clone(),
            expires_at: Some(prost_types::Timestamp {
                seconds: now + 3600,
                nanos: 0,
            }),
            justification: "warrant-bench propagation".to_owned(),
            ..proto::ApprovalSpec::default()
        };
        let check = proto::CheckRequest {
            principal: principal.clone(),
            action: args.action.clone(),
            resource: resource.clone(),
            approval_id: id.clone(),
            ..proto::CheckRequest::default()
        };
        admin
            .grant_approval(proto::GrantApprovalRequest {
                approval: Some(spec),
                ..Default::default()
            })
            .await?;
        let acknowledged = Instant::now();
        for replica in &mut replicas {
            until(replica, &check, true).await?;
        }
        granted_after_ack.record(
            acknowledged
                .elapsed()
                .as_micros()
                .max(1)
                .try_into()
                .unwrap_or(u64::MAX),
        )?;
        let sent = Instant::now();
        admin
            .revoke_approval(proto::RevokeApprovalRequest {
                id,
                reason: "warrant-bench propagation".to_owned(),
            })
            .await?;
        let acknowledged = Instant::now();
        revoke_call.record(
            (acknowledged - sent)
                .as_micros()
                .max(1)
                .try_into()
                .unwrap_or(u64::MAX),
        )?;
        for replica in &mut replicas {
            until(replica, &check, false).await?;
        }
        revoked_after_ack.record(
            acknowledged
                .elapsed()
                .as_micros()
                .max(1)
                .try_into()
                .unwrap_or(u64::MAX),
        )?;
        revoked_after_send.record(
            sent.elapsed()
                .as_micros()
                .max(1)
                .try_into()
                .unwrap_or(u64::MAX),
        )?;
    }
    Ok([
        quantiles(
            "revocation in force on every other replica, after its acknowledgement",
            &revoked_after_ack,
        ),
        quantiles(
            "revocation in force on every other replica, after it was sent",
            &revoked_after_send,
        ),
        quantiles(
            "the revocation call itself (commit in PostgreSQL, apply here)",
            &revoke_call,
        ),
        quantiles(
            "grant in force on every other replica, after its acknowledgement",
            &granted_after_ack,
        ),
    ]
    .concat())
}
