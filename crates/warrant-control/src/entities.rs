//! Any entity through the admin API: putting (creating or replacing) and removing the entities
//! that are neither identities nor approvals (resources, scopes, humans: any type the schema
//! declares), and reading any entity back. The rules are those of identities and approvals: the
//! entity fits the schema, every entity it names and every parent is known, the hierarchy stays
//! acyclic, the change records who asked and why, and it is durable before it is acknowledged.
//! Identities and approvals keep their own calls and rules (an owner and a status; separation
//! of duties).

use super::*;
use ref_cast::RefCast as _;

use super::change_rules;

/// An entity as put: its whole new form.
#[derive(Debug, Clone, Default)]
pub struct EntitySpec {
    pub entity: Option<EntityRef>,
    /// In Cedar's JSON form (an entity is `{"__entity": {"type": .., "id": ..}}`).
    pub attributes: Map<String, Value>,
    pub parents: Vec<EntityRef>,
    pub tags: Map<String, Value>,
}

/// Who asked for a change, and why: kept with the entity.
#[derive(Debug, Clone, Default)]
pub struct ChangeReason {
    pub requester: Option<EntityRef>,
    pub justification: Option<String>,
}

impl ChangeReason {
    /// What the store keeps of a change made `now` for this reason; the requester must be known.
    pub(super) fn meta(
        self,
        facts: &Facts,
        policies: &PolicySnapshot,
        now: UnixMillis,
    ) -> Result<ChangeMeta, ControlError> {
        let requester = self
            .requester
            .as_ref()
            .map(|requester| known(facts, policies, requester, "requester"))
            .transpose()?;
        Ok(ChangeMeta {
            requester: requester.map(|uid| EntityRef::from_uid(&uid)),
            justification: self.justification,
            updated_at: Some(now.0),
            ..ChangeMeta::default()
        })
    }
}

#[derive(Debug, Clone)]
pub struct EntityView {
    pub entity: EntityRef,
    pub attributes: Map<String, Value>,
    pub parents: Vec<EntityRef>,
    pub tags: Map<String, Value>,
    pub meta: ChangeMeta,
    pub origin: Origin,
}

impl Control {
    /// Creates `spec.entity`, or replaces it whole.
    pub fn put_entity(
        &self,
        spec: EntitySpec,
        reason: ChangeReason,
    ) -> Result<EntityView, ControlError> {
        let (mut state, publishing) = self.changing()?;
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let entity = required_ref(spec.entity.as_ref(), "entity.entity")?;
        plain_type(&state.policies, &entity, "entity.entity.type")?;
        let uid = uid_of(&entity);
        let parents = parents_json(&facts, &state.policies, &spec.parents, "entity.parents")?;
        for (i, parent) in spec.parents.iter().enumerate() {
            if facts.lies_in(&uid_of(parent), &uid) {
                return Err(invalid(
                    format!("entity.parents[{i}]"),
                    format!("{parent} lies in {entity}: the hierarchy would have a cycle"),
                ));
            }
        }
        let mut json = json!({
            "uid": {"type": entity.type_name, "id": entity.id},
            "attrs": spec.attributes,
            "parents": parents,
        });
        if !spec.tags.is_empty() {
            json["tags"] = Value::Object(spec.tags);
        }
        let parsed =
            cedar_policy::Entity::from_json_value(json.clone(), Some(state.policies.schema()))
                .map_err(|error| {
                    invalid("entity.attributes", warrant_facts::error_chain(&error))
                })?;
        if let Some(unknown) = facts.unknown_reference(&parsed) {
            return Err(invalid(
                "entity.attributes",
                format!("names {unknown}, which is not known"),
            ));
        }
        let created = !facts.contains(&uid);
        let meta = reason.meta(&facts, &state.policies, self.clock.now())?;
        self.change(
            &mut state,
            publishing,
            &uid,
            LiveEntity { entity: json, meta },
            "entity",
        )?;
        tracing::info!(entity = %entity, created, "entity put");
        self.entity_in(&state, &entity)
    }

