//! `warrant check`: a gRPC client a person can use from a shell. Sends one Check to a running
//! server and prints the answer as JSON.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::proto;
use crate::proto::authorizer_client::AuthorizerClient;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
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
    /// The id of the approval presented, e.g. CHG-1042
    #[arg(long)]
    pub approval: Option<String>,
    /// A correlation id, echoed back.
    #[arg(long)]
    pub request_id: Option<String>,
}

/// Splits `Type::id` at the last `::` (types may be namespaced: `Ns::Type::id`).
pub fn parse_entity(text: &str, flag: &str) -> anyhow::Result<proto::EntityRef> {
    match text.rsplit_once("::") {
        Some((type_name, id)) if !type_name.is_empty() && !id.is_empty() => Ok(proto::EntityRef {
            r#type: type_name.to_owned(),
            id: id.trim_matches('"').to_owned(),
        }),
        _ => bail!("--{flag}: expected Type::id, got {text:?}"),
    }
}

pub async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let context = match &args.context {
        Some(text) => {
            let value: Value = serde_json::from_str(text).context("--context: not JSON")?;
            match json_to_value(value).kind {
                Some(prost_types::value::Kind::StructValue(fields)) => Some(fields),
                _ => bail!("--context: must be a JSON object"),
            }
        }
        None => None,
    };
    let request = proto::CheckRequest {
        principal: Some(parse_entity(&args.principal, "principal")?),
        action: args.action,
        resource: Some(parse_entity(&args.resource, "resource")?),
        context,
        approval_id: args.approval.unwrap_or_default(),
        request_id: args.request_id.unwrap_or_default(),
    };
    let mut client = AuthorizerClient::connect(args.server.clone())
        .await
        .with_context(|| format!("cannot connect to {}", args.server))?;
    let response = match client.check(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => bail!("{:?}: {}", status.code(), status.message()),
    };
    let allowed = response.decision == proto::Decision::Allow as i32;
    println!(
        "{}",
        serde_json::to_string_pretty(&response_to_json(&response))?
    );
    // Like `test`: success means allowed, so scripts can branch on the exit status.
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn json_to_value(value: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Value::Object(fields) => Kind::StructValue(prost_types::Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn entity_json(entity: &Option<proto::EntityRef>) -> Value {
    match entity {
        Some(entity) => json!({ "type": entity.r#type, "id": entity.id }),
        None => Value::Null,
    }
}

fn time_json(at: &Option<prost_types::Timestamp>) -> Value {
    match at {
        Some(at) => {
            let millis = at.seconds * 1_000 + i64::from(at.nanos) / 1_000_000;
            Value::String(crate::clock::UnixMillis(millis).to_rfc3339())
        }
        None => Value::Null,
    }
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
            })),
            "resource": entity_json(&p.resource),
            "resource_scopes": p.resource_scopes.iter().map(|s| entity_json(&Some(s.clone()))).collect::<Vec<_>>(),
            "decided_at": time_json(&p.decided_at),
            "facts_version": p.facts_version,
            "answered_from_cache": p.answered_from_cache,
            "evaluation_id": p.evaluation_id,
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
    })
}
