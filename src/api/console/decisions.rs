//! The decision log for people: a search over the ledger (principal, action, resource, outcome,
//! reason, approval, time), newest first and paged; and one decision's page, which tells its
//! story (the approval request it prompted and who decided it, the approval's uses), its
//! provenance (owner, approval, scopes, the policies and links that decided) and its proof (its
//! place in the chain, the checkpoint that signs it, whether that verifies with the ledger's key).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use maud::{Markup, html};

use super::charts;
use super::pages::{self, Section};
use super::{Console, Page, PageError, SignedIn, console_resource};
use warrant_domain::EntityRef;
use warrant_domain::clock::UnixMillis;
use warrant_ledger::{Filter, Ledger, Proof, Standing, StoredRecord};

/// Rows per page of the log.
const PAGE: usize = 50;
/// Uses of an approval listed on a decision's page.
const USES: usize = 20;

#[derive(serde::Deserialize, Default)]
pub(super) struct LogQuery {
    #[serde(default)]
    principal: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    approval: String,
    /// RFC 3339.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Only where the shadow policies disagree ("on").
    #[serde(default)]
    shadow: String,
    /// The page before this sequence number.
    before: Option<u64>,
}

fn entity_field(text: &str, field: &str) -> Result<Option<EntityRef>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    EntityRef::parse(text)
        .map(Some)
        .ok_or_else(|| PageError::Bad(format!("{field}: {text:?} is not Type::id")))
}

fn time_field(text: &str, field: &str) -> Result<Option<UnixMillis>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    UnixMillis::parse_rfc3339(text)
        .map(Some)
        .ok_or_else(|| PageError::Bad(format!("{field}: {text:?} is not an RFC 3339 time")))
}

