//! The evidence Warrant reads from entities for itself: an identity's owner, status and expiry,
//! an approval's ticket, approver, subject, actions, scope and window, a resource's scopes.

use super::*;

pub(super) fn attr(entity: &Entity, name: &str) -> Option<EvalResult> {
    entity.attr(name).and_then(Result::ok)
}

pub(super) fn string_attr(entity: &Entity, name: &str) -> Result<Option<String>, String> {
    match attr(entity, name) {
        None => Ok(None),
        Some(EvalResult::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!(
            "attribute `{name}` must be a String, found {other}"
        )),
    }
}

pub(super) fn entity_attr(entity: &Entity, name: &str) -> Result<Option<EntityUid>, String> {
    match attr(entity, name) {
        None => Ok(None),
        Some(EvalResult::EntityUid(uid)) => Ok(Some(uid)),
        Some(other) => Err(format!(
            "attribute `{name}` must be an entity, found {other}"
        )),
    }
}

pub(super) fn datetime_attr(entity: &Entity, name: &str) -> Result<Option<UnixMillis>, String> {
    match attr(entity, name) {
        None => Ok(None),
        Some(EvalResult::ExtensionValue(text)) => {
            // Cedar renders the value as `datetime("...")`.
            let inner = text
                .strip_prefix("datetime(\"")
                .and_then(|rest| rest.strip_suffix("\")"));
            inner
                .and_then(UnixMillis::parse_cedar_datetime)
                .map(Some)
                .ok_or_else(|| format!("attribute `{name}` must be a datetime, found {text}"))
        }
        Some(other) => Err(format!(
            "attribute `{name}` must be a datetime, found {other}"
        )),
    }
}

pub(super) fn required<T>(value: Result<Option<T>, String>, name: &str) -> Result<T, String> {
    value?.ok_or_else(|| format!("approval needs attribute `{name}`"))
}

/// Reads an identity into the identity index, and its SPIFFE ID, which must be its alone.
pub(super) fn index_identity(
    entity: &Entity,
    entities: &EntityMap,
    identities: &mut Map<EntityUid, Arc<Identity>>,
    spiffe_ids: &mut Map<String, EntityUid>,
) -> Result<(), String> {
    let uid = entity.uid();
    identities.insert(uid.clone(), Arc::new(read_identity(entity, entities)?));
    if let Some(spiffe_id) = string_attr(entity, "spiffe_id")?
        && let Some(other) = spiffe_ids.insert(spiffe_id.clone(), uid)
    {
        return Err(format!("spiffe_id {spiffe_id:?} is also {other}'s"));
    }
    Ok(())
}

pub(super) fn read_identity(entity: &Entity, entities: &EntityMap) -> Result<Identity, String> {
    let owner = entity_attr(entity, "owner")?.map(|uid| {
        let human = entities.get(&uid);
        Owner {
            name: human.and_then(|h| string_attr(h, "name").ok().flatten()),
            email: human.and_then(|h| string_attr(h, "email").ok().flatten()),
            entity: EntityRef::from_uid(&uid),
        }
    });
    Ok(Identity {
        owner,
        status: string_attr(entity, "status")?,
        expires_at: datetime_attr(entity, "expires_at")?,
    })
}

pub(super) fn read_approval(
    entity: &Entity,
    entities: &EntityMap,
    principal_types: &[String],
) -> Result<Approval, String> {
    let uid = entity.uid();
    let subjects: Vec<EntityUid> = entities
        .ancestors(&uid)
        .into_iter()
        .flatten()
        .filter(|parent| principal_types.contains(&parent.type_name().to_string()))
        .cloned()
        .collect();
    let [subject] = <[EntityUid; 1]>::try_from(subjects).map_err(|found| {
        format!(
            "an approval is granted to exactly one identity, its parent; found {}",
            found.len()
        )
    })?;
    let actions = match attr(entity, "actions") {
        Some(EvalResult::Set(set)) => set
            .iter()
            .map(|item| match item {
                EvalResult::EntityUid(action) => Ok(action.id().unescaped().to_owned()),
                other => Err(format!(
                    "attribute `actions` must hold actions, found {other}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(format!("attribute `actions` must be a set, found {other}")),
        None => return Err("approval needs attribute `actions`".to_owned()),
    };
    let revoked = match attr(entity, "revoked") {
        Some(EvalResult::Bool(b)) => b,
        None => false,
        Some(other) => return Err(format!("attribute `revoked` must be a Bool, found {other}")),
    };
    Ok(Approval {
        ticket: required(string_attr(entity, "ticket"), "ticket")?,
        approver: EntityRef::from_uid(&required(entity_attr(entity, "approver"), "approver")?),
        subject,
        actions,
        scope: EntityRef::from_uid(&required(entity_attr(entity, "scope"), "scope")?),
        not_before: required(datetime_attr(entity, "not_before"), "not_before")?,
        expires_at: required(datetime_attr(entity, "expires_at"), "expires_at")?,
        revoked,
        playbook: string_attr(entity, "playbook")?,
        max_uses: match attr(entity, "max_uses") {
            None => None,
            // At most 2^53, so the ledger's canonical JSON keeps it exact.
            Some(EvalResult::Long(n)) if (1..=MAX_EXACT_INTEGER).contains(&n) => Some(n as u64),
            Some(other) => {
                return Err(format!(
                    "attribute `max_uses` must be a Long from 1 to 2^53, found {other}"
                ));
            }
        },
        budget: match (
            attr(entity, "budget_total"),
            string_attr(entity, "budget_attribute")?,
        ) {
            (None, None) => None,
            (Some(EvalResult::Long(total)), Some(attribute))
                if (0..=MAX_EXACT_INTEGER).contains(&total) && !attribute.is_empty() =>
            {
                Some(Budget {
                    attribute,
                    total: total as u64,
                })
            }
            _ => {
                return Err(
                    "attributes `budget_total` (a Long from 0 to 2^53) and `budget_attribute` \
                     (a context key) go together"
                        .to_owned(),
                );
            }
        },
        uid,
    })
}

/// The resource's ancestors, nearest first. In a scope tree a nearer scope has more ancestors
/// than a farther one; ties (a DAG) are broken by name so the order is stable.
pub(super) fn scopes_nearest_first(entities: &EntityMap, uid: &EntityUid) -> Arc<[EntityRef]> {
    let mut scopes: Vec<(usize, EntityUid)> = entities
        .ancestors(uid)
        .into_iter()
        .flatten()
        .map(|scope| {
            let depth = entities.ancestors(scope).map_or(0, Iterator::count);
            (depth, scope.clone())
        })
        .collect();
    scopes.sort_by(|(a_depth, a), (b_depth, b)| {
        b_depth
            .cmp(a_depth)
            .then_with(|| a.to_string().cmp(&b.to_string()))
    });
    scopes
        .into_iter()
        .map(|(_, scope)| EntityRef::from_uid(&scope))
        .collect()
}
