//! The approval inbox: what identities ask for, with what prompted it and what approving would
//! allow, and the forms to approve (with a note, a shorter duration, uses, a budget) or reject
//! it. Each request is shown only to a person the policies let decide it, and the decision goes
//! through the control plane with every rule the CLI has (separation of duties included),
//! recorded in the ledger naming them. The page updates itself when a request changes
//! (`events`, server-sent).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::charts;
use super::pages::{self, Section};
use super::{Console, Page, PageError, SignedIn, checked_csrf};
use warrant_control::requests::{ApprovalRequest, ApproverProof, RequestState, Verdict};

/// The most pending requests one inbox page shows.
const INBOX_PAGE: usize = 50;
/// The most recently decided requests it lists below them.
const RECENT: usize = 10;

#[derive(serde::Deserialize, Default)]
pub(super) struct InboxQuery {
    /// The request just decided here, to say so.
    done: Option<String>,
}

pub(super) async fn inbox(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(query): Query<InboxQuery>,
) -> Result<Page, PageError> {
    let control = Arc::clone(&console.control);
    let all = tokio::task::spawn_blocking(move || control.approval_requests(None, None))
        .await
        .map_err(|error| PageError::Failed(error.to_string()))??;
    let pending: Vec<&ApprovalRequest> = all
        .iter()
        .filter(|r| r.state == RequestState::Pending)
        .take(INBOX_PAGE)
        .collect();
    let decidable = console
        .may_each(
            &session,
            "decide_approval_request",
            pending.iter().map(|r| r.identity.clone()).collect(),
        )
        .await;
    let mut recent: Vec<&ApprovalRequest> = all
        .iter()
        .filter(|r| r.state != RequestState::Pending)
        .collect();
    recent.sort_by_key(|r| std::cmp::Reverse(r.decided_at.unwrap_or(r.expires_at)));
    recent.truncate(RECENT);
    // Decided requests are shown to those who may see their identity.
    let visible = console
        .may_each(
            &session,
            "view_identity",
            recent.iter().map(|r| r.identity.clone()).collect(),
        )
        .await;
    let recent: Vec<&ApprovalRequest> = recent
        .into_iter()
        .zip(visible)
        .filter_map(|(request, may)| may.then_some(request))
        .collect();
    let hidden = pending.len() - decidable.iter().filter(|d| **d).count();
    let now = console.now().0;
    let ages = pending_by_age(&all, now);
    let body = html! {
        @if let Some(done) = &query.done {
            @if let Some(request) = all.iter().find(|r| &r.id == done) {
                p.notice #done { "Request " code { (request.id) } " is now " strong { (request.state.as_str()) } "." }
            }
        }
        div data-live="approvals" {
            h2 { "Pending" }
            @if ages.iter().any(|(_, n)| *n > 0) { (charts::bars("pending-by-age", &ages)) }
            @if pending.is_empty() {
                p.muted #inbox-empty { "Nothing is waiting for a decision." }
            }
            @for (request, may) in pending.iter().zip(&decidable) {
                @if *may {
                    (card(&console, request, &session.csrf, now))
                }
            }
            @if hidden > 0 {
                p.muted { (hidden) " more pending requests are for identities the policies do not let you decide." }
            }
            h2 { "Recently decided" }
            table #recent {
                thead { tr { th { "Request" } th { "Identity" } th { "Asked" } th { "State" } th { "By" } th { "Why" } } }
                tbody {
                    @for request in &recent {
                        tr {
                            td { code { (request.id) } }
                            td { (pages::identity_link(&request.identity)) }
                            td { code { (request.action) } " on " code { (request.resource) } }
                            td { (request.state.as_str()) }
                            td { @if let Some(by) = &request.decided_by { code { (by) } } }
                            td { @if let Some(reason) = &request.reason { (reason) } }
                        }
                    }
                }
            }
        }
    };
    Ok(Page(pages::layout(
        "Approval requests",
        Section::Approvals,
        &session,
        body,
    )))
}

