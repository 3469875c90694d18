//! The decision log for people: a search over the ledger (principal, action, resource, outcome,
//! reason, approval, time), newest first and paged; and one decision's page, which tells its
//! story (the approval request it prompted and who decided it, the approval's uses), its
//! provenance (owner, approval, scopes, the policies and links that decided) and its proof (its
//! place in the chain, the checkpoint that signs it, whether that verifies with the ledger's key).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use maud::{Markup, html};

use super::charts;
use super::fleet;
use super::pages::{self, Section};
use super::{Console, Page, PageError, SignedIn, console_resource};
use warrant_domain::EntityRef;
use warrant_domain::clock::UnixMillis;
use warrant_ledger::{Filter, Ledger, Order, Proof, Record, Standing, StoredRecord};
use warrant_proto as proto;

/// Rows per page of the log.
const PAGE: usize = 50;
/// The same, as the `ListDecisions` API counts.
const PAGE_SIZE: u32 = 50;
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

    /// This query's link for the decisions before `time` (a fleet's pages go back by time).
    fn until_before(&self, time: &str) -> String {
        self.link(None, Some(time))
    }

    /// This query's link for the page before `seq`.
    fn before(&self, seq: u64) -> String {
        self.link(Some(seq), None)
    }

    fn link(&self, before: Option<u64>, until: Option<&str>) -> String {
        let fields = [
            ("principal", self.principal.as_str()),
            ("action", &self.action),
            ("resource", &self.resource),
            ("decision", &self.decision),
            ("reason", &self.reason),
            ("approval", &self.approval),
            ("since", &self.since),
            ("until", until.unwrap_or(&self.until)),
            ("shadow", &self.shadow),
        ];
        let mut parts: Vec<String> = before
            .map(|seq| format!("before={seq}"))
            .into_iter()
            .collect();
        for (name, value) in fields {
            if !value.is_empty() {
                parts.push(format!("{name}={}", pages::path_part(value)));
            }
        }
        format!("/console/decisions?{}", parts.join("&"))
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
    let local = filter.clone();
    let found = tokio::task::spawn_blocking(move || {
        ledger.find(&local, Order::NewestFirst { before }, PAGE + 1)
    })
    .await
    .map_err(|error| PageError::Failed(error.to_string()))??;
    let fleet = console
        .peers
        .as_ref()
        .filter(|_| console.control.replication().is_some());
    let (rows, more, unreachable) = rows_of(&console, fleet, &filter, found).await;
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
        @for (replica, why) in &unreachable {
            p.unverified.unreachable { "Replica " code { (replica) } " could not be asked; its decisions are missing here: " (why) }
        }
        div data-live=[(query.before.is_none() && query.until.is_empty()).then_some("decisions")] {
            table #decisions {
                thead { tr { th { "Time" } th { "Outcome" } th { "Principal" } th { "Action" } th { "Resource" } th { "Reasons" }
                    @if fleet.is_some() { th { "Replica" } } th { "Decision" } } }
                tbody {
                    @for row in &rows { (row_of(row, fleet.is_some())) }
                }
            }
            @if rows.is_empty() { p.muted { "No decision matches." } }
        }
        @if more {
            @if let Some(last) = rows.last() {
                p { a #older href=(match last.seq {
                    Some(seq) if fleet.is_none() => query.before(seq),
                    _ => query.until_before(&last.record.time),
                }) { "Older decisions" } }
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

/// A row of the log: a record, where its page is (this replica's, or the one that decided it),
/// and its place in this replica's chain.
struct Row {
    record: Record,
    link: Option<String>,
    seq: Option<u64>,
}

/// This replica's page of records and, in a fleet, the others' merged in by time: the rows,
/// whether more follow, and the replicas that could not be asked.
async fn rows_of(
    console: &Console,
    fleet: Option<&fleet::Peers>,
    filter: &Filter,
    found: Vec<StoredRecord>,
) -> (Vec<Row>, bool, Vec<(String, String)>) {
    let mut more = found.len() > PAGE;
    let mut rows: Vec<Row> = found
        .into_iter()
        .take(PAGE)
        .map(|stored| Row {
            link: Some(format!(
                "/console/decisions/{}",
                pages::path_part(&stored.record.decision_id)
            )),
            seq: Some(stored.seq),
            record: stored.record,
        })
        .collect();
    let Some(peers) = fleet else {
        return (rows, more, Vec::new());
    };
    let (remote, unreachable) =
        fleet::others(&console.control, peers, remote_request(filter)).await;
    for (record, member) in remote {
        if filter.matches(&record) {
            rows.push(Row {
                link: member.console_url.as_ref().map(|url| {
                    format!("{url}/decisions/{}", pages::path_part(&record.decision_id))
                }),
                seq: None,
                record,
            });
        }
    }
    let time = |row: &Row| UnixMillis::parse_rfc3339(&row.record.time).map(|t| t.0);
    rows.sort_by_key(|row| std::cmp::Reverse(time(row)));
    more |= rows.len() > PAGE;
    rows.truncate(PAGE);
    (rows, more, unreachable)
}

/// The filter as another replica's `ListDecisions` takes it, newest first.
fn remote_request(filter: &Filter) -> proto::ListDecisionsRequest {
    let entity = |e: &EntityRef| proto::EntityRef {
        r#type: e.type_name.clone(),
        id: e.id.clone(),
    };
    proto::ListDecisionsRequest {
        principal: filter.principal.as_ref().map(entity),
        approval: filter.approval.clone().unwrap_or_default(),
        decision: match filter.decision.as_deref() {
            Some("ALLOW") => proto::Decision::Allow as i32,
            Some("DENY") => proto::Decision::Deny as i32,
            _ => proto::Decision::Unspecified as i32,
        },
        since: filter.since.map(warrant_proto::convert::timestamp),
        until: filter.until.map(warrant_proto::convert::timestamp),
        page_size: PAGE_SIZE,
        page_token: String::new(),
        newest_first: true,
        action: filter.action.clone().unwrap_or_default(),
        resource: filter.resource.as_ref().map(entity),
        reason: filter.reason.clone().unwrap_or_default(),
    }
}

fn row_of(row: &Row, fleet: bool) -> Markup {
    let record = &row.record;
    html! {
        tr {
            td { (record.time) }
            td { (pages::outcome(&record.decision)) }
            td { (pages::identity_link(&record.principal)) }
            td { code { (record.action) } }
            td { code { (record.resource) } }
            td { @for reason in &record.reasons { code.reason { (reason) } " " } }
            @if fleet { td { code { (record.replica.as_deref().unwrap_or("")) } } }
            td { @match &row.link {
                Some(link) => { a href=(link) { code { (pages::short(&record.decision_id)) } } },
                None => { code { (pages::short(&record.decision_id)) } },
            } }
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
        // The uses of the approval it was decided under, or that its request became.
        let mut approvals: Vec<String> = stored
            .record
            .approval
            .iter()
            .map(|a| a.id.clone())
            .chain(requests.iter().filter_map(|r| r.approval_id.clone()))
            .collect();
        approvals.sort();
        approvals.dedup();
        let mut uses = Vec::new();
        for approval in approvals {
            uses.extend(ledger.find(
                &Filter {
                    approval: Some(approval),
                    decision: Some("ALLOW".into()),
                    ..Filter::default()
                },
                Order::NewestFirst { before: None },
                USES,
            )?);
        }
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