    /// Removes an entity nothing else names: no other entity (as a parent or in an attribute)
    /// and no policy. Decisions then see it as unknown. Its last form stays in the live store
    /// with the time of removal.
    pub fn retire_entity(
        &self,
        entity: &EntityRef,
        reason: ChangeReason,
    ) -> Result<EntityView, ControlError> {
        let (mut state, publishing) = self.changing()?;
        let facts = Arc::clone(&self.engine.snapshot().facts);
        plain_type(&state.policies, entity, "entity.type")?;
        let uid = uid_of(entity);
        let key = uid.to_string();
        let (json, _, _) = self
            .current(&key)
            .filter(|_| facts.contains(&uid))
            .ok_or_else(|| crate::not_found(&facts, "", entity))?;
        if let Some(referrer) = facts.referrer_of(&uid) {
            return Err(invalid(
                "entity",
                format!("{referrer} names {entity}: change or remove it first"),
            ));
        }
        if let Some(link) = state.policies.links().naming(&uid).next() {
            return Err(invalid(
                "entity",
                format!(
                    "the link {:?} of template {:?} names {entity}: unlink it first",
                    link.id(),
                    link.template()
                ),
            ));
        }
        if state.policies.time_use().entity_literals.contains(&uid) {
            return Err(invalid(
                "entity",
                format!("the policies name {entity}: change them first"),
            ));
        }
        let now = self.clock.now();
        let meta = ChangeMeta {
            retired_at: Some(now.0),
            ..reason.meta(&facts, &state.policies, now)?
        };
        let view = self.view_of(entity, &json, meta.clone(), Origin::Live);
        self.change(
            &mut state,
            publishing,
            &uid,
            LiveEntity { entity: json, meta },
            "entity",
        )?;
        tracing::info!(entity = %entity, "entity removed");
        Ok(view)
    }

    /// Any entity the facts hold, in its current form.
    pub fn entity(&self, entity: &EntityRef) -> Result<EntityView, ControlError> {
        self.entity_in(&self.state(), entity)
    }

    fn entity_in(&self, _locked: &State, entity: &EntityRef) -> Result<EntityView, ControlError> {
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let uid = uid_of(entity);
        let (json, meta, origin) = self
            .current(&uid.to_string())
            .filter(|_| facts.contains(&uid))
            .ok_or_else(|| crate::not_found(&facts, "", entity))?;
        Ok(self.view_of(entity, &json, meta, origin))
    }

    fn view_of(
        &self,
        entity: &EntityRef,
        json: &Value,
        meta: ChangeMeta,
        origin: Origin,
    ) -> EntityView {
        EntityView {
            entity: entity.clone(),
            attributes: other_attributes(json, &[]),
            parents: parents_of(json),
            tags: json["tags"].as_object().cloned().unwrap_or_default(),
            meta,
            origin,
        }
    }
}

/// Refuses what `put_entity` and `retire_entity` do not change: types the schema does not
/// declare, identities and approvals (they have calls of their own).
fn plain_type(
    policies: &PolicySnapshot,
    entity: &EntityRef,
    field: &str,
) -> Result<(), ControlError> {
    let type_name = &entity.type_name;
    if !policies.entity_types().contains_key(type_name) {
        return Err(invalid(
            field,
            format!("the schema declares no entity type {type_name:?}"),
        ));
    }
    if identity_types(policies.schema()).contains(type_name) {
        return Err(invalid(
            field,
            format!(
                "{type_name} is an identity type: identities have an owner and a status, and are \
                 changed with CreateIdentity, UpdateIdentity and RetireIdentity"
            ),
        ));
    }
    if type_name == APPROVAL_TYPE {
        return Err(invalid(
            field,
            "approvals are granted and revoked with GrantApproval and RevokeApproval",
        ));
    }
    Ok(())
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub entities: usize,
    /// Entities the facts did not hold before.
    pub created: usize,
    pub facts_version: Arc<str>,
}

/// How many live records an import writes into its transaction at once.
const LIVE_RECORDS_PER_WRITE: usize = 1024;