/// Pending requests (all of them, not only this page's) by how long they have waited.
fn pending_by_age(all: &[ApprovalRequest], now: i64) -> Vec<(String, u64)> {
    let limits = [
        ("waiting under 5 min", 5 * 60_000),
        ("5 to 60 min", 3_600_000),
        ("1 to 24 h", 86_400_000),
        ("over a day", i64::MAX),
    ];
    let mut counts = vec![0u64; limits.len()];
    for request in all.iter().filter(|r| r.state == RequestState::Pending) {
        let waited = now - request.requested_at;
        if let Some(at) = limits.iter().position(|(_, limit)| waited < *limit) {
            counts[at] += 1;
        }
    }
    limits
        .iter()
        .zip(counts)
        .map(|((name, _), count)| ((*name).to_owned(), count))
        .collect()
}

/// One pending request: who asks, for what, why, what prompted it, what approving allows.
fn card(console: &Console, request: &ApprovalRequest, csrf: &str, now: i64) -> Markup {
    let prompted = request
        .decision_id
        .as_deref()
        .zip(console.ledger())
        .and_then(|(id, ledger)| ledger.get(id).ok().flatten());
    let action_path = format!("/console/approvals/{}", pages::path_part(&request.id));
    html! {
        div.card.request id=(format!("request-{}", request.id)) {
            p {
                (pages::identity_link(&request.identity))
                " asks to " code.action { (request.action) } " on " code { (request.resource) }
                " (every resource in " code { (request.scope) } ") for " (pages::duration(request.duration_ms)) "."
            }
            dl {
                dt { "Why" } dd.justification { (request.justification) }
                @if let Some(ticket) = &request.ticket { dt { "Ticket" } dd { code { (ticket) } } }
                @if let Some(human) = &request.on_behalf_of { dt { "On behalf of" } dd { code { (human) } } }
                dt { "Asked" } dd { (pages::time(request.requested_at)) }
                dt { "Expires" } dd { "in " (pages::duration(request.expires_at - now)) " unless decided" }
                dt { "Request" } dd { code { (request.id) } }
                @if let Some(id) = &request.decision_id {
                    dt { "Prompted by" } dd { (pages::decision_link(id)) }
                }
                @if let Some(stored) = &prompted {
                    dt { "Its context" } dd { code { (stored.record.context) } }
                    @if let Some(advice) = &stored.record.approval_required {
                        dt { "Approving allows" }
                        dd.hypothetical {
                            "That decision was a deny that an approval for " code { (advice.action) }
                            " over " code { (advice.scope) } " would have allowed: approving lets "
                            code { (request.identity) } " " code { (request.action) } " any resource in "
                            code { (request.scope) } " until it expires, unless another rule forbids it."
                        }
                    }
                }
            }
            form method="post" action=(action_path) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="verdict" value="approve";
                label { "Note (why you approve)" input type="text" name="note" size="28"; }
                label { "Minutes (at most " (request.duration_ms / 60_000) ")" input type="number" name="minutes" min="1" max=(request.duration_ms / 60_000); }
                label { "Uses (blank: no limit)" input type="number" name="max_uses" min="1"; }
                label { "Budget attribute" input type="text" name="budget_attribute" size="10"; }
                label { "Budget total" input type="number" name="budget_total" min="0"; }
                button type="submit" class="approve" { "Approve" }
            }
            form method="post" action=(action_path) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="verdict" value="reject";
                label { "Reason (required)" input type="text" name="reason" size="28" required; }
                button type="submit" class="reject danger" { "Reject" }
            }
        }
    }
}

#[derive(serde::Deserialize)]
pub(super) struct DecideForm {
    #[serde(default)]
    csrf: String,
    verdict: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    minutes: String,
    #[serde(default)]
    max_uses: String,
    #[serde(default)]
    budget_attribute: String,
    #[serde(default)]
    budget_total: String,
    #[serde(default)]
    reason: String,
}

