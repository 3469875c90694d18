//! A resource the caller describes: for a type the schema marks `@described_by_caller` and a
//! resource Warrant's facts do not hold, the Cedar entity built from the request's attributes
//! (only those the schema declares) and parents (only entities the facts hold), validated
//! against the schema like a stored entity.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::cedar_request::entity_uid;
use super::*;
use warrant_policy::context_shape::{ContextShape, Kind};

/// Extension types whose values a caller writes as their string form.
const EXTENSION_TYPES: [&str; 4] = ["datetime", "decimal", "ipaddr", "duration"];

/// The entity for `resource` as the request describes it, or `None` when its type is not
/// described by callers (the resource is then unknown). `Err` names what does not fit.
pub(super) fn described_resource(
    snapshot: &Snapshot,
    request: &CheckRequest,
    resource_uid: &EntityUid,
) -> Result<Option<Entity>, InvalidRequest> {
    let policies = &snapshot.policies;
    let Some(shape) = policies.described_types().get(&request.resource.type_name) else {
        return Ok(None);
    };
    let description = request.resource_description.clone().unwrap_or_default();
    let namespace = request
        .resource
        .type_name
        .rsplit_once("::")
        .map_or("", |(namespace, _)| namespace);
    let mut parents = Vec::with_capacity(description.parents.len());
    for (i, parent) in description.parents.iter().enumerate() {
        let field = format!("resource_parents[{i}]");
        let uid = entity_uid(parent, &field, policies)?;
        if !snapshot.facts.contains(&uid) {
            return Err(InvalidRequest::new(
                field,
                format!("{uid}: Warrant's facts hold no such entity"),
            ));
        }
        parents.push(json!({"type": parent.type_name, "id": parent.id}));
    }
    let attributes = attributes_json(
        shape,
        &shape.keep_declared(&description.attributes),
        namespace,
    );
    let entity = Entity::from_json_value(
        json!({
            "uid": {"type": request.resource.type_name, "id": request.resource.id},
            "attrs": attributes,
            "parents": parents,
        }),
        Some(policies.schema()),
    )
    .map_err(|error| {
        InvalidRequest::new(
            "resource_attributes",
            format!(
                "does not fit the schema's {}: {}",
                resource_uid.type_name(),
                warrant_facts::error_chain(&error)
            ),
        )
    })?;
    // An attribute may name an entity; it must be one Warrant knows, as a stored entity's must.
    if let Some(unknown) = snapshot.facts.unknown_reference(&entity) {
        return Err(InvalidRequest::new(
            "resource_attributes",
            format!("refers to {unknown}, which Warrant's facts do not hold"),
        ));
    }
    Ok(Some(entity))
}

/// The attributes in Cedar's JSON entity form, as the shape types them: a string where the
/// schema declares an entity type is that entity's id; a string where it declares an extension
/// type is that value's text.
fn attributes_json(
    shape: &ContextShape,
    attributes: &BTreeMap<String, ContextValue>,
    namespace: &str,
) -> Value {
    Value::Object(
        attributes
            .iter()
            .map(|(key, value)| {
                let kind = shape.attributes.get(key).map(|declared| &declared.kind);
                (key.clone(), value_json(kind, value, namespace))
            })
            .collect(),
    )
}

fn value_json(kind: Option<&Kind>, value: &ContextValue, namespace: &str) -> Value {
    match (kind, value) {
        (Some(Kind::Datetime), ContextValue::String(text)) => {
            json!({"__extn": {"fn": "datetime", "arg": text}})
        }
        (Some(Kind::Other(name)), ContextValue::String(text)) => {
            let short = name.rsplit("::").next().unwrap_or(name);
            if EXTENSION_TYPES.contains(&short) {
                json!({"__extn": {"fn": short, "arg": text}})
            } else {
                let type_name = if name.contains("::") || namespace.is_empty() {
                    name.clone()
                } else {
                    format!("{namespace}::{name}")
                };
                json!({"__entity": {"type": type_name, "id": text}})
            }
        }
        (Some(Kind::Record(shape)), ContextValue::Record(fields)) => {
            attributes_json(shape, fields, namespace)
        }
        (Some(Kind::Set(element)), ContextValue::Set(items)) => Value::Array(
            items
                .iter()
                .map(|item| value_json(Some(element), item, namespace))
                .collect(),
        ),
        (_, ContextValue::Bool(b)) => Value::Bool(*b),
        (_, ContextValue::Long(n)) => json!(n),
        (_, ContextValue::String(text)) => Value::String(text.clone()),
        (_, ContextValue::Set(items)) => Value::Array(
            items
                .iter()
                .map(|item| value_json(None, item, namespace))
                .collect(),
        ),
        (_, ContextValue::Record(fields)) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), value_json(None, value, namespace)))
                .collect(),
        ),
    }
}
