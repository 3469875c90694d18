//! What each action's context declares, read from the schema: every attribute's kind (nested
//! records included) and whether it is required. Used to take from a caller only what the schema
//! declares (AuthZEN properties), to say which key of a context does not fit, and to check that
//! every action's context has Warrant's `now: datetime`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use warrant_domain::ContextValue;

/// The kind of a declared attribute, as far as Warrant tells kinds apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Long,
    String,
    Datetime,
    Set(Box<Kind>),
    Record(ContextShape),
    /// An entity or another extension type, by name.
    Other(String),
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Bool => "a Bool".to_owned(),
            Kind::Long => "a Long".to_owned(),
            Kind::String => "a String".to_owned(),
            Kind::Datetime => "a datetime".to_owned(),
            Kind::Set(_) => "a Set".to_owned(),
            Kind::Record(_) => "a record".to_owned(),
            Kind::Other(name) => format!("a {name}"),
        }
    }
}

/// One declared attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub kind: Kind,
    pub required: bool,
}

/// A record type's attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextShape {
    pub attributes: BTreeMap<String, Declared>,
}

impl ContextShape {
    /// The first place where `context` does not fit this shape, as (`context.key`, what is
    /// wrong); keys Warrant sets itself, in `supplied_by_warrant`, are not expected from the
    /// caller.
    pub fn misfit(
        &self,
        context: &BTreeMap<String, ContextValue>,
        supplied_by_warrant: &[&str],
    ) -> Option<(String, String)> {
        let problem = self.misfit_at(context, "context", supplied_by_warrant)?;
        let (field, message) = problem.split_once(": ").unwrap_or(("context", &problem));
        Some((field.to_owned(), message.to_owned()))
    }

    fn misfit_at(
        &self,
        fields: &BTreeMap<String, ContextValue>,
        at: &str,
        skip: &[&str],
    ) -> Option<String> {
        for key in fields.keys() {
            if !self.attributes.contains_key(key) {
                return Some(format!("{at}.{key}: the schema does not declare it"));
            }
        }
        for (key, declared) in &self.attributes {
            if skip.contains(&key.as_str()) {
                continue;
            }
            match fields.get(key) {
                None if declared.required => {
                    return Some(format!(
                        "{at}.{key}: required by the schema ({})",
                        declared.kind.describe()
                    ));
                }
                None => {}
                Some(value) => {
                    if let Some(problem) =
                        kind_misfit(&declared.kind, value, &format!("{at}.{key}"))
                    {
                        return Some(problem);
                    }
                }
            }
        }
        None
    }
}

fn kind_misfit(kind: &Kind, value: &ContextValue, at: &str) -> Option<String> {
    let wrong = |got: &str| Some(format!("{at}: expected {}, got {got}", kind.describe()));
    match (kind, value) {
        (Kind::Bool, ContextValue::Bool(_))
        | (Kind::Long, ContextValue::Long(_))
        | (Kind::String, ContextValue::String(_)) => None,
        (Kind::Set(element), ContextValue::Set(items)) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| kind_misfit(element, item, &format!("{at}[{i}]"))),
        (Kind::Record(shape), ContextValue::Record(fields)) => shape.misfit_at(fields, at, &[]),
        // Entities and extension values cannot be sent by a caller as plain JSON.
        (Kind::Datetime | Kind::Other(_), _) => wrong("a plain value"),
        (_, ContextValue::Bool(_)) => wrong("a Bool"),
        (_, ContextValue::Long(_)) => wrong("a Long"),
        (_, ContextValue::String(_)) => wrong("a String"),
        (_, ContextValue::Set(_)) => wrong("a Set"),
        (_, ContextValue::Record(_)) => wrong("a record"),
    }
}

/// Each action's context shape, by action id, read from the schema's JSON form (Cedar's
/// `Schema` does not expose context types). A common type is looked up in the action's
/// namespace, then the empty one.
pub fn declared_contexts(schema_text: &str) -> HashMap<String, Arc<ContextShape>> {
    use serde_json::Value;
    let Ok((fragment, _)) = cedar_policy::SchemaFragment::from_cedarschema_str(schema_text) else {
        return HashMap::new();
    };
    let Ok(Value::Object(namespaces)) = fragment.to_json_value() else {
        return HashMap::new();
    };
    let mut shapes = HashMap::new();
    for (namespace, body) in &namespaces {
        let Some(Value::Object(actions)) = body.get("actions") else {
            continue;
        };
        let reader = Reader {
            namespaces: &namespaces,
            namespace,
        };
        for (action, declaration) in actions {
            // An action that applies to nothing (only a group others are `in`) is never
            // requested, so it has no context to declare.
            let applies_to_nothing = |types: &str| {
                declaration
                    .pointer(&format!("/appliesTo/{types}"))
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
            };
            if applies_to_nothing("principalTypes") || applies_to_nothing("resourceTypes") {
                continue;
            }
            let shape = match declaration
                .pointer("/appliesTo/context")
                .map(|context| reader.kind(context, 0))
            {
                Some(Kind::Record(shape)) => shape,
                _ => ContextShape::default(),
            };
            shapes.insert(action.clone(), Arc::new(shape));
        }
    }
    shapes
}

