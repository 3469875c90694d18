//! The Cedar request a question becomes: names parsed against the schema, the caller's context
//! checked against the action's and given Warrant's own `now`, `approval`, `caller` and
//! `credential`.

use super::*;
use warrant_policy::context_shape::{ContextShape, Kind};

impl Engine {
    /// The Cedar request for a well-formed request, with Warrant's own context (`now`, the
    /// approval): `Err` holds a deny Warrant gives before Cedar runs.
    pub(super) fn cedar_request(
        &self,
        snapshot: &Snapshot,
        request: &CheckRequest,
        resolved: &Resolved,
        action_uid: EntityUid,
        now: UnixMillis,
    ) -> Result<Result<Request, Verdict>, InvalidRequest> {
        let facts = &snapshot.facts;
        // Facts Warrant checks itself, before any policy: fail closed on what it cannot resolve.
        if resolved.identity.is_none() && !facts.contains(&resolved.principal_uid) {
            return Ok(Err(Verdict::warrant_deny(
                Reason::UnknownPrincipal.as_str(),
            )));
        }
        if let Err(reason) = &resolved.credential {
            return Ok(Err(Verdict::warrant_deny(reason.as_str())));
        }
        if resolved.resource_facts == ResourceFacts::Unknown {
            return Ok(Err(Verdict::warrant_deny(Reason::UnknownResource.as_str())));
        }
        if request.approval_id.is_some() {
            match &resolved.approval {
                None => return Ok(Err(Verdict::warrant_deny(Reason::UnknownApproval.as_str()))),
                Some(approval) if approval.subject != resolved.principal_uid => {
                    return Ok(Err(Verdict::warrant_deny(
                        Reason::ApprovalReplayed.as_str(),
                    )));
                }
                Some(_) => {}
            }
        }

        let mut context: Vec<(String, RestrictedExpression)> = request
            .context
            .iter()
            .map(|(key, value)| (key.clone(), cedar_value(value)))
            .collect();
        context.push(("now".to_owned(), cedar_datetime(now)));
        // What the action's context declares, looked up once for `caller` and `credential`.
        let declared = snapshot.policies.contexts().get(&request.action);
        if let Some(identity) = request.caller_identity.as_deref()
            && declared.is_some_and(|shape| shape.attributes.contains_key("caller"))
        {
            context.push((
                "caller".to_owned(),
                RestrictedExpression::new_string(identity.to_owned()),
            ));
        }
        if let Some(approval) = &resolved.approval {
            context.push((
                "approval".to_owned(),
                RestrictedExpression::new_entity_uid(approval.uid.clone()),
            ));
        }
        if let Ok(Some(credential)) = &resolved.credential
            && let Some(shape) = declared
            && let Some(declared) = shape.attributes.get("credential")
            && let Kind::Record(fields) = &declared.kind
        {
            context.push((
                "credential".to_owned(),
                credential_record(credential, fields)?,
            ));
        }
        let context = Context::from_pairs(context)
            .map_err(|error| InvalidRequest::new("context", error.to_string()))?;
        let cedar_request = match Request::new(
            resolved.principal_uid.clone(),
            action_uid,
            resolved.resource_uid.clone(),
            context,
            Some(snapshot.policies.schema()),
        ) {
            Ok(cedar_request) => cedar_request,
            Err(RequestValidationError::InvalidPrincipalType(_))
            | Err(RequestValidationError::InvalidResourceType(_)) => {
                return Ok(Err(Verdict::warrant_deny(
                    Reason::ActionNotApplicable.as_str(),
                )));
            }
            Err(RequestValidationError::UndeclaredAction(error)) => {
                return Err(InvalidRequest::new("action", error.to_string()));
            }
            Err(RequestValidationError::UndeclaredPrincipalType(error)) => {
                return Err(InvalidRequest::new("principal.type", error.to_string()));
            }
            Err(RequestValidationError::UndeclaredResourceType(error)) => {
                return Err(InvalidRequest::new("resource.type", error.to_string()));
            }
            // Cedar's message quotes the context's values, which may be secrets: say which key
            // does not fit, from the schema's declaration, and never the value.
            Err(_) => {
                let misfit = snapshot
                    .policies
                    .contexts()
                    .get(&request.action)
                    .and_then(|shape| shape.misfit(&request.context, &RESERVED_CONTEXT_KEYS));
                return Err(match misfit {
                    Some((field, message)) => InvalidRequest::new(field, message),
                    None => InvalidRequest::new(
                        "context",
                        format!(
                            "does not fit the context the schema declares for action {}",
                            quote(&request.action)
                        ),
                    ),
                });
            }
        };
        Ok(Ok(cedar_request))
    }
}

