//! The bounds a request must keep before it is decided: the length of every name (entity types
//! and ids, the action, approval and request ids) and the size and depth of the caller's
//! context; and how much of a caller's input an error message or a refusal's record may quote.

use std::collections::BTreeMap;

use warrant_domain::{CheckRequest, ContextValue, EntityRef, InvalidRequest, truncate};

/// How much of a caller's text an error message quotes, in characters.
const QUOTED_CHARS: usize = 48;

/// The limits on one request, each a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// The longest entity type, entity id, action name, approval id or request id, in bytes.
    pub max_name_bytes: usize,
    /// The most bytes a context may hold: its keys and strings, and 8 for any other value.
    pub max_context_bytes: usize,
    /// How deeply records and sets in the context may nest (a flat context is depth 1).
    pub max_context_depth: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_name_bytes: 256,
            max_context_bytes: 64 * 1024,
            max_context_depth: 8,
        }
    }
}

impl RequestLimits {
    /// `Ok` when a name is within `max_name_bytes`; else the error naming `field`.
    fn name_fits(&self, field: impl Into<String>, text: &str) -> Result<(), InvalidRequest> {
        if text.len() > self.max_name_bytes {
            return Err(InvalidRequest::new(
                field,
                format!(
                    "{} bytes; the limit is {} (max_name_bytes)",
                    text.len(),
                    self.max_name_bytes
                ),
            ));
        }
        Ok(())
    }

    /// `Ok` when every part of `request` is within the limits; else the first part that is not,
    /// named, with the limit.
    pub fn check(&self, request: &CheckRequest) -> Result<(), InvalidRequest> {
        let names = [
            ("principal.type", request.principal.type_name.as_str()),
            ("principal.id", request.principal.id.as_str()),
            ("action", request.action.as_str()),
            ("resource.type", request.resource.type_name.as_str()),
            ("resource.id", request.resource.id.as_str()),
            ("approval_id", request.approval_id.as_deref().unwrap_or("")),
            ("request_id", request.request_id.as_deref().unwrap_or("")),
        ];
        for (field, text) in names {
            self.name_fits(field, text)?;
        }
        let mut budget = Budget {
            bytes: 0,
            limits: *self,
        };
        budget.record(&request.context, 1)?;
        if let Some(description) = &request.resource_description {
            for (i, parent) in description.parents.iter().enumerate() {
                for (part, text) in [("type", &parent.type_name), ("id", &parent.id)] {
                    self.name_fits(format!("resource_parents[{i}].{part}"), text)?;
                }
            }
            // The description (attributes and parents' names) is held to the same size and depth
            // as a context, on its own.
            let mut budget = Budget {
                bytes: 0,
                limits: *self,
            };
            budget
                .record(&description.attributes, 1)
                .map_err(|error| InvalidRequest::new("resource_attributes", error.message))?;
            for parent in &description.parents {
                budget
                    .spend(parent.type_name.len() + parent.id.len())
                    .map_err(|error| InvalidRequest::new("resource_parents", error.message))?;
            }
        }
        Ok(())
    }

    /// What a refusal's record keeps of `request`: every name cut to the limit, and the context
    /// only if it keeps the limits (else none).
    pub fn excerpt(&self, request: &CheckRequest) -> CheckRequest {
        let cut = |text: &str| truncate(text, self.max_name_bytes);
        let entity = |entity: &EntityRef| EntityRef::new(cut(&entity.type_name), cut(&entity.id));
        let mut budget = Budget {
            bytes: 0,
            limits: *self,
        };
        CheckRequest {
            caller_identity: request.caller_identity.clone(),
            principal: entity(&request.principal),
            action: cut(&request.action),
            resource: entity(&request.resource),
            context: if budget.record(&request.context, 1).is_ok() {
                request.context.clone()
            } else {
                BTreeMap::new()
            },
            approval_id: request.approval_id.as_deref().map(cut),
            request_id: request.request_id.as_deref().map(cut),
            resource_description: request
                .resource_description
                .clone()
                .filter(|_| self.check(request).is_ok()),
            credential: None,
        }
    }
}

