//! Access reviews: the findings a security team answers for every quarter and after every
//! incident, computed from the facts (identities, their owners, approvals), the policies'
//! template links and the ledger's usage summary (who was last seen when, which approvals and
//! links allowed anything), never from a scan of the records:
//!
//! - identities nobody answers for: no owner, an owner the facts no longer hold or who has
//!   left, an owner who has not attested them within `attest_days`;
//! - dormant identities: active, and no decision for `dormant_days`;
//! - approvals that should not exist: never used, barely used of many allowed, expiring soon,
//!   longer-lived than `approval_max_days`, approved by someone who has left;
//! - grants never exercised: template links that allowed nothing in the window;
//! - the wrong actor: replays and credentials naming another principal in the window.
//!
//! Each finding names its subject exactly and the command that fixes it. `review` hands the
//! findings to a callback as it finds them (a review of a million identities is not held in
//! memory) and returns the summary: counts, pictures' data, who has not attested.
//!
//! May depend on: `warrant-domain`, `warrant-facts`, `warrant-ledger`, `warrant-policy`.
//! Invariant: a review reads; it changes nothing, and asks the ledger for no record.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use warrant_domain::clock::UnixMillis;
use warrant_domain::{Approval, EntityRef, Identity, Reason};
use warrant_facts::Facts;
use warrant_ledger::Usage;
use warrant_policy::Links;

const DAY_MS: i64 = 86_400_000;

/// The review's periods (`[review]` in the configuration file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSettings {
    /// An identity with no decision for this many days is dormant [default: 90].
    pub dormant_days: Option<u32>,
    /// Owners attest each identity at least this often [default: 90].
    pub attest_days: Option<u32>,
    /// An approval unused this many days after it started is reported [default: 14].
    pub unused_days: Option<u32>,
    /// An approval valid for longer than this many days is reported [default: 90].
    pub approval_max_days: Option<u32>,
    /// An approval that ends within this many days is reported [default: 7].
    pub expiring_days: Option<u32>,
    /// A limited approval used at most this percentage of its uses is reported [default: 10].
    pub underused_percent: Option<u32>,
    /// How often the server counts the findings for its metrics, in seconds [default: 900].
    pub interval_seconds: Option<u64>,
}

impl ReviewSettings {
    fn days(value: Option<u32>, default: u32) -> i64 {
        i64::from(value.unwrap_or(default)) * DAY_MS
    }
    pub fn dormant_ms(&self) -> i64 {
        Self::days(self.dormant_days, 90)
    }
    pub fn attest_ms(&self) -> i64 {
        Self::days(self.attest_days, 90)
    }
    pub fn unused_ms(&self) -> i64 {
        Self::days(self.unused_days, 14)
    }
    pub fn approval_max_ms(&self) -> i64 {
        Self::days(self.approval_max_days, 90)
    }
    pub fn expiring_ms(&self) -> i64 {
        Self::days(self.expiring_days, 7)
    }
    pub fn underused_percent(&self) -> u64 {
        u64::from(self.underused_percent.unwrap_or(10))
    }
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.interval_seconds.unwrap_or(900).max(1))
    }
}

