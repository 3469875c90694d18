//! What the ledger keeps of a decision: the `Record` built from a decision and its request (with
//! the context's secret keys masked), and its RFC 8785 canonical JSON.

use serde::{Deserialize, Serialize};

use warrant_domain::{CheckRequest, ContextValue, Decision, EntityRef};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub email: Option<String>,
    pub entity: EntityRef,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub actions: Vec<String>,
    pub approver: EntityRef,
    /// For an approval with a budget: the context attribute it spends, its total, what this
    /// decision spent and what is left. (Absent otherwise.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetRecord>,
    pub expires_at: String,
    pub id: String,
    /// Uses it grants, if limited.
    #[serde(default)]
    pub max_uses: Option<u64>,
    pub not_before: String,
    pub playbook: Option<String>,
    pub replay_suspected: bool,
    pub revoked: bool,
    pub scope: EntityRef,
    pub subject: EntityRef,
    pub ticket: String,
    /// Which of its uses this decision took (limited approvals that allowed it).
    #[serde(default)]
    pub use_number: Option<u64>,
    pub valid_at_decision: bool,
}

/// An approval's budget at a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetRecord {
    pub attribute: String,
    pub left: Option<u64>,
    pub spent: Option<u64>,
    pub total: u64,
}

/// A candidate policy set's verdict, beside the one that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowRecord {
    /// "ALLOW" or "DENY".
    pub decision: String,
    pub error_count: usize,
    pub policy_version: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub message: String,
    pub policy_id: String,
}

/// A verified credential, on record. (Fields in sorted order.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// The delegation chain, the current actor first (absent when there is none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<String>,
    pub expires_at: String,
    pub issuer: String,
    pub jti: Option<String>,
    pub key_id: Option<String>,
    pub principal: EntityRef,
    pub subject: String,
    pub token_sha256: String,
}

/// The approval that would have allowed a denied request, on record and in answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalAdviceRecord {
    pub action: String,
    pub identity: EntityRef,
    pub max_validity_seconds: i64,
    pub resource: EntityRef,
    pub scope: EntityRef,
}

impl From<&warrant_domain::ApprovalAdvice> for ApprovalAdviceRecord {
    fn from(advice: &warrant_domain::ApprovalAdvice) -> Self {
        ApprovalAdviceRecord {
            action: advice.action.clone(),
            identity: advice.identity.clone(),
            max_validity_seconds: advice.max_validity_ms / 1000,
            resource: advice.resource.clone(),
            scope: advice.scope.clone(),
        }
    }
}

/// A resource as the caller described it, on record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptionRecord {
    pub attributes: serde_json::Value,
    /// True when the facts hold the resource, so the description played no part.
    pub ignored: bool,
    pub parents: Vec<EntityRef>,
}

/// A step in an approval request's life, on record: its filing, and a human's approval or
/// rejection of it. Linked to the decision that prompted it (`decision_id`) and to the approval
/// it became (`approval_id`), whose uses are decision records naming that approval. (Fields in
/// sorted order, as for `Record`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequestRecord {
    pub action: String,
    /// Until when the approval it became is valid.
    pub approval_expires_at: Option<String>,
    /// The approval an approved request became.
    pub approval_id: Option<String>,
    /// The uses that approval grants, if limited.
    pub approval_max_uses: Option<u64>,
    /// Who filed it, as the transport saw them.
    pub caller: Option<String>,
    /// The human who approved or rejected it.
    pub decided_by: Option<EntityRef>,
    /// The SHA-256 of the credential that human presented. (Absent: named by the admin caller,
    /// not proven; and in records written before it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by_credential: Option<String>,
    /// The denial that prompted it, if the identity named one.
    pub decision_id: Option<String>,
    pub duration_seconds: i64,
    /// `filed`, `approved` or `rejected`.
    pub event: String,
    /// When the request expires if not decided.
    pub expires_at: String,
    /// The request's id.
    pub id: String,
    pub identity: EntityRef,
    pub justification: String,
    pub on_behalf_of: Option<EntityRef>,
    /// Why it was rejected.
    pub reason: Option<String>,
    pub resource: EntityRef,
    pub scope: EntityRef,
    pub ticket: Option<String>,
    pub time: String,
}

