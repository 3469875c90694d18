//! The vocabulary every layer shares: entities as callers name them, what the facts say of
//! identities and approvals, the question (`CheckRequest`), the answer (`Decision`, its
//! `Provenance`) and Warrant's own reasons. Plain data: no I/O, no wire formats, no evaluation.
//!
//! May depend on: nothing in the workspace.
//! Invariant: no I/O, no wire format, no evaluation; the system's clock is read only in `clock`.

use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_policy::EntityUid;
use uuid::Uuid;

use crate::clock::UnixMillis;

pub mod clock;
pub mod ports;

/// The entity type of approvals. An approval's single parent is the identity it was granted to.
pub const APPROVAL_TYPE: &str = "Approval";
/// The entity type of people: owners of identities, approvers of approvals.
pub const HUMAN_TYPE: &str = "Human";

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
    /// A budget over its uses, if it has one: the context attribute each allowed decision
    /// spends (a Long, at least 0) and the total all of them may spend.
    pub budget: Option<Budget>,
}

/// What an approval's uses may spend in all, over one context attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The context key whose value each use spends, e.g. `amount`.
    pub attribute: String,
    pub total: u64,
}

impl Approval {
    /// Inside its window and not revoked, at `now`. (Binding to a subject is checked apart.)
    pub fn is_valid_at(&self, now: UnixMillis) -> bool {
        !self.revoked && self.not_before <= now && now < self.expires_at
    }
}

impl Reason {
    /// What every reason for a refused credential starts with.
    pub const CREDENTIAL_PREFIX: &str = "warrant:credential-";
}

/// Context keys Warrant sets itself. A caller that supplies one is refused.
pub const RESERVED_CONTEXT_KEYS: [&str; 4] = ["now", "approval", "caller", "credential"];

/// Defines `Reason` from one list: the variants, `ALL` and `as_str` cannot disagree.
macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// Reasons Warrant gives for decisions it makes itself, before or around Cedar (a
        /// decision's other reasons are the `@id`s of its determining policies). `as_str` is how
        /// records, answers and metric labels spell them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $text,)*
                }
            }
        }
    };
}

