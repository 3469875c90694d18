//! The vocabulary every layer shares: entities as callers name them, what the facts say of
//! identities and approvals, the question (`CheckRequest`), the answer (`Decision`, its
//! `Provenance`) and Warrant's own reasons. Plain data: no I/O, no wire formats, no evaluation.

use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_policy::EntityUid;
use uuid::Uuid;

use crate::clock::UnixMillis;

/// An entity named by type and id, as a caller names it. (Fields in sorted order: the ledger
/// writes it as canonical JSON, `{"id":..,"type":..}`.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EntityRef {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

impl EntityRef {
    pub fn new(type_name: impl Into<String>, id: impl Into<String>) -> Self {
        EntityRef {
            type_name: type_name.into(),
            id: id.into(),
        }
    }

    /// `Type::id` (or Cedar's `Type::"id"`), split at the last `::` (types may be namespaced:
    /// `Ns::Type::id`). `None` unless both parts are there.
    pub fn parse(text: &str) -> Option<Self> {
        match text.rsplit_once("::") {
            Some((type_name, id)) if !type_name.is_empty() && !id.is_empty() => {
                Some(EntityRef::new(type_name, id.trim_matches('"')))
            }
            _ => None,
        }
    }

    pub fn from_uid(uid: &EntityUid) -> Self {
        EntityRef {
            type_name: uid.type_name().to_string(),
            id: uid.id().unescaped().to_owned(),
        }
    }
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{:?}", self.type_name, self.id)
    }
}

/// The accountable human behind an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub entity: EntityRef,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// What Warrant knows about a non-human identity (any entity of a principal type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub owner: Option<Owner>,
    pub status: Option<String>,
    /// When the identity's credential stops being valid, if it has such a bound.
    pub expires_at: Option<UnixMillis>,
}

/// An approval as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub uid: EntityUid,
    pub ticket: String,
    pub approver: EntityRef,
    /// The identity it was granted to.
    pub subject: EntityUid,
    /// Ids of the actions it covers.
    pub actions: Vec<String>,
    pub scope: EntityRef,
    pub not_before: UnixMillis,
    pub expires_at: UnixMillis,
    pub revoked: bool,
    pub playbook: Option<String>,
    /// How many allowed decisions it may serve, if limited (1: a single-use approval).
    pub max_uses: Option<u64>,
}

impl Approval {
    /// Inside its window and not revoked, at `now`. (Binding to a subject is checked apart.)
    pub fn is_valid_at(&self, now: UnixMillis) -> bool {
        !self.revoked && self.not_before <= now && now < self.expires_at
    }
}

/// Context keys Warrant sets itself. A caller that supplies one is refused.
pub const RESERVED_CONTEXT_KEYS: [&str; 2] = ["now", "approval"];

/// Reasons Warrant gives for decisions it makes before or around Cedar.
pub mod reason {
    pub const UNKNOWN_PRINCIPAL: &str = "warrant:unknown-principal";
    pub const UNKNOWN_RESOURCE: &str = "warrant:unknown-resource";
    pub const UNKNOWN_APPROVAL: &str = "warrant:unknown-approval";
    pub const APPROVAL_REPLAYED: &str = "warrant:approval-granted-to-another-identity";
    pub const ACTION_NOT_APPLICABLE: &str = "warrant:action-not-applicable";
    pub const NO_PERMITTING_POLICY: &str = "warrant:no-permitting-policy";
    pub const EVALUATION_ERROR: &str = "warrant:evaluation-error";
    /// The decision could not be written to the ledger, so it is not given.
    pub const LEDGER_UNAVAILABLE: &str = "warrant:ledger-unavailable";
    /// A limited approval whose every use is taken.
    pub const APPROVAL_USES_EXHAUSTED: &str = "warrant:approval-uses-exhausted";
    /// A use of a limited approval could not be recorded, so it is not allowed.
    pub const APPROVAL_USE_NOT_RECORDED: &str = "warrant:approval-use-not-recorded";
    /// The shadow (candidate) policies cannot take the request: their schema lacks the action,
    /// or the request does not fit it.
    pub const NOT_DECIDABLE_BY_CANDIDATE: &str = "warrant:not-decidable-by-candidate";
    /// The request was refused as malformed (a missing or oversized field, a value the schema
    /// refuses); the record's error says which field.
    pub const INVALID_REQUEST: &str = "warrant:invalid-request";
    /// The request's bytes could not be read at all (not protobuf, not UTF-8, too large).
    pub const MALFORMED_REQUEST: &str = "warrant:malformed-request";
    /// No answer was ready within the server's time limit for a call.
    pub const TIMED_OUT: &str = "warrant:timed-out";
    /// The request could not be decided because Warrant itself failed (a bug): denied.
    pub const INTERNAL_ERROR: &str = "warrant:internal-error";
    // Envoy ext_authz: the gateway's request could not become a question.
    /// Neither an mTLS peer nor a trusted principal header named the caller.
    pub const UNAUTHENTICATED: &str = "warrant:unauthenticated";
    /// The mTLS peer's SPIFFE ID belongs to no identity.
    pub const UNKNOWN_SPIFFE_ID: &str = "warrant:unknown-spiffe-id";
    /// The trusted principal header does not hold `Type::id`.
    pub const BAD_PRINCIPAL_HEADER: &str = "warrant:bad-principal-header";
    /// No route maps the method and path to an action and resource.
    pub const NO_ROUTE: &str = "warrant:no-route";
    /// The path cannot be read (bad percent-encoding).
    pub const BAD_PATH: &str = "warrant:bad-path";
    /// Envoy's CheckRequest lacks the HTTP request.
    pub const MALFORMED_CHECK: &str = "warrant:malformed-check-request";
    /// The mapped request does not fit the schema (a route or context mapping that needs fixing).
    pub const NOT_DECIDABLE: &str = "warrant:request-not-decidable";
}