impl Control {
    /// Adds or replaces every entity of `entities` (Cedar's JSON form, each with the line it
    /// came from, for errors), all or nothing, held to the rules of the facts file: each fits
    /// the schema on its own, no uid is given twice, and once they are all in, the facts build
    /// (identities and approvals read as Warrant reads them) and every entity they name and
    /// every parent is known. Every identity and approval it adds or changes is also held to
    /// the rules of the calls that change them one at a time (`change_rules`: an owner for an
    /// identity; separation of duties against the import's requester and a bounded window for
    /// an approval). An approval's window is
    /// not held to the present: an expired approval (a restore of history) grants nothing.
    /// `unchecked` skips those per-change rules, for a trusted bulk move (a restore from
    /// another system's export); each entity it writes is then marked `unchecked` on its
    /// record. Then the entities are written in one durable transaction and the facts rebuilt
    /// as the successor of the current ones.
    pub fn import_entities(
        &self,
        entities: impl IntoIterator<Item = Result<(usize, Value), ControlError>>,
        reason: ChangeReason,
        unchecked: bool,
    ) -> Result<ImportSummary, ControlError> {
        let (mut state, publishing) = self.changing()?;
        let current = Arc::clone(&self.engine.snapshot().facts);
        let policies = Arc::clone(&state.policies);
        let mut meta = reason.meta(&current, &policies, self.clock.now())?;
        meta.unchecked = unchecked;
        let schema = policies.schema();
        let mut writer = self.facts_store.writer(schema).map_err(unavailable)?;
        // Each entity goes into the write transaction as it is read, its live record too; only
        // its key and line stay in memory (and, in a fleet, the change to publish).
        let mut imported: BTreeMap<String, usize> = BTreeMap::new();
        let mut ops = Vec::new();
        let mut pending: Vec<(String, LiveEntity)> = Vec::with_capacity(LIVE_RECORDS_PER_WRITE);
        let mut created = 0;
        for entity in entities {
            let (line, json) = entity?;
            let at = format!("line {line}");
            let uid = EntityUid::from_json(json["uid"].clone())
                .map_err(|error| invalid(format!("{at}: uid"), error.to_string()))?;
            let entity = EntityRef::from_uid(&uid);
            if !policies.entity_types().contains_key(&entity.type_name) {
                return Err(invalid(
                    format!("{at}: uid.type"),
                    format!("the schema declares no entity type {:?}", entity.type_name),
                ));
            }
            let key = uid.to_string();
            if let Some(first) = imported.get(&key) {
                return Err(invalid(at, format!("{key} is also on line {first}")));
            }
            writer
                .put(json.clone(), Origin::Live)
                .map_err(|error| invalid(format!("{at}: {entity}"), error.to_string()))?;
            if !current.contains(&uid) {
                created += 1;
            }
            let live = LiveEntity {
                entity: json,
                meta: meta.clone(),
            };
            if publishing.is_some() {
                ops.push(warrant_fleet::ChangeOp::Entity {
                    uid: key.clone(),
                    record: live.clone(),
                });
            }
            imported.insert(key.clone(), line);
            pending.push((key, live));
            if pending.len() == LIVE_RECORDS_PER_WRITE {
                LiveStore::put_in(writer.transaction(), &pending)?;
                pending.clear();
            }
        }
        LiveStore::put_in(writer.transaction(), &pending)?;
        drop(pending);
        // Read back one at a time: the keys stay the only thing held per entity.
        let imported_uids = || {
            imported.iter().map(|(key, line)| {
                key.parse::<EntityUid>()
                    .map(|uid| (*line, uid))
                    .map_err(|error| invalid(format!("line {line}: uid"), error.to_string()))
            })
        };
        check_rules(&writer, schema).map_err(|error| invalid("entities", error.to_string()))?;
        for entry in imported_uids() {
            let (line, uid) = entry?;
            let uid = &uid;
            let Some(stored) = writer.get(uid).map_err(unavailable)? else {
                continue;
            };
            let named = stored
                .references
                .iter()
                .chain(stored.entity.parents().map(EntityUid::ref_cast))
                .filter(|named| *named != uid);
            for named in named {
                // (The schema's actions are not in the store.)
                if !current.contains(named) && !writer.contains(named).map_err(unavailable)? {
                    return Err(invalid(
                        format!("line {line}: {uid}"),
                        format!("names {named}, which is not known"),
                    ));
                }
            }
        }
        if !unchecked {
            let identity_types = identity_types(schema);
            for entry in imported_uids() {
                let (line, uid) = entry?;
                let uid = &uid;
                let Some(stored) = writer.get(uid).map_err(unavailable)? else {
                    continue;
                };
                // What the facts hold already as it is (a re-import of an export) is no change.
                // (Cedar's `==` on entities compares their uids alone.)
                let unchanged = current
                    .entity(uid)
                    .is_some_and(|held| held.entity.deep_eq(&stored.entity));
                if unchanged {
                    continue;
                }
                let at = format!("line {line}: {}: ", EntityRef::from_uid(uid));
                let type_name = uid.type_name().to_string();
                if type_name == APPROVAL_TYPE {
                    let approval = warrant_facts::approval_of(stored.as_entity(), &identity_types)
                        .map_err(|message| invalid(at.trim_end_matches(": "), message))?;
                    self.import_approval_rules(&approval, &meta, &writer, &at)?;
                } else if identity_types.contains(&type_name) {
                    let identity = warrant_facts::identity_of(stored.as_entity())
                        .map_err(|message| invalid(at.trim_end_matches(": "), message))?;
                    change_rules::identity_rules(&identity, &at)?;
                }
            }
        }
        let published = self.end_change(publishing, ops)?;
        if let Some(id) = published {
            LiveStore::set_applied_in(writer.transaction(), id)?;
        }
        let committed = writer.commit().map_err(unavailable)?;
        let facts = current.after(&committed, None).map_err(unavailable)?;
        self.applied(published);
        let count = imported.len();
        let facts_version = Arc::clone(facts.version());
        self.engine.replace_snapshot(Snapshot {
            policies,
            facts: Arc::new(facts),
        });
        state.facts_changed_at = self.clock.now();
        state.facts_changes += 1;
        tracing::info!(entities = count, created, %facts_version, "facts imported");
        Ok(ImportSummary {
            entities: count,
            created,
            facts_version,
        })
    }

