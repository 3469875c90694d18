//! The shell's clients: `warrant check` sends one Check to a running server and prints the
//! answer as JSON; `warrant log ...` (`log`) verifies, shows and searches the provenance ledger
//! in a data folder.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use warrant_domain::EntityRef;
use warrant_proto as proto;
use warrant_proto::authorizer_client::AuthorizerClient;

pub mod admin;
pub mod exit;
pub mod fleet;
mod log;
pub mod output;
mod progress;
mod search;

pub use log::{LogArgs, LogCommand, log};
pub use search::{SearchArgs, SearchCommand, search};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub tls: ClientTls,
    /// A credential (JWT) proving who the principal is
    #[arg(long, env = "WARRANT_CREDENTIAL", hide_env_values = true)]
    pub credential: Option<String>,
    /// The server to ask.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "WARRANT_SERVER")]
    pub server: String,
    /// Who acts, as Type::id, e.g. ServiceAccount::deploy-bot
    #[arg(long)]
    pub principal: String,
    /// The action's id, e.g. update
    #[arg(long)]
    pub action: String,
    /// What is acted on, as Type::id, e.g. Config::payments-api
    #[arg(long)]
    pub resource: String,
    /// The caller's context as a JSON object, e.g. '{"amount": 1200}'
    #[arg(long)]
    pub context: Option<String>,
    /// What the request says of a resource of a `@described_by_caller` type, as a JSON object,
    /// e.g. '{"ownerID": "rick@the-citadel.com"}'
    #[arg(long)]
    pub resource_attributes: Option<String>,
    /// A parent of the described resource, as Type::id (repeatable)
    #[arg(long = "resource-parent")]
    pub resource_parents: Vec<String>,
    /// The id of the approval presented, e.g. CHG-1042
    #[arg(long)]
    pub approval: Option<String>,
    /// A correlation id, echoed back.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Decide locally from a policy folder instead of asking a server, and show every policy's
    /// own outcome (satisfied, not satisfied, failed) and the facts that were resolved.
    #[arg(long)]
    pub explain: bool,
    /// With --explain: the policy folder.
    #[arg(long, default_value = "policies", requires = "explain")]
    pub policies: std::path::PathBuf,
    /// With --explain: the time to decide at, RFC 3339 [default: now]
    #[arg(long, requires = "explain")]
    pub now: Option<String>,
}

/// A `Type::id` flag as a protobuf entity (see `EntityRef::parse`).
pub fn parse_entity(text: &str, flag: &str) -> anyhow::Result<proto::EntityRef> {
    match EntityRef::parse(text) {
        Some(entity) => Ok(proto::EntityRef {
            r#type: entity.type_name,
            id: entity.id,
        }),
        None => bail!("--{flag}: expected Type::id, got {text:?}"),
    }
}

/// A `--FLAG` given as a JSON object, as a protobuf `Struct`.
pub(crate) fn json_struct(
    text: Option<&str>,
    flag: &str,
) -> anyhow::Result<Option<prost_types::Struct>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let value: Value = serde_json::from_str(text).with_context(|| format!("--{flag}: not JSON"))?;
    match proto::json_to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(fields)) => Ok(Some(fields)),
        _ => bail!("--{flag}: must be a JSON object"),
    }
}

/// The protobuf request the arguments describe.
pub fn check_request(args: &CheckArgs) -> anyhow::Result<proto::CheckRequest> {
    let context = json_struct(args.context.as_deref(), "context")?;
    let resource_attributes =
        json_struct(args.resource_attributes.as_deref(), "resource-attributes")?;
    let resource_parents = args
        .resource_parents
        .iter()
        .map(|parent| parse_entity(parent, "resource-parent"))
        .collect::<anyhow::Result<_>>()?;
    Ok(proto::CheckRequest {
        principal: Some(parse_entity(&args.principal, "principal")?),
        action: args.action.clone(),
        resource: Some(parse_entity(&args.resource, "resource")?),
        context,
        approval_id: args.approval.clone().unwrap_or_default(),
        request_id: args.request_id.clone().unwrap_or_default(),
        resource_attributes,
        resource_parents,
        credential: args.credential.clone().unwrap_or_default(),
    })
}

/// TLS for the shell's calls to a server that serves TLS (use an `https://` address).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTls {
    /// The CA certificate(s), PEM, that the server's certificate must chain to
    #[arg(long, global = true, env = "WARRANT_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Mutual TLS: the certificate (PEM) to present, with --client-key
    #[arg(long, global = true, env = "WARRANT_CLIENT_CERT")]
    pub client_cert: Option<std::path::PathBuf>,
    /// Mutual TLS: the key (PEM) of --client-cert
    #[arg(long, global = true, env = "WARRANT_CLIENT_KEY")]
    pub client_key: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry, when the address does not say it (a
    /// probe that calls 127.0.0.1, say) [default: the address's host]
    #[arg(long, global = true, env = "WARRANT_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

impl ClientTls {
    /// A connected channel to `address`, over TLS when it is `https://`.
    pub async fn connect(&self, address: &str) -> anyhow::Result<tonic::transport::Channel> {
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => bail!("--client-cert and --client-key go together"),
        };
        crate::tls::client_channel(
            address,
            self.tls_ca.as_deref(),
            identity,
            self.tls_server_name.as_deref(),
        )
        .await
    }
}

/// `warrant health`: the standard gRPC health check, as a load balancer or an orchestrator's
/// probe asks it.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub tls: ClientTls,
    /// The server to ask (its Check port).
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "WARRANT_SERVER")]
    pub server: String,
    /// Succeed on any answer, SERVING or not: the process is up (a liveness probe). Without
    /// it, only SERVING succeeds (a readiness probe).
    #[arg(long)]
    pub live: bool,
}

