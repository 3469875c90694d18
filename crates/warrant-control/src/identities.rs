//! Identities through the admin API: creating one (owned by a known Human), updating its
//! status, owner or attributes, retiring it, and reading them back.

use super::*;

/// The statuses an identity can have.
pub const IDENTITY_STATUSES: [&str; 3] = ["active", "suspended", "retired"];

/// A new identity.
#[derive(Debug, Clone, Default)]
pub struct IdentitySpec {
    pub entity: Option<EntityRef>,
    pub owner: Option<EntityRef>,
    /// "active" when `None`.
    pub status: Option<String>,
    pub attributes: Map<String, Value>,
    pub parents: Vec<EntityRef>,
}

/// A partial update: only what is `Some` changes.
#[derive(Debug, Clone, Default)]
pub struct IdentityUpdate {
    pub owner: Option<EntityRef>,
    pub status: Option<String>,
    /// Each key replaces that attribute; `null` removes it.
    pub attributes: Map<String, Value>,
    pub parents: Option<Vec<EntityRef>>,
}

#[derive(Debug, Clone)]
pub struct IdentityView {
    pub entity: EntityRef,
    pub identity: Arc<Identity>,
    /// Its attributes beyond owner and status, in Cedar's JSON form.
    pub attributes: Map<String, Value>,
    pub parents: Vec<EntityRef>,
    pub meta: ChangeMeta,
    pub origin: Origin,
}

#[derive(Debug, Clone, Default)]
pub struct IdentityFilter {
    pub type_name: Option<String>,
    pub owner: Option<EntityRef>,
    pub status: Option<String>,
}

impl Control {
    pub fn create_identity(&self, spec: IdentitySpec) -> Result<IdentityView, ControlError> {
        let (mut state, publishing) = self.changing()?;
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let entity = required_ref(spec.entity.as_ref(), "identity.entity")?;
        if !identity_types(state.policies.schema()).contains(&entity.type_name) {
            return Err(invalid(
                "identity.entity.type",
                format!(
                    "{:?} is not an identity type of the schema ({})",
                    entity.type_name,
                    identity_types(state.policies.schema()).join(", ")
                ),
            ));
        }
        let uid = uid_of(&entity);
        if facts.contains(&uid) {
            return Err(ControlError::AlreadyExists(format!("{entity} exists")));
        }
        let owner = required_ref(spec.owner.as_ref(), "identity.owner")?;
        let mut attrs = Map::new();
        for (key, value) in spec.attributes {
            if key == "owner" || key == "status" {
                return Err(invalid(
                    format!("identity.attributes.{key}"),
                    "is set by its own field",
                ));
            }
            attrs.insert(key, value);
        }
        attrs.insert(
            "owner".into(),
            owner_json(&facts, &state.policies, &owner, "identity.owner")?,
        );
        let status = spec.status.unwrap_or_else(|| "active".to_owned());
        attrs.insert("status".into(), status_json(&status, "identity.status")?);
        let parents = parents_json(&facts, &state.policies, &spec.parents, "identity.parents")?;
        let live = LiveEntity {
            entity: json!({
                "uid": {"type": entity.type_name, "id": entity.id},
                "attrs": attrs,
                "parents": parents,
            }),
            meta: ChangeMeta {
                updated_at: Some(self.clock.now().0),
                ..ChangeMeta::default()
            },
        };
        self.change(&mut state, publishing, &uid, live, "identity")?;
        tracing::info!(identity = %entity, %owner, status, "identity created");
        self.identity_in(&state, &entity)
    }