/// A search, on record: a search discloses who can do what, so each page answered is an entry
/// (who asked, what was searched, under which policies and facts, how many candidates it read
/// and how many results it gave). The results themselves are not decisions and are not
/// recorded one by one. (Fields in sorted order, as for `Record`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchRecord {
    /// The action every result may be taken with (absent for an action search).
    pub action: Option<String>,
    pub approval_presented: Option<String>,
    /// The caller as the transport saw it, and the identity in its verified certificate.
    pub caller: Option<String>,
    pub caller_identity: Option<String>,
    /// Candidates this page evaluated.
    pub examined: u64,
    pub facts_version: String,
    pub include_approvable: bool,
    /// Whether a next page was offered.
    pub more: bool,
    /// Whether this page continued an earlier one (came with a page token).
    pub paged: bool,
    pub policy_version: String,
    /// The principal every result is for (absent for a subject search).
    pub principal: Option<EntityRef>,
    pub request_id: Option<String>,
    /// The resource every result is on (absent for a resource search).
    pub resource: Option<EntityRef>,
    /// Results this page answered.
    pub results: u64,
    /// This entry's id (a UUIDv7), answered with the page.
    pub search_id: String,
    /// `subject`, `resource` or `action`.
    pub searched: String,
    /// The type searched for (absent for an action search).
    pub searched_type: Option<String>,
    pub time: String,
    pub trace_id: Option<String>,
    /// `authzen` or `grpc`.
    pub transport: String,
}

/// One entry of the ledger, as read back: a decision, a step of an approval request, or a
/// search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Decision(Box<Record>),
    ApprovalRequest(Box<ApprovalRequestRecord>),
    Search(Box<SearchRecord>),
}

impl Recorded {
    pub fn time(&self) -> &str {
        match self {
            Recorded::Decision(record) => &record.time,
            Recorded::ApprovalRequest(record) => &record.time,
            Recorded::Search(record) => &record.time,
        }
    }
}

/// The canonical JSON of an approval request's step or a search (general path: these are
/// rare beside decisions).
pub(super) fn canonical_entry(record: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::new();
    canonical_value(&serde_json::to_value(record)?, &mut out)?;
    Ok(out)
}

/// What the ledger keeps of one decision. The fields of this struct and of those it holds are
/// declared in sorted order, so serde_json writes them as RFC 8785 does (see `canonical`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub action: String,
    pub answered_from_cache: bool,
    pub approval: Option<ApprovalRecord>,
    /// The approval id the caller presented, found or not.
    pub approval_presented: Option<String>,
    /// For a deny a valid approval would have lifted: that approval. (Absent otherwise.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_required: Option<ApprovalAdviceRecord>,
    /// The caller as the transport saw it (peer address), when known.
    pub caller: Option<String>,
    /// The identity in the caller's verified certificate (mutual TLS). (Absent without one, and
    /// in records written before TLS.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_identity: Option<String>,
    /// The certificate field `caller_identity` was read from: `uri_san` (a SPIFFE ID),
    /// `dns_san` or `common_name`. (Absent without one, and in records written before it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_identity_from: Option<String>,
    /// The caller's context, with the configured keys masked.
    pub context: serde_json::Value,
    /// The credential presented, as verified (never the token: its hash). (Absent without one,
    /// and in records written before credentials.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRecord>,
    pub decision: String,
    pub decision_id: String,
    pub errors: Vec<ErrorRecord>,
    pub evaluation_id: String,
    pub facts_version: String,
    pub owner: Option<OwnerRecord>,
    /// The determining policies that are template links, with their templates and slot values.
    /// (Absent when there are none, and in records written before templates.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_links: Vec<warrant_domain::PolicyLink>,
    pub policy_version: String,
    pub principal: EntityRef,
    pub principal_status: Option<String>,
    pub reasons: Vec<String>,
    /// The replica that decided, in a fleet: its name is in its ledger's checkpoints too.
    /// (Absent in records written before replicas.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    pub request_id: Option<String>,
    pub resource: EntityRef,
    /// What the caller said of the resource (attributes masked like the context): decided on
    /// when `resource_facts` is `described_by_caller`, else ignored. Absent when it said nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_description: Option<DescriptionRecord>,
    /// Where the resource's facts came from: `stored`, `described_by_caller` or `unknown`.
    /// (Absent in records written before callers could describe resources.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_facts: Option<String>,
    pub resource_scopes: Vec<EntityRef>,
    /// What the shadow (candidate) policies would have decided; absent without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowRecord>,
    pub time: String,
    pub trace_id: Option<String>,
    pub valid_until: String,
}

