//! Conversions between the protobuf messages of `warrant.v1` and Warrant's own types, in one
//! place beside the generated code: a `CheckRequest` in (naming the field of anything
//! malformed), a `CheckResponse` out, entity references and timestamps both ways. The servers,
//! the shell clients and the authoring tools all convert here.

use std::collections::BTreeMap;

use prost_types::value::Kind;

use crate as proto;
use warrant_domain::clock::UnixMillis;
use warrant_domain::{ContextValue, Effect, InvalidRequest, MAX_EXACT_INTEGER};

/// Converts a protobuf `CheckRequest` into the engine's, naming the field of anything missing.
pub fn check_request_from_proto(
    request: proto::CheckRequest,
) -> Result<warrant_domain::CheckRequest, InvalidRequest> {
    let principal = request
        .principal
        .ok_or_else(|| InvalidRequest::new("principal", "required"))?;
    let resource = request
        .resource
        .ok_or_else(|| InvalidRequest::new("resource", "required"))?;
    if request.action.is_empty() {
        return Err(InvalidRequest::new("action", "required"));
    }
    let context = match request.context {
        Some(context) => struct_to_context(context, "context")?,
        None => BTreeMap::new(),
    };
    let resource_description =
        if request.resource_attributes.is_none() && request.resource_parents.is_empty() {
            None
        } else {
            let attributes = match request.resource_attributes {
                Some(attributes) => struct_to_context(attributes, "resource_attributes")?,
                None => BTreeMap::new(),
            };
            let parents = request
                .resource_parents
                .into_iter()
                .enumerate()
                .map(|(i, parent)| {
                    if parent.r#type.is_empty() || parent.id.is_empty() {
                        Err(InvalidRequest::new(
                            format!("resource_parents[{i}]"),
                            "needs both type and id",
                        ))
                    } else {
                        Ok(warrant_domain::EntityRef::new(parent.r#type, parent.id))
                    }
                })
                .collect::<Result<_, _>>()?;
            Some(warrant_domain::ResourceDescription {
                attributes,
                parents,
            })
        };
    bounded_credential(&request.credential, "credential")?;
    Ok(warrant_domain::CheckRequest {
        principal: warrant_domain::EntityRef::new(principal.r#type, principal.id),
        action: request.action,
        resource: warrant_domain::EntityRef::new(resource.r#type, resource.id),
        context,
        approval_id: non_empty(request.approval_id),
        request_id: non_empty(request.request_id),
        resource_description,
        caller_identity: None,
        credential: non_empty(request.credential).map(warrant_domain::Credential),
    })
}

/// The longest credential a request may carry.
pub const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;

/// Refuses a credential (`field`) longer than `MAX_CREDENTIAL_BYTES`, whichever way it came.
pub fn bounded_credential(token: &str, field: &str) -> Result<(), InvalidRequest> {
    if token.len() > MAX_CREDENTIAL_BYTES {
        return Err(InvalidRequest::new(
            field,
            format!("{} bytes; the limit is {MAX_CREDENTIAL_BYTES}", token.len()),
        ));
    }
    Ok(())
}

pub fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn struct_to_context(
    value: prost_types::Struct,
    path: &str,
) -> Result<BTreeMap<String, ContextValue>, InvalidRequest> {
    value
        .fields
        .into_iter()
        .map(|(key, value)| {
            let field = format!("{path}.{key}");
            let value = value_to_context(value, &field)?;
            Ok((key, value))
        })
        .collect()
}

fn value_to_context(value: prost_types::Value, path: &str) -> Result<ContextValue, InvalidRequest> {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Err(InvalidRequest::new(
            path,
            "null has no Cedar value; leave the key out instead",
        )),
        Some(Kind::BoolValue(b)) => Ok(ContextValue::Bool(b)),
        Some(Kind::StringValue(s)) => Ok(ContextValue::String(s)),
        Some(Kind::NumberValue(n)) => {
            if n.is_finite() && n.fract() == 0.0 && n.abs() <= MAX_EXACT_INTEGER as f64 {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "a whole number within 2^53: exact as an i64"
                )]
                Ok(ContextValue::Long(n as i64))
            } else {
                Err(InvalidRequest::new(
                    path,
                    format!("{n} is not an integer; Cedar numbers are 64-bit integers"),
                ))
            }
        }
        Some(Kind::ListValue(list)) => list
            .values
            .into_iter()
            .enumerate()
            .map(|(index, item)| value_to_context(item, &format!("{path}[{index}]")))
            .collect::<Result<_, _>>()
            .map(ContextValue::Set),
        Some(Kind::StructValue(record)) => {
            struct_to_context(record, path).map(ContextValue::Record)
        }
    }
}