    pub fn update_identity(
        &self,
        entity: &EntityRef,
        update: IdentityUpdate,
    ) -> Result<IdentityView, ControlError> {
        let (mut state, publishing) = self.changing()?;
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let uid = uid_of(entity);
        if facts.identity(&uid).is_none() {
            return Err(crate::not_found(&facts, "identity ", entity));
        }
        let key = uid.to_string();
        let (mut json, mut meta, _) = self
            .current(&key)
            .ok_or_else(|| crate::not_found(&facts, "identity ", entity))?;
        let mut attrs = json["attrs"].as_object().cloned().unwrap_or_default();
        for (key, value) in update.attributes {
            if key == "owner" || key == "status" {
                return Err(invalid(
                    format!("attributes.{key}"),
                    "is set by its own field",
                ));
            }
            if value.is_null() {
                attrs.remove(&key);
            } else {
                attrs.insert(key, value);
            }
        }
        if let Some(owner) = &update.owner {
            attrs.insert(
                "owner".into(),
                owner_json(&facts, &state.policies, owner, "owner")?,
            );
        }
        if let Some(status) = &update.status {
            attrs.insert("status".into(), status_json(status, "status")?);
        }
        json["attrs"] = Value::Object(attrs);
        if let Some(parents) = &update.parents {
            json["parents"] = parents_json(&facts, &state.policies, parents, "parents")?;
        }
        meta.updated_at = Some(self.clock.now().0);
        self.change(
            &mut state,
            publishing,
            &uid,
            LiveEntity { entity: json, meta },
            "attributes",
        )?;
        tracing::info!(identity = %entity, owner = ?update.owner, status = ?update.status, "identity updated");
        self.identity_in(&state, entity)
    }

    pub fn retire_identity(&self, entity: &EntityRef) -> Result<IdentityView, ControlError> {
        self.update_identity(
            entity,
            IdentityUpdate {
                status: Some("retired".to_owned()),
                ..IdentityUpdate::default()
            },
        )
    }

    pub fn identity(&self, entity: &EntityRef) -> Result<IdentityView, ControlError> {
        self.identity_in(&self.state(), entity)
    }

    fn identity_in(
        &self,
        _locked: &State,
        entity: &EntityRef,
    ) -> Result<IdentityView, ControlError> {
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let uid = uid_of(entity);
        let identity = facts
            .identity(&uid)
            .ok_or_else(|| crate::not_found(&facts, "identity ", entity))?;
        let (json, meta, origin) = self
            .current(&uid.to_string())
            .ok_or_else(|| crate::not_found(&facts, "identity ", entity))?;
        let parents = parents_of(&json);
        Ok(IdentityView {
            entity: entity.clone(),
            identity,
            attributes: other_attributes(&json, &["owner", "status"]),
            parents,
            meta,
            origin,
        })
    }

    /// Identities matching `filter`, by type and id, after the page token `after`: at most
    /// `limit`, from at most `MAX_LIST_SCAN` read, with the token of the next page.
    pub fn identities(
        &self,
        filter: &IdentityFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<IdentityView>, ControlError> {
        let state = self.state();
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let types = match &filter.type_name {
            Some(type_name) => vec![type_name.clone()],
            None => identity_types(state.policies.schema()),
        };
        let prefixes: Vec<String> = types
            .iter()
            .map(|t| warrant_facts::type_prefix(t))
            .collect();
        page_of(&facts, &prefixes, after, limit, |uid| {
            let Some(identity) = facts.identity(uid) else {
                return Ok(None);
            };
            let owner_matches = filter.owner.as_ref().is_none_or(|o| {
                identity
                    .owner
                    .as_ref()
                    .is_some_and(|owner| &owner.entity == o)
            });
            let status_matches = filter
                .status
                .as_ref()
                .is_none_or(|s| identity.status.as_ref() == Some(s));
            if !(owner_matches && status_matches) {
                return Ok(None);
            }
            self.identity_in(&state, &EntityRef::from_uid(uid))
                .map(Some)
        })
    }
}

fn owner_json(
    facts: &Facts,
    policies: &PolicySnapshot,
    owner: &EntityRef,
    field: &str,
) -> Result<Value, ControlError> {
    if owner.type_name != HUMAN_TYPE {
        return Err(invalid(
            field,
            format!(
                "an identity is owned by a {HUMAN_TYPE}, not by a {}",
                owner.type_name
            ),
        ));
    }
    let uid = known(facts, policies, owner, field)?;
    Ok(entity_json(&uid))
}

fn status_json(status: &str, field: &str) -> Result<Value, ControlError> {
    if IDENTITY_STATUSES.contains(&status) {
        Ok(json!(status))
    } else {
        Err(invalid(
            field,
            format!("{status:?} is not one of {}", IDENTITY_STATUSES.join(", ")),
        ))
    }
}
