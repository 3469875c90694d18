//! The access review, for people: the console's page (`/console/review`: the findings and their
//! pictures for those who may see the decision log, and for everyone signed in, the identities
//! and approvals they own that wait for their attestation, with Confirm and Revoke), and the
//! same findings as the self-contained HTML report `warrant review` writes (`report_html`: one
//! file, inline CSS and SVG, no script, no external asset).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::pages::{self, Section};
use super::{Console, Page, PageError, SignedIn, checked_csrf, console_resource};
use crate::api::review::{Attested, Verdict};
use warrant_domain::{Caller, Effect, EntityRef};
use warrant_review::{Finding, Kind, ReviewSettings, Summary};

/// Findings of one kind a page shows (the report's files hold them all).
pub(crate) const SHOWN_PER_KIND: usize = 200;
/// A review the console ran is shown again for this long before it is run anew (at a million
/// identities a review takes about half a minute: people should not each wait for one).
const FRESH_FOR: Duration = Duration::from_secs(300);
/// Findings kept per owner for their attestation list, and owners kept.
const PER_OWNER: usize = 200;
const OWNERS: usize = 100_000;

/// A review as the console holds it: the summary, the first findings of each kind, and the
/// findings that wait on each owner.
pub(crate) struct Held {
    pub summary: Summary,
    pub shown: BTreeMap<Kind, Vec<Finding>>,
    by_owner: std::collections::HashMap<String, Vec<Finding>>,
    at: Instant,
}

impl Held {
    /// Keeps `finding` if there is room for it.
    pub(crate) fn keep(&mut self, finding: Finding) {
        let attestable = matches!(
            finding.kind,
            Kind::NotAttested
                | Kind::ApprovalUnused
                | Kind::ApprovalUnderused
                | Kind::ApprovalTooLong
        );
        if attestable
            && let Some(owner) = &finding.owner
            && (self.by_owner.len() < OWNERS || self.by_owner.contains_key(owner))
        {
            let theirs = self.by_owner.entry(owner.clone()).or_default();
            if theirs.len() < PER_OWNER {
                theirs.push(finding.clone());
            }
        }
        let shown = self.shown.entry(finding.kind).or_default();
        if shown.len() < SHOWN_PER_KIND {
            shown.push(finding);
        }
    }

    pub(crate) fn new() -> Held {
        Held {
            summary: Summary::default(),
            shown: BTreeMap::new(),
            by_owner: std::collections::HashMap::new(),
            at: Instant::now(),
        }
    }
}

/// The console's last review, and what was attested since it was made (left out of the pages
/// until the next review, which counts them).
#[derive(Default)]
pub(super) struct Reviewed {
    held: Mutex<Option<Arc<Held>>>,
    attested_since: Mutex<std::collections::HashSet<(Kind, String)>>,
}

impl Reviewed {
    fn attested(&self, kind: Kind, subject: &str) {
        self.attested_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((kind, subject.to_owned()));
    }

    /// `findings` without those attested since the review.
    fn current(&self, findings: &[Finding]) -> Vec<Finding> {
        let attested = self
            .attested_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        findings
            .iter()
            .filter(|f| !attested.contains(&(f.kind, f.subject.clone())))
            .cloned()
            .collect()
    }
}

impl Console {
    /// The last review, or a new one if it is older than `FRESH_FOR`.
    async fn reviewed(&self) -> Result<Arc<Held>, PageError> {
        let held = self
            .reviewed
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(held) = held.filter(|h| h.at.elapsed() < FRESH_FOR) {
            return Ok(held);
        }
        let decider = Arc::clone(&self.decider);
        let settings: ReviewSettings = self.review.clone();
        let held = tokio::task::spawn_blocking(move || {
            let mut held = Held::new();
            let window = settings.dormant_ms();
            held.summary = crate::api::review::run(&decider, &settings, window, &mut |finding| {
                held.keep(finding);
            });
            Arc::new(held)
        })
        .await
        .map_err(|error| PageError::Failed(error.to_string()))?;
        let mut kept = self
            .reviewed
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // What was attested while it ran is in it (the attestations were on record before).
        self.reviewed
            .attested_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        *kept = Some(Arc::clone(&held));
        Ok(held)
    }
}