pub fn entity_ref(entity: &warrant_domain::EntityRef) -> proto::EntityRef {
    proto::EntityRef {
        r#type: entity.type_name.clone(),
        id: entity.id.clone(),
    }
}

pub fn uid_ref(uid: &cedar_policy::EntityUid) -> proto::EntityRef {
    entity_ref(&warrant_domain::EntityRef::from_uid(uid))
}

/// A protobuf timestamp in Unix milliseconds (sub-millisecond parts dropped).
pub fn unix_millis(at: &prost_types::Timestamp) -> UnixMillis {
    UnixMillis(at.seconds.saturating_mul(1_000) + i64::from(at.nanos) / 1_000_000)
}

pub fn timestamp(at: UnixMillis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.0.div_euclid(1_000),
        // Under a second of nanoseconds: fits an i32.
        nanos: i32::try_from(at.0.rem_euclid(1_000) * 1_000_000).unwrap_or(0),
    }
}

/// Converts an engine decision into the protobuf answer.
pub fn check_response_to_proto(decision: warrant_domain::Decision) -> proto::CheckResponse {
    let provenance = &decision.provenance;
    let identity = provenance.identity.as_deref();
    let owner = identity
        .and_then(|identity| identity.owner.as_ref())
        .map(|owner| proto::Owner {
            entity: Some(entity_ref(&owner.entity)),
            name: owner.name.clone().unwrap_or_default(),
            email: owner.email.clone().unwrap_or_default(),
        });
    let approval = provenance.approval.as_ref().map(|evidence| {
        let approval = &evidence.approval;
        proto::ApprovalEvidence {
            id: approval.uid.id().unescaped().to_owned(),
            ticket: approval.ticket.clone(),
            approver: Some(entity_ref(&approval.approver)),
            subject: Some(uid_ref(&approval.subject)),
            actions: approval.actions.clone(),
            scope: Some(entity_ref(&approval.scope)),
            not_before: Some(timestamp(approval.not_before)),
            expires_at: Some(timestamp(approval.expires_at)),
            revoked: approval.revoked,
            playbook: approval.playbook.clone().unwrap_or_default(),
            valid_at_decision: evidence.valid_at_decision,
            replay_suspected: evidence.replay_suspected,
            max_uses: approval.max_uses.unwrap_or(0),
            use_number: evidence.use_number.unwrap_or(0),
            budget_attribute: approval
                .budget
                .as_ref()
                .map(|b| b.attribute.clone())
                .unwrap_or_default(),
            budget_total: approval.budget.as_ref().map_or(0, |b| b.total),
            budget_spent: evidence.budget_spent.unwrap_or(0),
            budget_left: evidence.budget_left.unwrap_or(0),
        }
    });
    let decision_value = match decision.effect {
        Effect::Allow => proto::Decision::Allow,
        Effect::Deny => proto::Decision::Deny,
    };
    proto::CheckResponse {
        decision: decision_value as i32,
        decision_id: decision.decision_id.to_string(),
        reasons: decision.reasons,
        errors: decision
            .errors
            .into_iter()
            .map(|error| proto::PolicyError {
                policy_id: error.policy_id,
                message: error.message,
            })
            .collect(),
        provenance: Some(proto::Provenance {
            principal: Some(entity_ref(&provenance.principal)),
            owner,
            principal_status: identity
                .and_then(|identity| identity.status.clone())
                .unwrap_or_default(),
            approval,
            resource: Some(entity_ref(&provenance.resource)),
            resource_scopes: provenance.resource_scopes.iter().map(entity_ref).collect(),
            decided_at: Some(timestamp(provenance.decided_at)),
            facts_version: provenance.facts_version.to_string(),
            answered_from_cache: provenance.answered_from_cache,
            evaluation_id: provenance.evaluation_id.to_string(),
            resource_facts: provenance.resource_facts.as_str().to_owned(),
            resource_description_ignored: provenance.resource_description_ignored,
            policy_links: provenance
                .policy_links
                .iter()
                .map(|link| proto::PolicyLink {
                    link_id: link.link.clone(),
                    template_id: link.template.clone(),
                    principal: link.principal.as_ref().map(entity_ref),
                    resource: link.resource.as_ref().map(entity_ref),
                })
                .collect(),
        }),
        valid_until: Some(timestamp(decision.valid_until)),
        policy_version: decision.policy_version.to_string(),
        request_id: decision.request_id.unwrap_or_default(),
        approval_required: decision.approval_required.as_ref().map(|advice| {
            proto::ApprovalRequired {
                identity: Some(entity_ref(&advice.identity)),
                action: advice.action.clone(),
                resource: Some(entity_ref(&advice.resource)),
                scope: Some(entity_ref(&advice.scope)),
                max_validity_seconds: advice.max_validity_ms / 1000,
            }
        }),
    }
}