/// What a finding is about. Its name is the metric's `kind` label and the report's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An active identity with no owner.
    Ownerless,
    /// An active identity whose owner the facts do not hold.
    OwnerGone,
    /// An active identity whose owner has left (status other than `active`).
    OwnerLeft,
    /// An active identity its owner has not attested within `attest_days`.
    NotAttested,
    /// An active identity with no decision for `dormant_days`.
    Dormant,
    /// A valid approval never used since it started, `unused_days` ago or more.
    ApprovalUnused,
    /// A valid limited approval used at most `underused_percent` of its uses.
    ApprovalUnderused,
    /// A valid approval that ends within `expiring_days`.
    ApprovalExpiring,
    /// A valid approval whose window is longer than `approval_max_days`.
    ApprovalTooLong,
    /// A valid approval whose approver has left or is gone.
    ApproverLeft,
    /// A template link that allowed nothing in the window.
    LinkUnused,
    /// Denials in the window for an approval granted to another identity, or a single-use
    /// token presented again.
    ReplaySuspected,
    /// Denials in the window for a credential naming another principal.
    CredentialMismatch,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Ownerless,
        Kind::OwnerGone,
        Kind::OwnerLeft,
        Kind::NotAttested,
        Kind::Dormant,
        Kind::ApprovalUnused,
        Kind::ApprovalUnderused,
        Kind::ApprovalExpiring,
        Kind::ApprovalTooLong,
        Kind::ApproverLeft,
        Kind::LinkUnused,
        Kind::ReplaySuspected,
        Kind::CredentialMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ownerless => "ownerless",
            Kind::OwnerGone => "owner-gone",
            Kind::OwnerLeft => "owner-left",
            Kind::NotAttested => "not-attested",
            Kind::Dormant => "dormant",
            Kind::ApprovalUnused => "approval-unused",
            Kind::ApprovalUnderused => "approval-underused",
            Kind::ApprovalExpiring => "approval-expiring",
            Kind::ApprovalTooLong => "approval-too-long",
            Kind::ApproverLeft => "approver-left",
            Kind::LinkUnused => "link-unused",
            Kind::ReplaySuspected => "replay-suspected",
            Kind::CredentialMismatch => "credential-mismatch",
        }
    }

    /// What it means, for people.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Ownerless => "Identities with no owner",
            Kind::OwnerGone => "Identities whose owner is gone",
            Kind::OwnerLeft => "Identities whose owner has left",
            Kind::NotAttested => "Identities not attested by their owner",
            Kind::Dormant => "Dormant identities",
            Kind::ApprovalUnused => "Approvals never used",
            Kind::ApprovalUnderused => "Approvals barely used",
            Kind::ApprovalExpiring => "Approvals expiring soon",
            Kind::ApprovalTooLong => "Approvals longer-lived than policy allows",
            Kind::ApproverLeft => "Approvals whose approver has left",
            Kind::LinkUnused => "Template links never exercised",
            Kind::ReplaySuspected => "Replays suspected",
            Kind::CredentialMismatch => "Credentials presented for another principal",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One finding: what, about whom, and the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: Kind,
    /// The identity (`Type::id`), approval id or link id.
    pub subject: String,
    /// The identity the subject belongs to, for an approval or a link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The accountable human (`Human::id`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub detail: String,
    /// The shell command that fixes it.
    pub fix: String,
}

/// One day's decisions, for the report's pictures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// By identity type: allowed, denied.
    pub by_type: BTreeMap<String, (u64, u64)>,
}

/// Valid approvals of one age, used and not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgeBucket {
    pub label: String,
    pub used: u64,
    pub unused: u64,
}

/// What the review found, apart from the findings themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// RFC 3339.
    pub generated_at: String,
    /// The window's start, RFC 3339.
    pub since: String,
    pub counts: BTreeMap<Kind, u64>,
    pub identities: u64,
    pub active_identities: u64,
    pub approvals: u64,
    pub links: u64,
    /// Decisions the ledger's summary holds, and when the first was (RFC 3339).
    pub decisions: u64,
    pub ledger_since: Option<String>,
    /// Whether the ledger reaches back to the window's start (findings about what was not
    /// used need it to).
    pub ledger_covers_window: bool,
    /// Identities, approvals or policies past the summary's bound, not kept.
    pub usage_dropped: u64,
    pub days: Vec<DayCounts>,
    pub denied_by_reason: Vec<(String, u64)>,
    pub approvals_by_age: Vec<AgeBucket>,
    /// Owners with identities they have not attested, most first (at most 50).
    pub not_attested_by_owner: Vec<(String, u64)>,
}

/// Everything a review reads, at one moment.
pub struct Inputs<'a> {
    pub facts: &'a Facts,
    pub links: &'a Links,
    /// `None` when the ledger is off: nothing about use can be said.
    pub usage: Option<&'a Usage>,
    pub now: UnixMillis,
    /// The window's start.
    pub since: UnixMillis,
}

fn key(entity: &EntityRef) -> String {
    format!("{}::{}", entity.type_name, entity.id)
}

fn date(ms: i64) -> String {
    let text = UnixMillis(ms).to_rfc3339();
    text.get(..10).unwrap_or(&text).to_owned()
}

fn days_between(earlier: i64, later: i64) -> i64 {
    (later - earlier).div_euclid(DAY_MS)
}

/// A person's standing, as the facts hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Active,
    Left,
    Gone,
}

/// People looked up once each.
struct People<'a> {
    facts: &'a Facts,
    known: HashMap<String, Standing>,
}