/// The annotation that marks an entity type whose resources a caller may describe.
pub const DESCRIBED_BY_CALLER: &str = "described_by_caller";

/// The entity types the schema marks `@described_by_caller`, by their full name, with the
/// attributes each declares.
pub fn described_types(schema_text: &str) -> HashMap<String, Arc<ContextShape>> {
    use serde_json::Value;
    let Ok((fragment, _)) = cedar_policy::SchemaFragment::from_cedarschema_str(schema_text) else {
        return HashMap::new();
    };
    let Ok(Value::Object(namespaces)) = fragment.to_json_value() else {
        return HashMap::new();
    };
    let mut described = HashMap::new();
    for (namespace, body) in &namespaces {
        let Some(Value::Object(types)) = body.get("entityTypes") else {
            continue;
        };
        let reader = Reader {
            namespaces: &namespaces,
            namespace,
        };
        for (name, declaration) in types {
            if declaration
                .pointer(&format!("/annotations/{DESCRIBED_BY_CALLER}"))
                .is_none()
            {
                continue;
            }
            let shape = match declaration.get("shape").map(|shape| reader.kind(shape, 0)) {
                Some(Kind::Record(shape)) => shape,
                _ => ContextShape::default(),
            };
            let full_name = if namespace.is_empty() {
                name.clone()
            } else {
                format!("{namespace}::{name}")
            };
            described.insert(full_name, Arc::new(shape));
        }
    }
    described
}

impl ContextShape {
    /// `fields` with only the attributes this shape declares, at any depth: what a caller says
    /// beyond the schema is ignored, not refused.
    pub fn keep_declared(
        &self,
        fields: &BTreeMap<String, ContextValue>,
    ) -> BTreeMap<String, ContextValue> {
        fields
            .iter()
            .filter_map(|(key, value)| {
                let declared = self.attributes.get(key)?;
                Some((key.clone(), declared.kind.keep_declared(value)))
            })
            .collect()
    }
}

impl Kind {
    fn keep_declared(&self, value: &ContextValue) -> ContextValue {
        match (self, value) {
            (Kind::Record(shape), ContextValue::Record(fields)) => {
                ContextValue::Record(shape.keep_declared(fields))
            }
            (Kind::Set(element), ContextValue::Set(items)) => ContextValue::Set(
                items
                    .iter()
                    .map(|item| element.keep_declared(item))
                    .collect(),
            ),
            _ => value.clone(),
        }
    }
}

struct Reader<'a> {
    namespaces: &'a serde_json::Map<String, serde_json::Value>,
    namespace: &'a str,
}