fn text_field(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

impl LogQuery {
    fn filter(&self) -> Result<Filter, PageError> {
        let decision = text_field(&self.decision).map(|d| d.to_ascii_uppercase());
        if let Some(d) = &decision
            && d != "ALLOW"
            && d != "DENY"
        {
            return Err(PageError::Bad(format!(
                "decision: {d:?} is neither ALLOW nor DENY"
            )));
        }
        Ok(Filter {
            principal: entity_field(&self.principal, "principal")?,
            action: text_field(&self.action),
            resource: entity_field(&self.resource, "resource")?,
            reason: text_field(&self.reason),
            approval: text_field(&self.approval),
            decision,
            since: time_field(&self.since, "since")?,
            until: time_field(&self.until, "until")?,
            shadow_disagreed: self.shadow == "on",
        })
    }

    /// This query's link for the page before `seq`.
    fn before(&self, seq: u64) -> String {
        let fields = [
            ("principal", &self.principal),
            ("action", &self.action),
            ("resource", &self.resource),
            ("decision", &self.decision),
            ("reason", &self.reason),
            ("approval", &self.approval),
            ("since", &self.since),
            ("until", &self.until),
            ("shadow", &self.shadow),
        ];
        let mut link = format!("/console/decisions?before={seq}");
        for (name, value) in fields {
            if !value.is_empty() {
                link.push_str(&format!("&{name}={}", pages::path_part(value)));
            }
        }
        link
    }
}

fn ledger_of(console: &Console) -> Result<Arc<Ledger>, PageError> {
    console.ledger().cloned().ok_or_else(|| {
        PageError::NotFound(
            "The ledger is off (--ledger off): there are no decisions to show.".into(),
        )
    })
}

pub(super) async fn list(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(query): Query<LogQuery>,
) -> Result<Page, PageError> {
    console
        .may(&session, "view_decisions", &console_resource())
        .await?;
    let ledger = ledger_of(&console)?;
    let filter = query.filter()?;
    let before = query.before;
    let found = tokio::task::spawn_blocking(move || ledger.newest(&filter, before, PAGE + 1))
        .await
        .map_err(|error| PageError::Failed(error.to_string()))??;
    // The pictures, on the first page: the last hour by minute, and the last day's denials.
    let pictures = match (query.before, console.ledger().cloned()) {
        (None, Some(ledger)) => {
            let now = console.now();
            tokio::task::spawn_blocking(move || {
                Ok::<_, warrant_ledger::LedgerError>((
                    ledger.activity(now, 60_000, 60)?,
                    ledger.activity(now, 3_600_000, 24)?,
                ))
            })
            .await
            .map_err(|error| PageError::Failed(error.to_string()))?
            .map(Some)?
        }
        _ => None,
    };
    let more = found.len() > PAGE;
    let rows = &found[..found.len().min(PAGE)];
    let field = |name: &str, label: &str, value: &str, hint: &str| {
        html! { label { (label) input type="text" name=(name) value=(value) placeholder=(hint); } }
    };
    let body = html! {
        @if let Some((hour, day)) = &pictures {
            div.pictures {
                div {
                    h2 { "The last hour, by minute" }
                    (charts::decisions_over_time("decisions-over-time", &hour.buckets.iter().map(|(start, allows, denies)| {
                        (pages::time(*start).get(11..16).unwrap_or_default().to_owned(), *allows, *denies)
                    }).collect::<Vec<_>>()))
                }
                div {
                    h2 { "Denials by reason, the last day" }
                    @if day.deny_reasons.is_empty() { p.muted { "No denial." } }
                    @else { (charts::bars("denials-by-reason", &day.deny_reasons.iter().take(10).cloned().collect::<Vec<_>>())) }
                }
            }
        }
        form.filters method="get" action="/console/decisions" {
            (field("principal", "Principal", &query.principal, "Agent::procurement-agent"))
            (field("action", "Action", &query.action, "read"))
            (field("resource", "Resource", &query.resource, "Dataset::sales-2026"))
            label { "Outcome" select name="decision" {
                option value="" selected[query.decision.is_empty()] { "any" }
                option value="ALLOW" selected[query.decision.eq_ignore_ascii_case("allow")] { "ALLOW" }
                option value="DENY" selected[query.decision.eq_ignore_ascii_case("deny")] { "DENY" }
            } }
            (field("reason", "Reason", &query.reason, "warrant:approval-expired"))
            (field("approval", "Approval or ticket", &query.approval, "CHG-1042"))
            (field("since", "Since", &query.since, "2026-12-01T00:00:00Z"))
            (field("until", "Until", &query.until, ""))
            label { "Shadow disagrees" input type="checkbox" name="shadow" checked[query.shadow == "on"]; }
            button type="submit" { "Search" }
        }
        div data-live=[query.before.is_none().then_some("decisions")] {
            table #decisions {
                thead { tr { th { "Time" } th { "Outcome" } th { "Principal" } th { "Action" } th { "Resource" } th { "Reasons" } th { "Decision" } } }
                tbody {
                    @for stored in rows { (row(stored)) }
                }
            }
            @if rows.is_empty() { p.muted { "No decision matches." } }
        }
        @if more {
            @if let Some(last) = rows.last() {
                p { a #older href=(query.before(last.seq)) { "Older decisions" } }
            }
        }
    };
    Ok(Page(pages::layout(
        "Decisions",
        Section::Decisions,
        &session,
        body,
    )))
}

fn row(stored: &StoredRecord) -> Markup {
    let record = &stored.record;
    html! {
        tr {
            td { (record.time) }
            td { (pages::outcome(&record.decision)) }
            td { (pages::identity_link(&record.principal)) }
            td { code { (record.action) } }
            td { code { (record.resource) } }
            td { @for reason in &record.reasons { code.reason { (reason) } " " } }
            td { (pages::decision_link(&record.decision_id)) }
        }
    }
}

pub(super) async fn page(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Result<Page, PageError> {
    console
        .may(&session, "view_decisions", &console_resource())
        .await?;
    let ledger = ledger_of(&console)?;
    let control = Arc::clone(&console.control);
    let (stored, proof, requests, uses) = tokio::task::spawn_blocking(move || {
        let Some(stored) = ledger.get(&id)? else {
            return Ok::<_, PageError>(None);
        };
        let proof = ledger.proof(&id)?;
        let requests: Vec<_> = control
            .approval_requests(None, None)?
            .into_iter()
            .filter(|r| {
                r.decision_id.as_deref() == Some(id.as_str())
                    || stored
                        .record
                        .approval
                        .as_ref()
                        .is_some_and(|a| r.approval_id.as_deref() == Some(a.id.as_str()))
            })
            .collect();
        let uses = match &stored.record.approval {
            Some(approval) => ledger.newest(
                &Filter {
                    approval: Some(approval.id.clone()),
                    decision: Some("ALLOW".into()),
                    ..Filter::default()
                },
                None,
                USES,
            )?,
            None => Vec::new(),
        };
        Ok(Some((stored, proof, requests, uses)))
    })
    .await
    .map_err(|error| PageError::Failed(error.to_string()))??
    .ok_or_else(|| PageError::NotFound("The ledger holds no decision with this id.".into()))?;
    let (public_key, key_id) = console.ledger().map(|l| l.public_key()).unwrap_or_default();
    let record = &stored.record;
    let body = html! {
        p { (pages::outcome(&record.decision)) " " code { (record.principal) } " " code { (record.action) } " " code { (record.resource) } " at " (record.time) }
        h2 { "Story" }
        div.card #story {
            p { "Decided " @if record.answered_from_cache { "from the cache (the same answer a fresh evaluation gives)" } @else { "by evaluating the policies" } " with reasons "
                @for reason in &record.reasons { code.reason { (reason) } " " } "." }
            @if let Some(advice) = &record.approval_required {
                p { "An approval for " code { (advice.action) } " over " code { (advice.scope) } " would have allowed it." }
            }
            @for request in &requests {
                p.request {
                    "Approval request " code { (request.id) } " (" (request.justification) "), asked at " (pages::time(request.requested_at)) ": "
                    strong { (request.state.as_str()) }
                    @if let Some(by) = &request.decided_by { " by " code { (by) } }
                    @if let Some(at) = request.decided_at { " at " (pages::time(at)) }
                    @if let Some(reason) = &request.reason { " (" (reason) ")" }
                    @if let Some(approval) = &request.approval_id { ", granting approval " code { (approval) } }
                    "."
                }
            }
            @if !uses.is_empty() {
                p { "Uses of its approval (newest first):" }
                ul { @for used in &uses { li { (used.record.time) " " code { (used.record.action) } " " code { (used.record.resource) } " " (pages::decision_link(&used.record.decision_id)) } } }
            }
        }
        h2 { "Provenance" }
        div.card #provenance { dl {
            dt { "Identity" } dd { (pages::identity_link(&record.principal)) @if let Some(status) = &record.principal_status { " (" (status) ")" } }
            dt { "Owner" } dd { @match &record.owner { Some(owner) => { code { (owner.entity) } @if let Some(name) = &owner.name { " " (name) } }, None => { "none" } } }
            dt { "Approval" } dd { @match &record.approval {
                Some(a) => { code { (a.id) } ", ticket " code { (a.ticket) } ", approved by " code { (a.approver) } ", valid " (a.not_before) " to " (a.expires_at) },
                None => { @if let Some(presented) = &record.approval_presented { "presented " code { (presented) } ", not found" } @else { "none presented" } },
            } }
            dt { "Resource's scopes" } dd { @for scope in &record.resource_scopes { code { (scope) } " " } }
            dt { "Determining policies" } dd { @for reason in &record.reasons { code.reason { (reason) } " " } }
            @for link in &record.policy_links { dt { "Link" } dd { code { (link.link) } " of template " code { (link.template) } } }
            dt { "Policy version" } dd { code { (record.policy_version) } }
            dt { "Facts version" } dd { code { (record.facts_version) } }
            dt { "Context" } dd { code { (record.context) } }
            dt { "Caller" } dd { @if let Some(caller) = &record.caller { (caller) } @if let Some(identity) = &record.caller_identity { " (" (identity) ")" } }
            @if let Some(replica) = &record.replica { dt { "Replica" } dd { code { (replica) } } }
            dt { "Valid until" } dd { (record.valid_until) }
        } }
        h2 { "Proof" }
        div.card #proof { (proof_card(proof.as_ref(), &public_key, &key_id)) }
    };
    Ok(Page(pages::layout(
        "Decision",
        Section::Decisions,
        &session,
        body,
    )))
}