/// The verified claims as the record the action's context declares for `credential`: the
/// declared fields among `issuer`, `subject`, `jti`, `key_id` (Strings), `expires_at` (datetime),
/// `audiences` and `scopes` (Sets of Strings), `actor` (String: who presents the token for the
/// subject) and `actors` (Set of Strings: the whole delegation chain); an optional one the token
/// lacks is left out.
fn credential_record(
    credential: &CredentialEvidence,
    declared: &ContextShape,
) -> Result<RestrictedExpression, InvalidRequest> {
    let text = |value: &str| RestrictedExpression::new_string(value.to_owned());
    let texts =
        |values: &[String]| RestrictedExpression::new_set(values.iter().map(|value| text(value)));
    let fields = declared.attributes.keys().filter_map(|name| {
        let value = match name.as_str() {
            "issuer" => text(&credential.issuer),
            "subject" => text(&credential.subject),
            "jti" => text(credential.jti.as_deref()?),
            "key_id" => text(credential.key_id.as_deref()?),
            "expires_at" => cedar_datetime(credential.expires_at),
            "audiences" => texts(&credential.audiences),
            "scopes" => texts(&credential.scopes),
            "actor" => text(credential.actors.first()?),
            "actors" => texts(&credential.actors),
            _ => return None,
        };
        Some((name.clone(), value))
    });
    RestrictedExpression::new_record(fields)
        .map_err(|error| InvalidRequest::new("context.credential", error.to_string()))
}

/// A context value as a Cedar expression.
pub(super) fn cedar_value(value: &ContextValue) -> RestrictedExpression {
    match value {
        ContextValue::Bool(b) => RestrictedExpression::new_bool(*b),
        ContextValue::Long(n) => RestrictedExpression::new_long(*n),
        ContextValue::String(s) => RestrictedExpression::new_string(s.clone()),
        ContextValue::Set(items) => RestrictedExpression::new_set(items.iter().map(cedar_value)),
        #[expect(clippy::expect_used, reason = "BTreeMap keys are unique")]
        ContextValue::Record(fields) => RestrictedExpression::new_record(
            fields.iter().map(|(k, v)| (k.clone(), cedar_value(v))),
        )
        .expect("new_record only refuses duplicate keys, and BTreeMap keys are unique"),
    }
}

/// Turns the caller's names into Cedar ids, refusing what the schema cannot know.
pub(super) fn parse_names(
    policies: &PolicySnapshot,
    request: &CheckRequest,
) -> Result<(EntityUid, EntityUid, EntityUid), InvalidRequest> {
    let principal = entity_uid(&request.principal, "principal", policies)?;
    let resource = entity_uid(&request.resource, "resource", policies)?;
    if request.action.is_empty() {
        return Err(InvalidRequest::new("action", "required"));
    }
    let action = policies
        .actions()
        .get(&request.action)
        .cloned()
        .ok_or_else(|| {
            InvalidRequest::new(
                "action",
                format!("the schema declares no action {}", quote(&request.action)),
            )
        })?;
    if let Some(approval_id) = &request.approval_id
        && approval_id.is_empty()
    {
        return Err(InvalidRequest::new(
            "approval_id",
            "empty; omit it to present no approval",
        ));
    }
    Ok((principal, action, resource))
}

pub(super) fn entity_uid(
    entity: &EntityRef,
    field: &str,
    policies: &PolicySnapshot,
) -> Result<EntityUid, InvalidRequest> {
    if entity.type_name.is_empty() {
        return Err(InvalidRequest::new(format!("{field}.type"), "required"));
    }
    if entity.id.is_empty() {
        return Err(InvalidRequest::new(format!("{field}.id"), "required"));
    }
    let type_name = policies
        .entity_types()
        .get(&entity.type_name)
        .filter(|_| entity.type_name != APPROVAL_TYPE)
        .ok_or_else(|| {
            InvalidRequest::new(
                format!("{field}.type"),
                format!(
                    "the schema declares no {field} type {}",
                    quote(&entity.type_name)
                ),
            )
        })?;
    Ok(EntityUid::from_type_name_and_id(
        type_name.clone(),
        EntityId::new(&entity.id),
    ))
}

/// `now` as a Cedar `datetime` expression. Building one costs microseconds (Cedar resolves the
/// extension's name on every call), so each thread keeps the one for the current millisecond.
pub(super) fn cedar_datetime(now: UnixMillis) -> RestrictedExpression {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(UnixMillis, RestrictedExpression)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((at, expression)) if *at == now => expression.clone(),
        _ => {
            let expression = RestrictedExpression::new_datetime(now.to_cedar_datetime());
            *last = Some((now, expression.clone()));
            expression
        }
    })
}