reasons! {
    UnknownPrincipal => "warrant:unknown-principal",
    UnknownResource => "warrant:unknown-resource",
    UnknownApproval => "warrant:unknown-approval",
    ApprovalReplayed => "warrant:approval-granted-to-another-identity",
    ActionNotApplicable => "warrant:action-not-applicable",
    NoPermittingPolicy => "warrant:no-permitting-policy",
    /// The approval's budget cannot pay for this use.
    ApprovalBudgetExhausted => "warrant:approval-budget-exhausted",
    /// The approval has a budget, and the request's context lacks the attribute it spends (or
    /// holds no whole number of at least 0 there).
    ApprovalBudgetAmountMissing => "warrant:approval-budget-amount-missing",
    EvaluationError => "warrant:evaluation-error",
    /// The decision could not be written to the ledger, so it is not given.
    LedgerUnavailable => "warrant:ledger-unavailable",
    /// A limited approval whose every use is taken.
    ApprovalUsesExhausted => "warrant:approval-uses-exhausted",
    /// A use of a limited approval could not be recorded, so it is not allowed.
    ApprovalUseNotRecorded => "warrant:approval-use-not-recorded",
    /// The shadow (candidate) policies cannot take the request: their schema lacks the action,
    /// or the request does not fit it.
    NotDecidableByCandidate => "warrant:not-decidable-by-candidate",
    /// The request was refused as malformed (a missing or oversized field, a value the schema
    /// refuses); the record's error says which field.
    InvalidRequest => "warrant:invalid-request",
    /// The request's bytes could not be read at all (not protobuf, not UTF-8, too large).
    MalformedRequest => "warrant:malformed-request",
    /// No answer was ready within the server's time limit for a call.
    TimedOut => "warrant:timed-out",
    /// The request could not be decided because Warrant itself failed (a bug): denied.
    InternalError => "warrant:internal-error",
    /// Neither an mTLS peer nor a trusted principal header named the caller.
    Unauthenticated => "warrant:unauthenticated",
    /// The mTLS peer's SPIFFE ID belongs to no identity.
    UnknownSpiffeId => "warrant:unknown-spiffe-id",
    /// The trusted principal header does not hold `Type::id`.
    BadPrincipalHeader => "warrant:bad-principal-header",
    /// No route maps the method and path to an action and resource.
    NoRoute => "warrant:no-route",
    /// The path cannot be read (bad percent-encoding).
    BadPath => "warrant:bad-path",
    /// Envoy's CheckRequest lacks the HTTP request.
    MalformedCheck => "warrant:malformed-check-request",
    /// The mapped request does not fit the schema (a route or context mapping that needs fixing).
    NotDecidable => "warrant:request-not-decidable",
    /// A request to an MCP endpoint that cannot be read one way: not one JSON-RPC message, a
    /// body the gateway cut short, headers that disagree with the body, no method.
    McpMalformed => "warrant:mcp-malformed",
    /// A request to an MCP endpoint whose JSON-RPC method the endpoint maps to no action.
    McpMethodNotMapped => "warrant:mcp-method-not-mapped",
    /// The credential is not a JWT Warrant can read (or lacks `iss`, `sub` or `exp`).
    CredentialMalformed => "warrant:credential-malformed",
    CredentialUnknownIssuer => "warrant:credential-unknown-issuer",
    /// No key of the issuer's JWKS has the token's `kid`.
    CredentialUnknownKey => "warrant:credential-unknown-key",
    CredentialBadSignature => "warrant:credential-bad-signature",
    /// The token's algorithm is not on the issuer's allow-list.
    CredentialAlgorithmRefused => "warrant:credential-algorithm-refused",
    CredentialWrongAudience => "warrant:credential-wrong-audience",
    CredentialExpired => "warrant:credential-expired",
    CredentialNotYetValid => "warrant:credential-not-yet-valid",
    /// The request names one principal and presents a credential for another.
    CredentialMismatch => "warrant:credential-mismatch",
    /// Requests for this principal type must carry a credential, and this one does not.
    CredentialRequired => "warrant:credential-required",
    /// A single-use token (its issuer's `single_use`) presented again.
    CredentialReplayed => "warrant:credential-replayed",
    /// A replica has not heard from the shared database for longer than `max_staleness`: its
    /// facts may miss a revocation, so it decides nothing.
    FactsStale => "warrant:facts-stale",
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
    /// What the caller says of the resource. Used only for a resource Warrant's facts do not
    /// hold, of a type the schema marks `@described_by_caller`; ignored (and recorded as
    /// ignored) for a resource the facts hold.
    pub resource_description: Option<ResourceDescription>,
    /// The identity in the caller's verified certificate (mutual TLS), set by the transport and
    /// never from the request itself: policies read it as `context.caller` where the action's
    /// context declares it.
    pub caller_identity: Option<Arc<str>>,
    /// A credential (a JWT) proving who the principal is, verified at decision time.
    pub credential: Option<Credential>,
}

/// A credential as presented: a bearer secret, so it never shows in debug output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(pub String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// A resource as the caller describes it: its attributes (undeclared ones are ignored) and its
/// parents among the entities Warrant's facts hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ResourceDescription {
    pub attributes: BTreeMap<String, ContextValue>,
    pub parents: Vec<EntityRef>,
}

/// Where the facts about a decision's resource came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ResourceFacts {
    /// Warrant's own facts hold it (anything the caller said of it was ignored).
    #[default]
    Stored,
    /// The caller described it: a resource of a `@described_by_caller` type that the facts do
    /// not hold, decided on what the request carried.
    DescribedByCaller,
    /// Neither: the resource is unknown (and the request denied), or the request was refused
    /// before its resource was looked up.
    Unknown,
}