/// A record's canonical JSON: RFC 8785 (JCS), except that an integer beyond 2^53 is written
/// exactly rather than as the nearest double, so a 64-bit context value keeps its value on
/// record. (For every integer within 2^53, every string and every key order this is byte for
/// byte RFC 8785; a property test holds it to `serde_json_canonicalizer`.) serde_json writes the
/// same bytes when the keys are in sorted order (the record's fields are declared so; the
/// context's keys are checked, and for ASCII keys byte order is RFC 8785's UTF-16 order) and
/// every number is a small integer; anything else takes the general path, which is slower.
pub(super) fn canonical(record: &Record) -> serde_json::Result<Vec<u8>> {
    fn plain(value: &serde_json::Value) -> bool {
        use serde_json::Value;
        use warrant_domain::MAX_EXACT_INTEGER as EXACT;
        match value {
            Value::Number(n) => n.as_i64().is_some_and(|n| (-EXACT..=EXACT).contains(&n)),
            Value::Array(items) => items.iter().all(plain),
            // serde_json keeps maps in insertion order here (a dependency turns on
            // `preserve_order`), so the keys must already be sorted.
            Value::Object(fields) => {
                fields.keys().zip(fields.keys().skip(1)).all(|(a, b)| a < b)
                    && fields.iter().all(|(k, v)| k.is_ascii() && plain(v))
            }
            Value::Null | Value::Bool(_) | Value::String(_) => true,
        }
    }
    let description_plain = record
        .resource_description
        .as_ref()
        .is_none_or(|description| plain(&description.attributes));
    if plain(&record.context) && description_plain {
        serde_json::to_vec(record)
    } else {
        let mut out = Vec::new();
        canonical_value(&serde_json::to_value(record)?, &mut out)?;
        Ok(out)
    }
}