    /// An imported approval held to a grant's rules (`at` names its line and uid): the import's
    /// requester stands for the one who asked for it; the subject's owner is read from the
    /// import (`writer`), which holds the subject as it will be. (The schema holds its actions
    /// to the declared ones.)
    fn import_approval_rules(
        &self,
        approval: &Approval,
        meta: &ChangeMeta,
        writer: &FactsWriter,
        at: &str,
    ) -> Result<(), ControlError> {
        // An import's approver is the file's word: where approvers must prove who they are, a
        // new or changed approval comes through a grant, or through an import marked unchecked.
        if self.rules.require_authenticated_approver {
            return Err(ControlError::Refused(format!(
                "{at}approver: an imported approval's approver is named, not proven \
                 (setting require_authenticated_approver); grant it with the approver's \
                 credential, or import it unchecked"
            )));
        }
        let subject = writer.get(&approval.subject).map_err(unavailable)?;
        let owner = subject
            .and_then(|stored| warrant_facts::identity_of(stored.as_entity()).ok())
            .and_then(|identity| identity.owner)
            .map(|owner| owner.entity);
        self.rules.approval(
            &change_rules::ApprovalTerms {
                approver: &approval.approver,
                requester: meta.requester.as_ref(),
                subject_owner: owner.as_ref(),
                not_before: approval.not_before,
                expires_at: approval.expires_at,
            },
            at,
        )
    }

    /// Every entity of the facts in Cedar's JSON form (the file's, with the live changes in
    /// their place and removed ones left out), ordered by uid.
    pub fn export_entities(&self) -> Result<Vec<Value>, ControlError> {
        let facts = Arc::clone(&self.engine.snapshot().facts);
        let mut all = Vec::new();
        facts
            .reader()
            .each_json(&mut |json| {
                all.push(json);
                Ok(())
            })
            .map_err(unavailable)?;
        Ok(all)
    }
}