impl People<'_> {
    fn standing(&mut self, person: &EntityRef) -> Standing {
        let facts = self.facts;
        *self.known.entry(key(person)).or_insert_with(|| {
            match facts.text_attribute(person, "status") {
                None => Standing::Gone,
                Some(None) => Standing::Active,
                Some(Some(status)) if status == "active" => Standing::Active,
                Some(Some(_)) => Standing::Left,
            }
        })
    }
}

/// Reviews `inputs` under `settings`, handing each finding to `found`.
pub fn review(
    inputs: &Inputs<'_>,
    settings: &ReviewSettings,
    found: &mut dyn FnMut(Finding),
) -> Summary {
    let now = inputs.now.0;
    let since = inputs.since.0;
    let usage = inputs.usage;
    let ledger_first = usage.and_then(|u| u.first);
    let covers = |start: i64| ledger_first.is_some_and(|first| first <= start);
    let mut summary = Summary {
        generated_at: inputs.now.to_rfc3339(),
        since: inputs.since.to_rfc3339(),
        decisions: usage.map_or(0, |u| u.decisions),
        ledger_since: ledger_first.map(|t| UnixMillis(t).to_rfc3339()),
        ledger_covers_window: covers(since),
        usage_dropped: usage.map_or(0, |u| u.dropped),
        ..Summary::default()
    };
    let mut counts: BTreeMap<Kind, u64> = Kind::ALL.into_iter().map(|k| (k, 0)).collect();
    let mut emit = |finding: Finding| {
        *counts.entry(finding.kind).or_default() += 1;
        found(finding);
    };
    let mut people = People {
        facts: inputs.facts,
        known: HashMap::new(),
    };
    let mut not_attested: HashMap<String, u64> = HashMap::new();
    let mut identities = 0u64;
    let mut active = 0u64;
    inputs.facts.each_identity(&mut |uid, identity| {
        identities += 1;
        if identity.status.as_deref() != Some("active") {
            return;
        }
        active += 1;
        let subject = key(&EntityRef::from_uid(uid));
        review_identity(
            &subject,
            identity,
            &mut people,
            usage,
            settings,
            (now, since),
            &mut not_attested,
            &mut emit,
        );
    });
    summary.identities = identities;
    summary.active_identities = active;
    let mut ages = age_buckets();
    let mut approvals = 0u64;
    inputs.facts.each_approval(&mut |approval| {
        approvals += 1;
        if !approval.is_valid_at(inputs.now) {
            return;
        }
        let uses = usage
            .and_then(|u| u.approvals.get(approval.uid.id().unescaped()))
            .map_or(0, |a| a.count);
        let age = now - approval.not_before.0;
        if let Some(bucket) = AGES.iter().position(|(_, upto)| age < *upto) {
            match uses {
                0 => ages[bucket].unused += 1,
                _ => ages[bucket].used += 1,
            }
        }
        let owner = inputs
            .facts
            .identity(&approval.subject)
            .and_then(|identity| identity.owner.as_ref().map(|o| key(&o.entity)));
        let about = Approved {
            approval,
            uses,
            owner,
        };
        review_approval(&about, &mut people, ledger_first, settings, now, &mut emit);
    });
    summary.approvals = approvals;
    summary.approvals_by_age = ages;
    summary.links = inputs.links.len() as u64;
    if let Some(usage) = usage
        && covers(since)
    {
        for link in inputs.links.iter() {
            let last = usage.policies.get(link.id()).map(|a| a.last);
            if last.is_some_and(|last| last >= since) {
                continue;
            }
            let spec = link.spec();
            let identity = spec.principal.as_ref().map(key);
            let owner = spec
                .principal
                .as_ref()
                .and_then(|p| inputs.facts.identity_named(p))
                .and_then(|i| i.owner.as_ref().map(|o| key(&o.entity)));
            let detail = match last {
                Some(last) => format!(
                    "template {} last allowed something {} days ago ({})",
                    link.template(),
                    days_between(last, now),
                    date(last)
                ),
                None => format!(
                    "template {} has allowed nothing since the ledger began ({})",
                    link.template(),
                    date(ledger_first.unwrap_or(now))
                ),
            };
            emit(Finding {
                kind: Kind::LinkUnused,
                subject: link.id().to_owned(),
                identity,
                owner,
                detail,
                fix: format!("warrant policy unlink {}", link.id()),
            });
        }
    }
    if let Some(usage) = usage {
        summarise_days(&mut summary, usage, (since, now));
    }
    let mut by_owner: Vec<(String, u64)> = not_attested.into_iter().collect();
    by_owner.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    by_owner.truncate(50);
    summary.not_attested_by_owner = by_owner;
    summary.counts = counts;
    summary
}