pub(super) async fn page(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
) -> Result<Response, PageError> {
    let may_see_all = console
        .may_each(&session, "view_decisions", vec![console_resource()])
        .await
        .first()
        .copied()
        .unwrap_or(false);
    let held = console.reviewed().await?;
    let mine = held
        .by_owner
        .get(&format!(
            "{}::{}",
            session.human.type_name, session.human.id
        ))
        .map(|theirs| console.reviewed.current(theirs))
        .unwrap_or_default();
    let shown: BTreeMap<Kind, Vec<Finding>> = held
        .shown
        .iter()
        .map(|(kind, findings)| (*kind, console.reviewed.current(findings)))
        .collect();
    let body = html! {
        section #attest {
            h2 { "Waiting for your attestation" }
            @if mine.is_empty() {
                p.empty { "Nothing: every identity and approval you own is attested and in use." }
            } @else {
                p { "Confirm what is still needed; revoke what is not (an identity is suspended, an approval revoked). Each answer is a decision on record." }
                table {
                    thead { tr { th { "What" } th { "Finding" } th { "Attest" } } }
                    tbody {
                        @for finding in &mine {
                            tr {
                                td { code { (finding.subject) } }
                                td { (finding.kind.title()) ": " (finding.detail) }
                                td { (attest_form(&session.csrf, finding)) }
                            }
                        }
                    }
                }
            }
        }
        @if may_see_all {
            p.muted { "Reviewed at " (held.summary.generated_at) " (again every five minutes); counts do not yet include what was attested since." }
            (findings_body(&held.summary, &shown))
        }
    };
    Ok(Page(pages::layout(
        "Access review",
        Section::Review,
        &session,
        body,
    ))
    .into_response())
}

fn attest_form(csrf: &str, finding: &Finding) -> Markup {
    html! {
        form.inline method="post" action="/console/review/attest" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="subject" value=(finding.subject);
            input type="hidden" name="kind" value=(finding.kind.as_str());
            button type="submit" name="verdict" value="confirm" { "Confirm" }
            " "
            button.danger type="submit" name="verdict" value="revoke" { "Revoke" }
        }
    }
}

#[derive(serde::Deserialize)]
pub(super) struct AttestForm {
    #[serde(default)]
    csrf: String,
    subject: String,
    kind: String,
    verdict: String,
}

pub(super) async fn attest(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Form(form): Form<AttestForm>,
) -> Result<Response, PageError> {
    checked_csrf(&session, &form.csrf)?;
    let verdict = Verdict::parse(&form.verdict)
        .ok_or_else(|| PageError::Bad("verdict: must be confirm or revoke".into()))?;
    let attested = match Kind::parse(&form.kind) {
        Some(Kind::NotAttested) => Attested::Identity(
            EntityRef::parse(&form.subject)
                .ok_or_else(|| PageError::Bad("subject: not Type::id".into()))?,
        ),
        Some(_) => Attested::Approval(form.subject.clone()),
        None => return Err(PageError::Bad("kind: not a finding's kind".into())),
    };
    let caller = Caller {
        address: Some(format!("console session of {}", session.human)),
        identity: None,
        identity_from: None,
    };
    let attestation = crate::api::review::attest(
        &console.decider,
        &console.control,
        session.human.clone(),
        attested,
        verdict,
        None,
        caller,
    )
    .await
    .map_err(|error| PageError::Refused(error.to_string()))?;
    if attestation.decision.effect != Effect::Allow {
        return Err(PageError::Forbidden {
            action: "attest".into(),
            resource: EntityRef::parse(&form.subject)
                .unwrap_or_else(|| EntityRef::new("Approval", &form.subject)),
            reasons: attestation.decision.reasons.clone(),
            decision_id: attestation.decision.decision_id.to_string(),
        });
    }
    // The attestation is on record: the pages leave it out until the next review counts it.
    if let Some(kind) = Kind::parse(&form.kind) {
        console.reviewed.attested(kind, &form.subject);
    }
    Ok(Redirect::to("/console/review").into_response())
}