/// A value in the caller's context: the part of Cedar's value space a caller may assert.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContextValue {
    Bool(bool),
    Long(i64),
    String(String),
    Set(Vec<ContextValue>),
    Record(BTreeMap<String, ContextValue>),
}

/// One question: may `principal` do `action` on `resource`, now?
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckRequest {
    pub principal: EntityRef,
    pub action: String,
    pub resource: EntityRef,
    /// The caller's own context, checked against the action's context in the schema.
    pub context: BTreeMap<String, ContextValue>,
    /// The approval the caller presents, by id.
    pub approval_id: Option<String>,
    pub request_id: Option<String>,
}

/// A request that cannot be decided because it is malformed. `field` names the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    pub field: String,
    pub message: String,
}

impl InvalidRequest {
    /// The field and message are cut to a few hundred bytes, so an error never echoes
    /// unbounded input back to the caller.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidRequest {
            field: truncate(&field.into(), 160),
            message: truncate(&message.into(), 480),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    /// `ALLOW` or `DENY`, as records and the APIs' enums spell it (`to_ascii_lowercase` for the
    /// HTTP APIs and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "ALLOW",
            Effect::Deny => "DENY",
        }
    }
}

/// The largest integer every JSON reader keeps exactly (2^53): the bound on integers from
/// callers' JSON and on counts Warrant writes into records (`max_uses`).
pub const MAX_EXACT_INTEGER: i64 = 1 << 53;

/// A policy that failed to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub policy_id: String,
    pub message: String,
}

/// The presented approval as found, and what Warrant judged of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalEvidence {
    pub approval: Arc<Approval>,
    /// In its window, not revoked and granted to this principal, at decision time.
    pub valid_at_decision: bool,
    /// Presented by an identity other than the one it was granted to.
    pub replay_suspected: bool,
    /// For a limited approval that allowed this decision: which use it was (1 is the first).
    pub use_number: Option<u64>,
}

/// The evidence a decision was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub principal: EntityRef,
    /// `None` when the principal is unknown.
    pub identity: Option<Arc<Identity>>,
    pub approval: Option<ApprovalEvidence>,
    pub resource: EntityRef,
    /// Every scope the resource lies in, nearest first.
    pub resource_scopes: Arc<[EntityRef]>,
    pub decided_at: UnixMillis,
    pub facts_version: Arc<str>,
    /// The evaluation that produced this answer: this decision's own id when it was evaluated
    /// fresh, the earlier decision's id when it was answered from the cache.
    pub evaluation_id: Uuid,
    pub answered_from_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    pub decision_id: Uuid,
    /// `@id`s of the determining policies, sorted; `warrant:*` for Warrant's own reasons.
    pub reasons: Vec<String>,
    pub errors: Vec<PolicyError>,
    pub provenance: Provenance,
    /// The caller may rely on this answer until then, and no longer.
    pub valid_until: UnixMillis,
    pub policy_version: Arc<str>,
    pub request_id: Option<String>,
    /// What the shadow (candidate) policies would have decided, when they are configured.
    pub shadow: Option<ShadowVerdict>,
}

/// A candidate policy set's verdict on a request it does not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowVerdict {
    pub effect: Effect,
    pub reasons: Vec<String>,
    pub error_count: usize,
    pub policy_version: Arc<str>,
}

/// `text` cut to at most `max_bytes` bytes at a character boundary, marked with `…` when cut.
pub fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