const AGES: [(&str, i64); 5] = [
    ("under a day", DAY_MS),
    ("1-7 days", 7 * DAY_MS),
    ("7-30 days", 30 * DAY_MS),
    ("30-90 days", 90 * DAY_MS),
    ("over 90 days", i64::MAX),
];

fn age_buckets() -> Vec<AgeBucket> {
    AGES.iter()
        .map(|(label, _)| AgeBucket {
            label: (*label).to_owned(),
            ..AgeBucket::default()
        })
        .collect()
}

#[expect(
    clippy::too_many_arguments,
    reason = "one identity's review, in its parts"
)]
fn review_identity(
    subject: &str,
    identity: &Identity,
    people: &mut People<'_>,
    usage: Option<&Usage>,
    settings: &ReviewSettings,
    (now, since): (i64, i64),
    not_attested: &mut HashMap<String, u64>,
    emit: &mut dyn FnMut(Finding),
) {
    let finding = |kind, owner: Option<String>, detail: String, fix: String| Finding {
        kind,
        subject: subject.to_owned(),
        identity: None,
        owner,
        detail,
        fix,
    };
    let owner = identity.owner.as_ref().map(|o| key(&o.entity));
    let suspend = format!("warrant identity suspend {subject}");
    match &identity.owner {
        None => emit(finding(
            Kind::Ownerless,
            None,
            "no human answers for it".into(),
            format!("warrant identity update {subject} --owner Human::<who>"),
        )),
        Some(person) => match people.standing(&person.entity) {
            Standing::Gone => emit(finding(
                Kind::OwnerGone,
                owner.clone(),
                format!("its owner {} is not in the facts", key(&person.entity)),
                format!("warrant identity update {subject} --owner Human::<who>"),
            )),
            Standing::Left => emit(finding(
                Kind::OwnerLeft,
                owner.clone(),
                format!("its owner {} has left", key(&person.entity)),
                format!("warrant identity update {subject} --owner Human::<who>"),
            )),
            Standing::Active => {
                let attested = usage.and_then(|u| u.attestations.get(subject));
                if attested.is_none_or(|a| a.at < now - settings.attest_ms()) {
                    let who = key(&person.entity);
                    *not_attested.entry(who.clone()).or_default() += 1;
                    let detail = match attested {
                        Some(a) => format!(
                            "last attested {} days ago ({}, by {})",
                            days_between(a.at, now),
                            date(a.at),
                            a.by
                        ),
                        None => "never attested".into(),
                    };
                    emit(finding(
                        Kind::NotAttested,
                        Some(who.clone()),
                        detail,
                        format!("warrant review attest {subject} --as {who} --confirm"),
                    ));
                }
            }
        },
    }
    let Some(usage) = usage else { return };
    let used = usage.identities.get(subject);
    let quiet_since = now - settings.dormant_ms();
    let ledger_first = usage.first.unwrap_or(i64::MAX);
    match used {
        Some(used) if used.last < quiet_since => emit(finding(
            Kind::Dormant,
            owner.clone(),
            format!(
                "no decision for {} days (last {})",
                days_between(used.last, now),
                date(used.last)
            ),
            suspend.clone(),
        )),
        None if ledger_first <= quiet_since => emit(finding(
            Kind::Dormant,
            owner.clone(),
            format!(
                "no decision since the ledger began ({})",
                date(ledger_first)
            ),
            suspend.clone(),
        )),
        _ => {}
    }
    let Some(used) = used else { return };
    if used.last_replay.is_some_and(|t| t >= since) {
        emit(finding(
            Kind::ReplaySuspected,
            owner.clone(),
            format!(
                "{} denials for a replayed approval or token, the last {}",
                used.replays,
                date(used.last_replay.unwrap_or(now))
            ),
            suspend.clone(),
        ));
    }
    if used.last_mismatch.is_some_and(|t| t >= since) {
        emit(finding(
            Kind::CredentialMismatch,
            owner,
            format!(
                "{} denials for a credential naming another principal, the last {} (search: warrant log search --principal {subject} --reason {})",
                used.mismatches,
                date(used.last_mismatch.unwrap_or(now)),
                Reason::CredentialMismatch.as_str()
            ),
            suspend,
        ));
    }
}