/// The summary's pictures and the findings by kind.
fn findings_body(summary: &Summary, shown: &BTreeMap<Kind, Vec<Finding>>) -> Markup {
    let total: u64 = summary.counts.values().sum();
    let mut types: BTreeMap<&str, Vec<(String, u64, u64)>> = BTreeMap::new();
    for day in &summary.days {
        for kind in day.by_type.keys() {
            types.entry(kind).or_default();
        }
    }
    for (kind, columns) in &mut types {
        for day in &summary.days {
            let (allowed, denied) = day.by_type.get(*kind).copied().unwrap_or((0, 0));
            columns.push((day.day.clone(), allowed, denied));
        }
    }
    let ages: Vec<(String, u64)> = summary
        .approvals_by_age
        .iter()
        .flat_map(|bucket| {
            [
                (format!("{}: used", bucket.label), bucket.used),
                (format!("{}: never used", bucket.label), bucket.unused),
            ]
        })
        .collect();
    html! {
        section #summary {
            h2 { (total) " findings" }
            p {
                (summary.active_identities) " active identities of " (summary.identities) "; "
                (summary.approvals) " approvals; " (summary.links) " template links; "
                (summary.decisions) " decisions on record"
                @if let Some(since) = &summary.ledger_since { " since " (since) }
                ". Window from " (summary.since) " to " (summary.generated_at) "."
            }
            @if !summary.ledger_covers_window {
                p.warning { "The ledger does not reach back to the window's start: what was never used in the window is not reported." }
            }
            table.counts {
                tbody {
                    @for (kind, count) in &summary.counts {
                        tr class=[(*count > 0).then_some("found")] {
                            td { a href=(format!("#{}", kind.as_str())) { (kind.title()) } }
                            td.number { (count) }
                        }
                    }
                }
            }
        }
        section #pictures {
            h2 { "Decisions per day, by identity type" }
            @for (kind, columns) in &types {
                h3 { (kind) }
                (super::charts::decisions_over_time(&format!("days-{kind}"), columns))
            }
            h2 { "Denials by reason" }
            (super::charts::bars("denials-by-reason", &summary.denied_by_reason.iter().take(15).cloned().collect::<Vec<_>>()))
            h2 { "Valid approvals by age and use" }
            (super::charts::bars("approvals-by-age", &ages))
            @if !summary.not_attested_by_owner.is_empty() {
                h2 { "Owners who have not attested" }
                (super::charts::bars("not-attested-by-owner", &summary.not_attested_by_owner.iter().take(15).cloned().collect::<Vec<_>>()))
            }
        }
        @for (kind, findings) in shown {
            section.findings id=(kind.as_str()) {
                h2 { (kind.title()) " (" (summary.counts.get(kind).copied().unwrap_or(0)) ")" }
                table {
                    thead { tr { th { "Subject" } th { "Owner" } th { "Finding" } th { "Fix" } } }
                    tbody {
                        @for finding in findings {
                            tr {
                                td { code { (finding.subject) } @if let Some(identity) = &finding.identity { br; small { (identity) } } }
                                td { @if let Some(owner) = &finding.owner { code { (owner) } } }
                                td { (finding.detail) }
                                td { code.fix { (finding.fix) } }
                            }
                        }
                    }
                }
                @let more = summary.counts.get(kind).copied().unwrap_or(0).saturating_sub(findings.len() as u64);
                @if more > 0 {
                    p.more { "And " (more) " more: every finding is in findings.csv and findings.json (warrant review --out DIR)." }
                }
            }
        }
    }
}

/// The report `warrant review` writes: one HTML file that needs nothing else.
pub(crate) fn report_html(summary: &Summary, shown: &BTreeMap<Kind, Vec<Finding>>) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Access review " (summary.generated_at) " · Warrant" }
                style { (PreEscaped(pages::CSS)) }
            }
            body {
                header { span.brand { "Warrant" } span.who { "Access review" } }
                main {
                    h1 { "Access review, " (summary.generated_at.get(..10).unwrap_or(&summary.generated_at)) }
                    (findings_body(summary, shown))
                }
            }
        }
    }
    .into_string()
}