fn proof_card(proof: Option<&Proof>, public_key: &str, key_id: &str) -> Markup {
    let Some(proof) = proof else {
        return html! { p.unverified { "Its line could not be found to check." } };
    };
    html! {
        dl {
            dt { "Place in the chain" } dd { "record " (proof.seq) ", " code { (proof.segment) } " at byte " (proof.offset) }
            dt { "Chain hash" } dd { code { (proof.hash) } }
            dt { "Ledger key" } dd { "fingerprint " code #key-id { (key_id) } ", public key " code { (public_key) } }
            @match &proof.standing {
                Standing::Verified { checkpoint, records_after } => {
                    dt { "Signed by" } dd { "the checkpoint at record " (checkpoint.seq) " (" (records_after) " records later), " (checkpoint.time) }
                    dt { "Verdict" } dd.verified #verdict { "Signature verifies: this record is as it was written." }
                }
                Standing::NotYetSigned => {
                    dt { "Verdict" } dd.muted #verdict { "Not yet signed: no checkpoint covers it yet. Look again in a moment." }
                }
                Standing::DoesNotVerify(why) => {
                    dt { "Verdict" } dd.unverified #verdict { "Does not verify: " (why) ". Run " code { "warrant log verify" } "." }
                }
            }
        }
    }
}