/// Counts a context against the limits as it walks it.
struct Budget {
    bytes: usize,
    limits: RequestLimits,
}

impl Budget {
    fn spend(&mut self, bytes: usize) -> Result<(), InvalidRequest> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.max_context_bytes {
            return Err(InvalidRequest::new(
                "context",
                format!(
                    "larger than {} bytes (max_context_bytes)",
                    self.limits.max_context_bytes
                ),
            ));
        }
        Ok(())
    }

    fn deeper(&self, depth: usize) -> Result<(), InvalidRequest> {
        if depth > self.limits.max_context_depth {
            return Err(InvalidRequest::new(
                "context",
                format!(
                    "nested deeper than {} levels (max_context_depth)",
                    self.limits.max_context_depth
                ),
            ));
        }
        Ok(())
    }

    fn record(
        &mut self,
        fields: &BTreeMap<String, ContextValue>,
        depth: usize,
    ) -> Result<(), InvalidRequest> {
        self.deeper(depth)?;
        for (key, value) in fields {
            self.spend(key.len())?;
            self.value(value, depth)?;
        }
        Ok(())
    }

    fn value(&mut self, value: &ContextValue, depth: usize) -> Result<(), InvalidRequest> {
        match value {
            ContextValue::Bool(_) | ContextValue::Long(_) => self.spend(8),
            ContextValue::String(text) => self.spend(text.len()),
            ContextValue::Set(items) => {
                self.deeper(depth + 1)?;
                items
                    .iter()
                    .try_for_each(|item| self.value(item, depth + 1))
            }
            ContextValue::Record(fields) => self.record(fields, depth + 1),
        }
    }
}

/// A caller's text for an error message: quoted and escaped, and no more than a short prefix of
/// it (with its length) however long it is.
pub fn quote(text: &str) -> String {
    let chars = text.chars().count();
    if chars <= QUOTED_CHARS {
        return format!("{text:?}");
    }
    let prefix: String = text.chars().take(QUOTED_CHARS).collect();
    format!("{prefix:?}… ({} bytes)", text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, context: BTreeMap<String, ContextValue>) -> CheckRequest {
        CheckRequest {
            principal: EntityRef::new("Agent", id),
            action: "read".into(),
            resource: EntityRef::new("Doc", "d"),
            context,
            approval_id: None,
            request_id: None,
            resource_description: None,
            caller_identity: None,
            credential: None,
        }
    }

    #[test]
    fn names_and_contexts_past_their_limits_are_refused_naming_the_field() {
        let limits = RequestLimits {
            max_name_bytes: 8,
            max_context_bytes: 32,
            max_context_depth: 2,
        };
        assert!(limits.check(&request("12345678", BTreeMap::new())).is_ok());
        let error = limits
            .check(&request("123456789", BTreeMap::new()))
            .unwrap_err();
        assert_eq!(error.field, "principal.id");
        assert!(error.message.contains("max_name_bytes"));
        let big = BTreeMap::from([("k".to_owned(), ContextValue::String("x".repeat(40)))]);
        assert!(
            limits
                .check(&request("a", big.clone()))
                .unwrap_err()
                .message
                .contains("max_context_bytes")
        );
        let nested = ContextValue::Record(BTreeMap::from([(
            "b".to_owned(),
            ContextValue::Set(vec![ContextValue::Long(1)]),
        )]));
        let deep = BTreeMap::from([("a".to_owned(), nested)]);
        assert!(
            limits
                .check(&request("a", deep))
                .unwrap_err()
                .message
                .contains("max_context_depth")
        );
        // A refusal's record keeps bounded names and no oversized context.
        let excerpt = limits.excerpt(&request(&"é".repeat(100), big));
        assert!(excerpt.principal.id.len() <= 8 && excerpt.principal.id.ends_with('…'));
        assert!(excerpt.context.is_empty());
    }

    #[test]
    fn quotes_are_short_and_escaped() {
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        let long = quote(&"x".repeat(1_000_000));
        assert!(long.len() < 80, "{long}");
        assert!(long.ends_with("(1000000 bytes)"));
    }
}