/// A number a form field may leave blank.
fn optional_number(text: &str, field: &str) -> Result<Option<u64>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| PageError::Bad(format!("{field}: {text:?} is not a whole number")))
}

pub(super) async fn decide(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Result<Response, PageError> {
    checked_csrf(&session, &form.csrf)?;
    let control = Arc::clone(&console.control);
    let request = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || control.approval_request(&id))
            .await
            .map_err(|error| PageError::Failed(error.to_string()))??
    };
    console
        .may(&session, "decide_approval_request", &request.identity)
        .await?;
    let approver = session.human.clone();
    let approver_proof = ApproverProof::SignedIn(session.proof.clone());
    let verdict = match form.verdict.as_str() {
        "approve" => Verdict::Approve {
            approver,
            approver_proof,
            duration_ms: optional_number(&form.minutes, "minutes")?.map(|minutes| {
                i64::try_from(minutes)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(60_000)
            }),
            max_uses: optional_number(&form.max_uses, "max_uses")?,
            budget: match (
                form.budget_attribute.trim(),
                optional_number(&form.budget_total, "budget_total")?,
            ) {
                ("", None) => None,
                ("", Some(_)) => {
                    return Err(PageError::Bad(
                        "budget_attribute: required with a budget total".into(),
                    ));
                }
                (_, None) => {
                    return Err(PageError::Bad(
                        "budget_total: required with a budget attribute".into(),
                    ));
                }
                (attribute, Some(total)) => Some(warrant_domain::Budget {
                    attribute: attribute.to_owned(),
                    total,
                }),
            },
            note: Some(form.note),
        },
        "reject" => Verdict::Reject {
            approver,
            approver_proof,
            reason: form.reason,
        },
        other => {
            return Err(PageError::Bad(format!(
                "verdict: {other:?} is neither approve nor reject"
            )));
        }
    };
    let control = Arc::clone(&console.control);
    let decided =
        tokio::task::spawn_blocking(move || control.decide_approval_request(&id, verdict))
            .await
            .map_err(|error| PageError::Failed(error.to_string()))??;
    tracing::info!(request = decided.id, state = decided.state.as_str(), by = %session.human, "approval request decided in the console");
    Ok(Redirect::to(&format!(
        "/console/approvals?done={}",
        pages::path_part(&decided.id)
    ))
    .into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct EventsQuery {
    topic: String,
}

/// Server-sent events: `approvals` when a request changes, `decisions` (at most once a second)
/// when a decision is recorded. Each says only that something changed; the page fetches itself
/// again.
pub(super) async fn events(
    State(console): State<Arc<Console>>,
    SignedIn(_session): SignedIn,
    Query(query): Query<EventsQuery>,
) -> Result<Response, PageError> {
    use tokio_stream::StreamExt as _;
    let keep_alive = KeepAlive::new().interval(Duration::from_secs(15));
    match query.topic.as_str() {
        "approvals" => {
            let changes = tokio_stream::wrappers::WatchStream::from_changes(
                console.control.watch_approval_requests(),
            );
            let stream = changes.map(|n| {
                Ok::<_, std::convert::Infallible>(
                    Event::default().event("approvals").data(n.to_string()),
                )
            });
            Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
        }
        "decisions" => {
            let (receiver, listening) = console.decider.subscribe();
            let stream = tokio_stream::wrappers::BroadcastStream::new(receiver)
                .throttle(Duration::from_secs(1))
                .map(move |_| {
                    // Held as long as the stream: the decider feeds the tail while it lives.
                    let _listening = &listening;
                    Ok::<_, std::convert::Infallible>(Event::default().event("decisions").data("1"))
                });
            Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
        }
        other => Err(PageError::Bad(format!(
            "topic: {other:?} is neither approvals nor decisions"
        ))),
    }
}