/// Writes `value` as canonical JSON (see `canonical`): keys in UTF-16 order, integers exactly,
/// other numbers as RFC 8785 writes them (only ledgers from before exact integers hold any).
pub(super) fn canonical_value(
    value: &serde_json::Value,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            out.extend_from_slice(n.to_string().as_bytes())
        }
        Value::Number(_) => out.extend_from_slice(
            &serde_json_canonicalizer::to_vec(value).map_err(serde::ser::Error::custom)?,
        ),
        Value::Null | Value::Bool(_) | Value::String(_) => serde_json::to_writer(&mut *out, value)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                canonical_value(&fields[key], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// A record's canonical JSON as text.
pub fn canonical_json(record: &Record) -> serde_json::Result<String> {
    canonical(record).and_then(|bytes| String::from_utf8(bytes).map_err(serde::ser::Error::custom))
}

pub(super) fn context_json(value: &ContextValue, mask_keys: &[String]) -> serde_json::Value {
    use serde_json::Value;
    match value {
        ContextValue::Bool(b) => Value::Bool(*b),
        ContextValue::Long(n) => Value::from(*n),
        ContextValue::String(s) => Value::String(s.clone()),
        ContextValue::Set(items) => Value::Array(
            items
                .iter()
                .map(|item| context_json(item, mask_keys))
                .collect(),
        ),
        ContextValue::Record(fields) => Value::Object(masked_fields(fields, mask_keys)),
    }
}

/// A context as JSON, with the value of every key named in `mask_keys` (at any depth) hidden.
pub(super) fn masked_fields(
    fields: &std::collections::BTreeMap<String, ContextValue>,
    mask_keys: &[String],
) -> serde_json::Map<String, serde_json::Value> {
    fields
        .iter()
        .map(|(key, value)| {
            let shown = if mask_keys
                .iter()
                .any(|masked| masked.eq_ignore_ascii_case(key))
            {
                serde_json::Value::String("***".into())
            } else {
                context_json(value, mask_keys)
            };
            (key.clone(), shown)
        })
        .collect()
}

impl Record {
    /// The record of `decision`, made for `request`, asked by `caller`.
    pub fn of(
        decision: &Decision,
        request: &CheckRequest,
        caller: warrant_domain::Caller,
        mask_keys: &[String],
    ) -> Record {
        let provenance = &decision.provenance;
        let identity = provenance.identity.as_deref();
        let approval = provenance.approval.as_ref().map(|evidence| {
            let a = &evidence.approval;
            ApprovalRecord {
                id: a.uid.id().unescaped().to_owned(),
                ticket: a.ticket.clone(),
                approver: a.approver.clone(),
                subject: EntityRef::from_uid(&a.subject),
                actions: a.actions.clone(),
                scope: a.scope.clone(),
                not_before: a.not_before.to_rfc3339(),
                expires_at: a.expires_at.to_rfc3339(),
                revoked: a.revoked,
                playbook: a.playbook.clone(),
                max_uses: a.max_uses,
                budget: a.budget.as_ref().map(|budget| BudgetRecord {
                    attribute: budget.attribute.clone(),
                    left: evidence.budget_left,
                    spent: evidence.budget_spent,
                    total: budget.total,
                }),
                use_number: evidence.use_number,
                valid_at_decision: evidence.valid_at_decision,
                replay_suspected: evidence.replay_suspected,
            }
        });
        Record {
            decision_id: decision.decision_id.to_string(),
            time: provenance.decided_at.to_rfc3339(),
            caller: caller.address,
            caller_identity: caller.identity.map(|identity| identity.to_string()),
            caller_identity_from: caller.identity_from.map(str::to_owned),
            principal: provenance.principal.clone(),
            owner: identity
                .and_then(|i| i.owner.as_ref())
                .map(|owner| OwnerRecord {
                    entity: owner.entity.clone(),
                    name: owner.name.clone(),
                    email: owner.email.clone(),
                }),
            principal_status: identity.and_then(|i| i.status.clone()),
            action: request.action.clone(),
            resource: provenance.resource.clone(),
            resource_scopes: provenance.resource_scopes.iter().cloned().collect(),
            approval_presented: request.approval_id.clone(),
            approval_required: decision
                .approval_required
                .as_ref()
                .map(ApprovalAdviceRecord::from),
            approval,
            decision: decision.effect.as_str().to_owned(),
            reasons: decision.reasons.clone(),
            errors: decision
                .errors
                .iter()
                .map(|e| ErrorRecord {
                    policy_id: e.policy_id.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            policy_links: provenance.policy_links.clone(),
            credential: provenance.credential.as_ref().map(|c| CredentialRecord {
                actors: c.actors.clone(),
                expires_at: c.expires_at.to_rfc3339(),
                issuer: c.issuer.clone(),
                jti: c.jti.clone(),
                key_id: c.key_id.clone(),
                principal: c.principal.clone(),
                subject: c.subject.clone(),
                token_sha256: c.token_sha256.clone(),
            }),
            policy_version: decision.policy_version.to_string(),
            facts_version: provenance.facts_version.to_string(),
            answered_from_cache: provenance.answered_from_cache,
            evaluation_id: provenance.evaluation_id.to_string(),
            valid_until: decision.valid_until.to_rfc3339(),
            replica: None,
            request_id: decision.request_id.clone(),
            trace_id: None,
            context: serde_json::Value::Object(masked_fields(&request.context, mask_keys)),
            resource_description: request.resource_description.as_ref().map(|description| {
                DescriptionRecord {
                    attributes: serde_json::Value::Object(masked_fields(
                        &description.attributes,
                        mask_keys,
                    )),
                    ignored: provenance.resource_description_ignored,
                    parents: description.parents.clone(),
                }
            }),
            resource_facts: Some(provenance.resource_facts.as_str().to_owned()),
            shadow: decision.shadow.as_ref().map(|shadow| ShadowRecord {
                decision: shadow.effect.as_str().to_owned(),
                error_count: shadow.error_count,
                policy_version: shadow.policy_version.to_string(),
                reasons: shadow.reasons.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{Entry, write_entry};

    fn record(context: serde_json::Value) -> Record {
        let name = |t: &str, i: &str| EntityRef {
            type_name: t.into(),
            id: i.into(),
        };
        Record {
            replica: Some("replica-é".into()),
            decision_id: "01a2".into(),
            time: "2026-11-27T12:00:00Z".into(),
            caller: Some("127.0.0.1:1".into()),
            caller_identity: None,
            caller_identity_from: None,
            principal: name("ServiceAccount", "bot-é"),
            owner: None,
            principal_status: Some("active".into()),
            action: "update".into(),
            resource: name("Config", "a\"b\\c\u{1}"),
            resource_description: None,
            resource_facts: None,
            resource_scopes: vec![name("Scope", "x")],
            approval_presented: None,
            approval_required: None,
            approval: None,
            decision: "DENY".into(),
            reasons: vec!["r".into()],
            errors: vec![],
            policy_links: vec![],
            credential: None,
            policy_version: "v".into(),
            facts_version: "f".into(),
            answered_from_cache: false,
            evaluation_id: "01a2".into(),
            valid_until: "2026-11-27T12:01:00Z".into(),
            request_id: None,
            trace_id: None,
            context,
            // Present, so that the canonical-JSON tests cover its place among the fields.
            shadow: Some(ShadowRecord {
                decision: "DENY".into(),
                error_count: 0,
                policy_version: "sha256:candidate".into(),
                reasons: vec!["freeze".into()],
            }),
        }
    }

    proptest::proptest! {
        #[test]
        fn records_serialise_exactly_as_rfc_8785_says(
            keys in proptest::collection::vec("[ -~]{0,6}", 0..5),
            texts in proptest::collection::vec("\\PC{0,6}|[\\x00-\\x1f\\x7f\"\\\\]{1,3}", 5),
            numbers in proptest::collection::vec(any_number(), 5),
            id in "\\PC{0,8}",
        ) {
            let mut context = serde_json::Map::new();
            for (i, key) in keys.iter().enumerate() {
                let value = match i % 3 {
                    0 => serde_json::json!(texts[i]),
                    1 => serde_json::json!(numbers[i]),
                    _ => serde_json::json!({"n": numbers[i], "s": texts[i], "l": [texts[i], numbers[i]]}),
                };
                context.insert(key.clone(), value);
            }
            let mut record = record(serde_json::Value::Object(context));
            record.principal.id = id;
            proptest::prop_assert_eq!(
                String::from_utf8(canonical(&record).unwrap()).unwrap(),
                serde_json_canonicalizer::to_string(&record).unwrap()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn checkpoint_lines_are_rfc_8785(
            batch in proptest::bool::ANY,
            seq in 0u64..(1 << 53),
            texts in proptest::collection::vec("\\PC{0,8}|[\\x00-\\x1f\"\\\\]{1,3}", 4),
        ) {
            use crate::chain::{Checkpoint, Line, SignedHead, checkpoint_bytes, checkpoint_line};
            let checkpoint = Checkpoint {
                batch,
                head: texts[0].clone(),
                key_id: texts[1].clone(),
                replica: Some(texts[3].clone()),
                seq,
                time: texts[2].clone(),
            };
            proptest::prop_assert_eq!(
                checkpoint_bytes(&checkpoint),
                serde_json_canonicalizer::to_vec(&checkpoint).unwrap()
            );
            let line = Line::Checkpoint { checkpoint: checkpoint.clone(), signature: texts[3].clone() };
            let mut expected = serde_json_canonicalizer::to_vec(&line).unwrap();
            expected.push(b'\n');
            let signed = SignedHead { checkpoint, signature: texts[3].clone() };
            proptest::prop_assert_eq!(checkpoint_line(&signed), expected);
        }
    }

    /// Integers RFC 8785 writes exactly (within 2^53), where Warrant's bytes must equal it.
    fn any_number() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::prelude::*;
        const EXACT: i64 = 1 << 53;
        prop_oneof![-EXACT..=EXACT, -1000i64..1000]
    }

    #[test]
    fn integers_past_two_to_the_53_are_recorded_exactly_and_verify() {
        for n in [9_007_199_254_740_993_i64, i64::MIN, i64::MAX] {
            let record = record(serde_json::json!({"n": n, "é": [n]}));
            let bytes = canonical(&record).unwrap();
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(text.contains(&format!("\"n\":{n}")), "{text}");
            // What a verifier recomputes from the written line is the same bytes.
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let mut again = Vec::new();
            canonical_value(&parsed, &mut again).unwrap();
            assert_eq!(again, bytes);
        }
    }

    #[test]
    fn the_writer_builds_the_same_bytes_as_canonicalising_the_entry() {
        let context = serde_json::json!({"z": 1, "a": [true, "\u{1F600}"], "big": i64::MAX, "\u{e9}": {"y": -3, "b": "\t"}});
        let record = record(context);
        let mut fast = Vec::new();
        write_entry(42, "record", &canonical(&record).unwrap(), &mut fast);
        let entry = Entry {
            approval_request: None,
            record: Some(Box::new(record)),
            search: None,
            seq: 42,
        };
        same_bytes(fast, &entry);
        // An approval request's step, with text a canonicaliser could get wrong.
        let step = ApprovalRequestRecord {
            action: "update".into(),
            approval_expires_at: Some("2026-01-01T00:30:00Z".into()),
            approval_id: Some("apr-1".into()),
            approval_max_uses: Some(1),
            caller: None,
            decided_by: Some(EntityRef::new("Human", "carol")),
            decided_by_credential: Some("sha256:00ff".into()),
            decision_id: None,
            duration_seconds: 1800,
            event: "approved".into(),
            expires_at: "2026-01-02T00:00:00Z".into(),
            id: "req-1".into(),
            identity: EntityRef::new("ServiceAccount", "deploy-bot"),
            justification: "roll out \u{e9}\u{1F600} \"now\"\n".into(),
            on_behalf_of: None,
            reason: None,
            resource: EntityRef::new("Config", "payments-api"),
            scope: EntityRef::new("Scope", "prod"),
            ticket: Some("CHG-1".into()),
            time: "2026-01-01T00:00:00Z".into(),
        };
        let mut fast = Vec::new();
        write_entry(
            7,
            "approval_request",
            &canonical_entry(&step).unwrap(),
            &mut fast,
        );
        let entry = Entry {
            approval_request: Some(Box::new(step)),
            record: None,
            search: None,
            seq: 7,
        };
        same_bytes(fast, &entry);
        // A search.
        let search = SearchRecord {
            action: Some("read".into()),
            approval_presented: None,
            caller: Some("127.0.0.1:5000".into()),
            caller_identity: None,
            examined: 10_000,
            facts_version: "f-\u{e9}".into(),
            include_approvable: true,
            more: true,
            paged: false,
            policy_version: "p1".into(),
            principal: Some(EntityRef::new("ApiKey", "pipeline-etl")),
            request_id: None,
            resource: None,
            results: 100,
            search_id: "01a24b43-bc4a-754d-8353-cc53f8a61c7d".into(),
            searched: "resource".into(),
            searched_type: Some("Dataset".into()),
            time: "2026-01-01T00:00:00Z".into(),
            trace_id: None,
            transport: "grpc".into(),
        };
        let mut fast = Vec::new();
        write_entry(8, "search", &canonical_entry(&search).unwrap(), &mut fast);
        let entry = Entry {
            approval_request: None,
            record: None,
            search: Some(Box::new(search)),
            seq: 8,
        };
        same_bytes(fast, &entry);
    }

    /// The writer's bytes for `entry` are its canonical JSON, and read back they canonicalise
    /// to the same bytes again.
    fn same_bytes(fast: Vec<u8>, entry: &Entry) {
        let mut general = Vec::new();
        canonical_value(&serde_json::to_value(entry).unwrap(), &mut general).unwrap();
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(general.clone()).unwrap()
        );
        let parsed: serde_json::Value = serde_json::from_slice(&general).unwrap();
        let mut again = Vec::new();
        canonical_value(&parsed, &mut again).unwrap();
        assert_eq!(again, general);
    }
}
