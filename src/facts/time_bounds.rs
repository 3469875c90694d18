//! When facts can change a decision: each entity's own datetimes and references, and the
//! datetimes reachable from it through entity-valued attributes (`Facts::time_bounds`), kept so
//! that an update redoes only the entities that reach a changed one.

use super::*;

/// The datetimes an entity holds and the entities it refers to, read from its JSON form.
#[derive(Debug, Default)]
pub(super) struct TimeReferences {
    pub(super) datetimes: Vec<UnixMillis>,
    pub(super) entities: Vec<EntityUid>,
}

impl TimeReferences {
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
    let mut found = TimeReferences::default();
    for part in ["attrs", "tags"] {
        if let Some(value) = json.get(part) {
            found.collect(value).map_err(bad)?;
        }
    }
    Ok(found)
}

/// Every datetime reachable from `uid` through entity references, sorted; `None` for none.
pub(super) fn closure_of(
    uid: &EntityUid,
    direct: &Map<EntityUid, Arc<TimeReferences>>,
) -> Option<Arc<[UnixMillis]>> {
    let mut seen = std::collections::HashSet::from([uid]);
    let mut queue = vec![uid];
    let mut times = Vec::new();
    while let Some(next) = queue.pop() {
        let Some(found) = direct.get(next) else {
            continue;
        };
        times.extend_from_slice(&found.datetimes);
        for reference in &found.entities {
            if seen.insert(reference) {
                queue.push(reference);
            }
        }
    }
    if times.is_empty() {
        return None;
    }
    times.sort_unstable();
    times.dedup();
    Some(Arc::from(times))
}

pub(super) type TimeIndexes = (
    Map<EntityUid, Arc<[UnixMillis]>>,
    Map<EntityUid, Arc<TimeReferences>>,
    Map<EntityUid, imbl::OrdSet<EntityUid>>,
);

pub(super) fn time_bounds_by_entity(entities: &EntityMap) -> Result<TimeIndexes, FactsError> {
    let mut direct: Map<EntityUid, Arc<TimeReferences>> = Map::new();
    let mut referrers: HashMap<EntityUid, Vec<EntityUid>> = HashMap::new();
    for entity in entities.iter() {
        let found = direct_times_of(entity)?;
        for reference in &found.entities {
            referrers
                .entry(reference.clone())
                .or_default()
                .push(entity.uid());
        }
        // (Most entities hold neither: kept only for those that do, absent meaning none.)
        if !found.datetimes.is_empty() || !found.entities.is_empty() {
            direct.insert(entity.uid(), Arc::new(found));
        }
    }
    let referrers = referrers
        .into_iter()
        .map(|(uid, list)| (uid, list.into_iter().collect::<imbl::OrdSet<_>>()))
        .collect();
    let bounds = direct
        .keys()
        .filter_map(|uid| closure_of(uid, &direct).map(|times| (uid.clone(), times)))
        .collect();
    Ok((bounds, direct, referrers))
}