/// A valid approval, how often it was used, and its identity's owner.
struct Approved<'a> {
    approval: &'a Approval,
    uses: u64,
    owner: Option<String>,
}

fn review_approval(
    about: &Approved<'_>,
    people: &mut People<'_>,
    // When the ledger's first record was (uses before it are unknown); `None` without one.
    ledger_first: Option<i64>,
    settings: &ReviewSettings,
    now: i64,
    emit: &mut dyn FnMut(Finding),
) {
    let Approved {
        approval,
        uses,
        owner,
    } = about;
    let uses = *uses;
    let id = approval.uid.id().unescaped().to_owned();
    let subject = key(&EntityRef::from_uid(&approval.subject));
    let revoke = format!("warrant approval revoke {id}");
    let finding = |kind, detail: String, fix: String| Finding {
        kind,
        subject: id.clone(),
        identity: Some(subject.clone()),
        owner: owner.clone(),
        detail,
        fix,
    };
    let started = approval.not_before.0;
    let ends = approval.expires_at.0;
    let ticket = &approval.ticket;
    // Uses are counted from the later of its start and the ledger's first record.
    let counted_from = ledger_first.map(|first| first.max(started));
    if let Some(counted_from) = counted_from
        && now - counted_from >= settings.unused_ms()
    {
        let period = match counted_from > started {
            true => format!("since the ledger began ({})", date(counted_from)),
            false => format!("in {} days", days_between(started, now)),
        };
        match (uses, approval.max_uses) {
            (0, max) => emit(finding(
                Kind::ApprovalUnused,
                format!(
                    "ticket {ticket}: used 0{} times {period}",
                    max.map(|m| format!(" of {m}")).unwrap_or_default(),
                ),
                revoke.clone(),
            )),
            (used, Some(max)) if max >= 10 && used * 100 <= max * settings.underused_percent() => {
                emit(finding(
                    Kind::ApprovalUnderused,
                    format!("ticket {ticket}: used {used} of {max} times {period}"),
                    revoke.clone(),
                ));
            }
            _ => {}
        }
    }
    if ends - now <= settings.expiring_ms() {
        emit(finding(
            Kind::ApprovalExpiring,
            format!("ticket {ticket}: ends {}", UnixMillis(ends).to_rfc3339()),
            format!("warrant approval show {id}"),
        ));
    }
    if ends - started > settings.approval_max_ms() {
        emit(finding(
            Kind::ApprovalTooLong,
            format!(
                "ticket {ticket}: valid for {} days ({} to {})",
                days_between(started, ends),
                date(started),
                date(ends)
            ),
            revoke.clone(),
        ));
    }
    let standing = people.standing(&approval.approver);
    if standing != Standing::Active {
        emit(finding(
            Kind::ApproverLeft,
            format!(
                "ticket {ticket}: approved by {}, who {}",
                key(&approval.approver),
                match standing {
                    Standing::Gone => "is not in the facts",
                    _ => "has left",
                }
            ),
            revoke,
        ));
    }
}

/// The window's days: decisions by identity type, and denials by reason.
fn summarise_days(summary: &mut Summary, usage: &Usage, (since, now): (i64, i64)) {
    let mut reasons: HashMap<&str, u64> = HashMap::new();
    // Every day of the window, those without decisions too, so that pictures keep time.
    let types: std::collections::BTreeSet<&str> = usage
        .days
        .range(since.div_euclid(DAY_MS)..)
        .flat_map(|(_, counts)| counts.by_type.keys().map(|k| &**k))
        .collect();
    for day in since.div_euclid(DAY_MS)..=now.div_euclid(DAY_MS) {
        let counts = usage.days.get(&day);
        summary.days.push(DayCounts {
            day: date(day * DAY_MS),
            by_type: types
                .iter()
                .map(|kind| {
                    let held = counts.and_then(|c| c.by_type.get(*kind)).copied();
                    ((*kind).to_owned(), held.unwrap_or((0, 0)))
                })
                .collect(),
        });
        let Some(counts) = counts else { continue };
        for (reason, count) in &counts.denied_by_reason {
            *reasons.entry(reason).or_default() += count;
        }
    }
    let mut reasons: Vec<(String, u64)> = reasons
        .into_iter()
        .map(|(reason, count)| (reason.to_owned(), count))
        .collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    summary.denied_by_reason = reasons;
}