/// Asks `grpc.health.v1.Health/Check` for the whole server and prints its status.
pub async fn health(args: HealthArgs) -> anyhow::Result<ExitCode> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = args.tls.connect(&args.server).await?;
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| anyhow::anyhow!(status))
        .context("the health check")?
        .into_inner();
    let status = ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    Ok(match status == ServingStatus::Serving || args.live {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(exit::NOT_SERVING),
    })
}

/// `warrant check` against a server (`--explain` is `authoring::explain::run`, in process).
pub async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let request = check_request(&args)?;
    let mut client = AuthorizerClient::new(args.tls.connect(&args.server).await?);
    let response = match client.check(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => bail!("{:?}: {}", status.code(), status.message()),
    };
    let allowed = response.decision == proto::Decision::Allow as i32;
    let answer = response_to_json(&response);
    match output::chosen_or(output::Output::Json) {
        output::Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        output::Output::Table => print!("{}", decision_summary(&args, &answer)),
    }
    // Like `test`: success means allowed, so scripts can branch on the exit status.
    Ok(exit::decision(allowed))
}

pub(crate) fn entity_json(entity: &Option<proto::EntityRef>) -> Value {
    match entity {
        Some(entity) => json!({ "type": entity.r#type, "id": entity.id }),
        None => Value::Null,
    }
}

pub(crate) fn time_json(at: &Option<prost_types::Timestamp>) -> Value {
    match at {
        Some(at) => Value::String(warrant_proto::convert::unix_millis(at).to_rfc3339()),
        None => Value::Null,
    }
}

/// A Check's answer in a few lines for a person: the decision on the request, its id, why,
/// and who stands behind it. `warrant log show ID` has the whole record.
pub(crate) fn decision_summary(args: &CheckArgs, answer: &Value) -> String {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let entity = |value: &Value| output::entity(value).unwrap_or_default();
    let decision = text(&answer["decision"]).replace("DECISION_", "");
    let mut lines = vec![
        format!(
            "{decision}  {} {} {}",
            args.principal, args.action, args.resource
        ),
        format!("decision  {}", text(&answer["decision_id"])),
    ];
    let reasons: Vec<String> = answer["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    lines.push(format!("because   {}", reasons.join(", ")));
    let provenance = &answer["provenance"];
    if let Some(owner) = provenance["owner"].as_object() {
        lines.push(format!(
            "owner     {} ({})",
            text(&owner["name"]),
            entity(&owner["entity"])
        ));
    }
    if let Some(approval) = provenance["approval"].as_object() {
        lines.push(format!(
            "approval  {} approved by {}, {}",
            text(&approval["ticket"]),
            entity(&approval["approver"]),
            match approval["valid_at_decision"].as_bool() {
                Some(true) => "valid at decision",
                _ => "not valid at decision",
            }
        ));
    }
    if let Some(needed) = answer["approval_required"].as_object() {
        lines.push(format!(
            "needs     an approval for {} over {}",
            text(&needed["action"]),
            entity(&needed["scope"])
        ));
    }
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// The answer as JSON, with the protobuf field names.
pub fn response_to_json(response: &proto::CheckResponse) -> Value {
    let decision = proto::Decision::try_from(response.decision)
        .map(|d| d.as_str_name())
        .unwrap_or("DECISION_UNSPECIFIED");
    let provenance = response.provenance.as_ref().map(|p| {
        json!({
            "principal": entity_json(&p.principal),
            "owner": p.owner.as_ref().map(|o| json!({
                "entity": entity_json(&o.entity), "name": o.name, "email": o.email,
            })),
            "principal_status": p.principal_status,
            "approval": p.approval.as_ref().map(|a| json!({
                "id": a.id,
                "ticket": a.ticket,
                "approver": entity_json(&a.approver),
                "subject": entity_json(&a.subject),
                "actions": a.actions,
                "scope": entity_json(&a.scope),
                "not_before": time_json(&a.not_before),
                "expires_at": time_json(&a.expires_at),
                "revoked": a.revoked,
                "playbook": a.playbook,
                "valid_at_decision": a.valid_at_decision,
                "replay_suspected": a.replay_suspected,
                "max_uses": a.max_uses,
                "use_number": a.use_number,
                "budget": (!a.budget_attribute.is_empty()).then(|| json!({
                    "attribute": a.budget_attribute,
                    "total": a.budget_total,
                    "spent": a.budget_spent,
                    "left": a.budget_left,
                })),
            })),
            "resource": entity_json(&p.resource),
            "resource_scopes": p.resource_scopes.iter().map(|s| entity_json(&Some(s.clone()))).collect::<Vec<_>>(),
            "decided_at": time_json(&p.decided_at),
            "facts_version": p.facts_version,
            "answered_from_cache": p.answered_from_cache,
            "evaluation_id": p.evaluation_id,
            "policy_links": p.policy_links.iter().map(|l| json!({
                "link_id": l.link_id,
                "template_id": l.template_id,
                "principal": entity_json(&l.principal),
                "resource": entity_json(&l.resource),
            })).collect::<Vec<_>>(),
        })
    });
    json!({
        "decision": decision,
        "decision_id": response.decision_id,
        "reasons": response.reasons,
        "errors": response.errors.iter().map(|e| json!({"policy_id": e.policy_id, "message": e.message})).collect::<Vec<_>>(),
        "provenance": provenance,
        "valid_until": time_json(&response.valid_until),
        "policy_version": response.policy_version,
        "request_id": response.request_id,
        "approval_required": response.approval_required.as_ref().map(|a| json!({
            "identity": entity_json(&a.identity),
            "action": a.action,
            "resource": entity_json(&a.resource),
            "scope": entity_json(&a.scope),
            "max_validity_seconds": a.max_validity_seconds,
        })),
    })
}
