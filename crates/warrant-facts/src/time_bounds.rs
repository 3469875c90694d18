//! What an entity's attributes and tags hold that Warrant follows: the datetimes a decision
//! reading it might compare the clock with, and the entities it names (which a decision can
//! read through it).

use super::*;

/// The datetimes an entity holds and the entities it refers to, read from its JSON form.
#[derive(Debug, Default)]
pub struct TimeReferences {
    pub datetimes: Vec<UnixMillis>,
    pub entities: Vec<EntityUid>,
}

impl TimeReferences {
    /// What an entity in Cedar's JSON form holds in its attributes and tags.
    pub fn of_entity(entity: &serde_json::Value) -> Result<Self, String> {
        let mut found = TimeReferences::default();
        for part in ["attrs", "tags"] {
            if let Some(value) = entity.get(part) {
                found.collect(value)?;
            }
        }
        Ok(found)
    }

    /// Walks a Cedar JSON value (`__extn` and `__entity` escapes) for datetimes and entities.
    pub(super) fn collect(&mut self, value: &serde_json::Value) -> Result<(), String> {
        use serde_json::Value;
        match value {
            Value::Array(items) => items.iter().try_for_each(|item| self.collect(item)),
            Value::Object(fields) => {
                if let Some(extension) = fields.get("__extn") {
                    let function = extension.get("fn").and_then(Value::as_str);
                    let arg = extension.get("arg").and_then(Value::as_str);
                    if let (Some("datetime"), Some(arg)) = (function, arg) {
                        let at = UnixMillis::parse_cedar_datetime(arg)
                            .ok_or_else(|| format!("cannot read datetime {arg:?}"))?;
                        self.datetimes.push(at);
                    }
                    return Ok(());
                }
                if let Some(reference) = fields.get("__entity") {
                    let uid = EntityUid::from_json(reference.clone())
                        .map_err(|error| format!("bad entity reference {reference}: {error}"))?;
                    self.entities.push(uid);
                    return Ok(());
                }
                fields.values().try_for_each(|field| self.collect(field))
            }
            _ => Ok(()),
        }
    }
}

/// An entity's own datetimes and references, from its JSON form.
pub(super) fn direct_times_of(entity: &Entity) -> Result<TimeReferences, FactsError> {
    let bad = |message: String| FactsError::BadEntity {
        entity: EntityRef::from_uid(&entity.uid()),
        message,
    };
    let json = entity.to_json_value().map_err(|e| bad(e.to_string()))?;
    TimeReferences::of_entity(&json).map_err(bad)
}