impl ResourceFacts {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceFacts::Stored => "stored",
            ResourceFacts::DescribedByCaller => "described_by_caller",
            ResourceFacts::Unknown => "unknown",
        }
    }
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
    /// `ALLOW` or `DENY`, as records and the APIs' enums spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "ALLOW",
            Effect::Deny => "DENY",
        }
    }

    /// `allow` or `deny`, as Envoy's dynamic metadata and metric labels spell it.
    pub fn label(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
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

/// A credential as verified: what provenance keeps of it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialEvidence {
    pub issuer: String,
    pub subject: String,
    /// The principal the subject names (the issuer's `principal` template).
    pub principal: EntityRef,
    pub jti: Option<String>,
    pub expires_at: UnixMillis,
    pub key_id: Option<String>,
    /// `sha256:` of the token.
    pub token_sha256: String,
    /// Its `aud` values.
    pub audiences: Vec<String>,
    /// Its scopes (`scope`, space-separated, or `scp`).
    pub scopes: Vec<String>,
    /// Its issuer's tokens are single-use: this use was its first (and no decision under it is
    /// cached).
    pub single_use: bool,
    /// Its delegation chain (`act`): the actor presenting it for the subject first, then the
    /// actors that one acts for, outward. Empty when the subject acts for itself.
    pub actors: Vec<String>,
}

/// Who asked, as the transport saw it: the peer's address and, over mutual TLS, the identity in
/// its verified certificate. Never what a request says of itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub address: Option<String>,
    pub identity: Option<Arc<str>>,
    /// The certificate field `identity` came from: `uri_san`, `dns_san` or `common_name`.
    pub identity_from: Option<&'static str>,
}

/// A determining policy that is a template link: the grant, the template it was made from and
/// the entities in its slots. (Fields in sorted order: the ledger writes it as canonical JSON.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyLink {
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<EntityRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<EntityRef>,
    pub template: String,
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
    /// For an approval with a budget that allowed this decision: what it spent, and what is left.
    pub budget_spent: Option<u64>,
    pub budget_left: Option<u64>,
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
    /// Whether the resource's facts are Warrant's own or the caller's.
    pub resource_facts: ResourceFacts,
    /// The caller described a resource that Warrant's facts hold: the description was ignored.
    pub resource_description_ignored: bool,
    pub decided_at: UnixMillis,
    pub facts_version: Arc<str>,
    /// The evaluation that produced this answer: this decision's own id when it was evaluated
    /// fresh, the earlier decision's id when it was answered from the cache.
    pub evaluation_id: Uuid,
    pub answered_from_cache: bool,
    /// The determining policies that are template links (`Decision::reasons` names them by
    /// link id), with their templates and slot values.
    pub policy_links: Vec<PolicyLink>,
    /// The credential the request presented, as verified (never the token itself).
    pub credential: Option<Arc<CredentialEvidence>>,
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
    /// For a deny that a valid approval covering the request would turn into an allow: that
    /// approval.
    pub approval_required: Option<ApprovalAdvice>,
}

/// The approval that would allow a denied request, found by deciding it again under a
/// hypothetical one: granted to `identity`, for `action` on resources in `scope`, valid for at
/// most `max_validity_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalAdvice {
    pub identity: EntityRef,
    pub action: String,
    pub resource: EntityRef,
    pub scope: EntityRef,
    pub max_validity_ms: i64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_warrants_own_distinct_and_in_the_book() {
        // The book's page on the API lists them, with what each means.
        let readme = include_str!("../../../docs/book/src/api.md");
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL.iter().copied() {
            let text = reason.as_str();
            assert!(text.starts_with("warrant:"), "{reason:?}: {text}");
            assert!(seen.insert(text), "{text} twice");
            assert!(
                readme.contains(&format!("`{text}`")),
                "docs/book/src/api.md does not list {text}"
            );
        }
    }
}