impl Reader<'_> {
    /// Common types may name others; past this depth a type is left unresolved.
    const MAX_DEPTH: usize = 16;

    fn common_type(&self, name: &str) -> Option<&serde_json::Value> {
        let (space, short) = name.rsplit_once("::").unwrap_or((self.namespace, name));
        [space, ""]
            .into_iter()
            .find_map(|space| self.namespaces.get(space)?.get("commonTypes")?.get(short))
    }

    fn named(&self, name: &str, depth: usize) -> Kind {
        match name {
            "Bool" | "Boolean" => Kind::Bool,
            "Long" => Kind::Long,
            "String" => Kind::String,
            "datetime" | "__cedar::datetime" => Kind::Datetime,
            _ => match self.common_type(name) {
                Some(definition) if depth < Self::MAX_DEPTH => self.kind(definition, depth + 1),
                _ => Kind::Other(name.to_owned()),
            },
        }
    }

    fn kind(&self, value: &serde_json::Value, depth: usize) -> Kind {
        use serde_json::Value;
        let name = || value.get("name").and_then(Value::as_str).unwrap_or("");
        match value.get("type").and_then(Value::as_str).unwrap_or("") {
            "Record" => Kind::Record(ContextShape {
                attributes: value
                    .get("attributes")
                    .and_then(Value::as_object)
                    .map(|attributes| {
                        attributes
                            .iter()
                            .map(|(key, attribute)| {
                                let required = attribute
                                    .get("required")
                                    .and_then(Value::as_bool)
                                    .unwrap_or(true);
                                (
                                    key.clone(),
                                    Declared {
                                        kind: self.kind(attribute, depth),
                                        required,
                                    },
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            "Set" => Kind::Set(Box::new(
                value
                    .get("element")
                    .map_or(Kind::Other(String::new()), |element| {
                        self.kind(element, depth)
                    }),
            )),
            "Boolean" | "Bool" => Kind::Bool,
            "Long" => Kind::Long,
            "String" => Kind::String,
            "Extension" if name() == "datetime" => Kind::Datetime,
            "Extension" | "Entity" => Kind::Other(name().to_owned()),
            "EntityOrCommon" => self.named(name(), depth),
            other => self.named(other, depth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_that_only_groups_others_has_no_context() {
        let contexts = declared_contexts(
            r#"entity User; entity Tool;
action "call_tool";
action "pay" in [Action::"call_tool"] appliesTo { principal: [User], resource: [Tool], context: { now: datetime } };"#,
        );
        assert_eq!(contexts.keys().collect::<Vec<_>>(), ["pay"]);
    }

    #[test]
    fn types_marked_described_by_caller_are_found_with_their_attributes() {
        let described = described_types(
            r#"namespace App {
  @described_by_caller
  entity Todo = { ownerID?: String, meta?: { tag: String } };
  entity User;
  action "read" appliesTo { principal: [User], resource: [Todo], context: { now: datetime } };
}"#,
        );
        assert_eq!(described.keys().collect::<Vec<_>>(), ["App::Todo"]);
        let shape = &described["App::Todo"];
        assert!(!shape.attributes["ownerID"].required);
        let sent = BTreeMap::from([
            ("ownerID".to_owned(), ContextValue::String("rick".into())),
            ("color".to_owned(), ContextValue::String("red".into())),
            (
                "meta".to_owned(),
                ContextValue::Record(BTreeMap::from([
                    ("tag".to_owned(), ContextValue::String("x".into())),
                    ("extra".to_owned(), ContextValue::Bool(true)),
                ])),
            ),
        ]);
        let kept = shape.keep_declared(&sent);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["meta", "ownerID"]);
        assert_eq!(
            kept["meta"],
            ContextValue::Record(BTreeMap::from([(
                "tag".to_owned(),
                ContextValue::String("x".into())
            )]))
        );
    }

    #[test]
    fn shapes_follow_common_types_and_name_the_key_that_does_not_fit() {
        let shapes = declared_contexts(
            r#"
            type Doc = { owner: String, tags?: Set<String> };
            entity User;
            action read appliesTo {
                principal: User, resource: User,
                context: { now: datetime, amount?: Long, resource?: Doc }
            };
            "#,
        );
        let shape = &shapes["read"];
        assert_eq!(shape.attributes["now"].kind, Kind::Datetime);
        let Kind::Record(doc) = &shape.attributes["resource"].kind else {
            panic!("{shape:?}");
        };
        assert!(doc.attributes["owner"].required && !doc.attributes["tags"].required);
        let context = |json: serde_json::Value| -> BTreeMap<String, ContextValue> {
            let serde_json::Value::Object(fields) = json else {
                unreachable!()
            };
            fields
                .into_iter()
                .map(|(k, v)| (k, to_context(v)))
                .collect()
        };
        let misfit = |json| {
            shape
                .misfit(&context(json), &["now"])
                .map(|(field, message)| format!("{field}: {message}"))
        };
        assert_eq!(misfit(serde_json::json!({"amount": 3})), None);
        assert_eq!(
            misfit(serde_json::json!({"amount": "3"})).unwrap(),
            "context.amount: expected a Long, got a String"
        );
        assert_eq!(
            misfit(serde_json::json!({"resource": {"tags": ["a"]}})).unwrap(),
            "context.resource.owner: required by the schema (a String)"
        );
        assert_eq!(
            misfit(serde_json::json!({"colour": 1})).unwrap(),
            "context.colour: the schema does not declare it"
        );
    }

    fn to_context(value: serde_json::Value) -> ContextValue {
        match value {
            serde_json::Value::Bool(b) => ContextValue::Bool(b),
            serde_json::Value::Number(n) => ContextValue::Long(n.as_i64().unwrap()),
            serde_json::Value::String(s) => ContextValue::String(s),
            serde_json::Value::Array(items) => {
                ContextValue::Set(items.into_iter().map(to_context).collect())
            }
            serde_json::Value::Object(fields) => ContextValue::Record(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, to_context(v)))
                    .collect(),
            ),
            serde_json::Value::Null => unreachable!(),
        }
    }
}
