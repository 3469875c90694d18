//! The evidence Warrant reads from entities for itself: an identity's owner, status and expiry,
//! an approval's ticket, approver, subject, actions, scope and window.

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

/// An identity as Warrant reads it, with its owner's entity if the facts hold it.
pub(super) fn read_identity(entity: &Entity, owner: Option<&Entity>) -> Result<Identity, String> {
    let owner = entity_attr(entity, "owner")?.map(|uid| Owner {
        name: owner.and_then(|h| string_attr(h, "name").ok().flatten()),
        email: owner.and_then(|h| string_attr(h, "email").ok().flatten()),
        entity: EntityRef::from_uid(&uid),
    });
    Ok(Identity {
        owner,
        status: string_attr(entity, "status")?,
        expires_at: datetime_attr(entity, "expires_at")?,
    })
}

pub(super) fn read_approval(
    entity: &Entity,
    principal_types: &[String],
) -> Result<Approval, String> {
    let uid = entity.uid();
    let subjects: Vec<EntityUid> = entity
        .as_ref()
        .ancestors()
        .map(|ancestor| EntityUid::from(ancestor.clone()))
        .filter(|parent| principal_types.contains(&parent.type_name().to_string()))
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
