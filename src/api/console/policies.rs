//! The policies in force, for the people who write them: the set's version and when it was
//! loaded, the last reload's error with its file and line, the loader's warnings, every policy
//! and template with its text, the template links, and what the shadow (candidate) set would
//! have decided otherwise. And a playground: a Check decided against the live facts and
//! explained policy by policy, which is not a decision: nothing is recorded and no approval's
//! use is taken.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use maud::{Markup, html};

use super::pages::{self, Section};
use super::{Console, Page, PageError, SignedIn, console_resource};
use warrant_domain::{CheckRequest, EntityRef};
use warrant_engine::engine::explain::{Explanation, PolicyOutcome};
use warrant_ledger::{Filter, Order};

/// Disagreements of the shadow set listed.
const DISAGREEMENTS: usize = 20;

#[derive(serde::Deserialize, Default)]
pub(super) struct PlaygroundQuery {
    #[serde(default)]
    principal: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    approval: String,
    /// A JSON object.
    #[serde(default)]
    context: String,
}

impl PlaygroundQuery {
    fn asked(&self) -> bool {
        !(self.principal.is_empty() && self.action.is_empty() && self.resource.is_empty())
    }

    /// The request it asks, or what is wrong with it.
    fn request(&self) -> Result<CheckRequest, String> {
        let entity = |text: &str, field: &str| {
            EntityRef::parse(text.trim())
                .ok_or_else(|| format!("{field}: {text:?} is not Type::id"))
        };
        let context = match self.context.trim() {
            "" => BTreeMap::new(),
            text => {
                let value: serde_json::Value =
                    serde_json::from_str(text).map_err(|error| format!("context: {error}"))?;
                let serde_json::Value::Object(fields) = value else {
                    return Err("context: a JSON object".into());
                };
                let mut context = BTreeMap::new();
                for (key, value) in &fields {
                    if let Some(value) =
                        crate::api::json_context_value(value, &format!("context.{key}"))
                            .map_err(|invalid| format!("{}: {}", invalid.field, invalid.message))?
                    {
                        context.insert(key.clone(), value);
                    }
                }
                context
            }
        };
        Ok(CheckRequest {
            principal: entity(&self.principal, "principal")?,
            action: self.action.trim().to_owned(),
            resource: entity(&self.resource, "resource")?,
            context,
            approval_id: Some(self.approval.trim().to_owned()).filter(|a| !a.is_empty()),
            ..CheckRequest::default()
        })
    }
}

pub(super) async fn page(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(query): Query<PlaygroundQuery>,
) -> Result<Page, PageError> {
    console
        .may(&session, "view_policies", &console_resource())
        .await?;
    let status = console.control.status();
    let policies = Arc::clone(&console.decider.engine().snapshot().policies);
    let shadow = console.decider.engine().shadow();
    let (agreed, disagreed) = console.decider.metrics().shadow_counts();
    let ledger = console.ledger().cloned();
    let disagreements = match (&shadow, ledger) {
        (Some(_), Some(ledger)) => tokio::task::spawn_blocking(move || {
            ledger.find(
                &Filter {
                    shadow_disagreed: true,
                    ..Filter::default()
                },
                Order::NewestFirst { before: None },
                DISAGREEMENTS,
            )
        })
        .await
        .map_err(|error| PageError::Failed(error.to_string()))??,
        _ => Vec::new(),
    };
    let played = if query.asked() {
        let engine = Arc::clone(console.control.engine());
        Some(match query.request() {
            Ok(request) => tokio::task::spawn_blocking(move || {
                engine
                    .explain(&request)
                    .map_err(|invalid| format!("{}: {}", invalid.field, invalid.message))
            })
            .await
            .map_err(|error| PageError::Failed(error.to_string()))?,
            Err(why) => Err(why),
        })
    } else {
        None
    };
    let body = html! {
        div.card #policy-set { dl {
            dt { "Version" } dd { code { (status.policy_version) } }
            dt { "Loaded" } dd { (pages::time(status.policies_loaded_at.0)) }
            dt { "Policies" } dd { (status.policy_count) " policies, " (status.template_count) " templates, " (status.link_count) " links" }
            dt { "Reloads" } dd { (status.reloads) " since start, " (status.reload_failures) " failed" }
            @if let Some((at, error)) = &status.last_reload_error {
                dt { "Last reload error" } dd.unverified #reload-error { (pages::time(at.0)) ": " pre { (error) } }
            }
            @if let Some(replica) = &status.replica {
                dt { "This replica" } dd #replica {
                    code { (replica.id) } ": change " (replica.applied_change) " of the fleet's " (replica.head_change) " applied; facts known fresh as of "
                    (pages::time(replica.fresh_as_of.0))
                    @if replica.stale { " " span.unverified { "(stale: every decision is a deny)" } }
                }
            }
            @if let Some(shadow) = &shadow {
                dt { "Shadow set" } dd { code { (shadow.version()) } ": " (agreed) " decisions agreed, " (disagreed) " would have gone the other way" }
            }
        } }
        h2 { "Playground" }
        p.muted { "Decided against the live facts and explained policy by policy. Not a decision: nothing is recorded and no approval's use is taken." }
        form.filters #playground method="get" action="/console/policies" {
            label { "Principal" input type="text" name="principal" value=(query.principal) placeholder="ApiKey::pipeline-etl"; }
            label { "Action" input type="text" name="action" value=(query.action) placeholder="read"; }
            label { "Resource" input type="text" name="resource" value=(query.resource) placeholder="Dataset::sales-2026"; }
            label { "Approval" input type="text" name="approval" value=(query.approval); }
            label { "Context (JSON)" input type="text" name="context" value=(query.context) placeholder="{\"justification\": \"...\"}" size="30"; }
            button type="submit" { "Explain" }
        }
        @if let Some(played) = &played { (playground(played)) }
        @if !policies.warnings().is_empty() {
            h2 { "Warnings" }
            ul #warnings { @for warning in policies.warnings() { li { code { (warning) } } } }
        }
        h2 { "Policies and templates" }
        table #policies {
            thead { tr { th { "Id" } th { "Effect" } th { "Text" } } }
            tbody {
                @for policy in policies.policies().policies() {
                    tr { td { code { (policy.id()) } } td { (format!("{:?}", policy.effect()).to_lowercase()) }
                         td { details { summary { "show" } pre { (policy) } } } }
                }
                @for template in policies.policies().templates() {
                    tr { td { code { (template.id()) } " (template)" } td { (format!("{:?}", template.effect()).to_lowercase()) }
                         td { details { summary { "show" } pre { (template) } } } }
                }
            }
        }
        h2 { "Template links" }
        table #links {
            thead { tr { th { "Link" } th { "Template" } th { "Principal" } th { "Resource" } } }
            tbody { @for link in policies.links().iter().take(200) {
                @let slots = link.slot_values();
                tr {
                    td { code { (link.id()) } }
                    td { code { (link.template()) } }
                    td { @if let Some(uid) = slots.get(&cedar_policy::SlotId::principal()) { code { (uid) } } }
                    td { @if let Some(uid) = slots.get(&cedar_policy::SlotId::resource()) { code { (uid) } } }
                }
            } }
        }
        @if policies.links().len() > 200 { p.muted { "The first 200 of " (policies.links().len()) " links; " code { "warrant policy links" } " lists them all." } }
        @if !disagreements.is_empty() {
            h2 { "Where the shadow set disagrees" }
            table #disagreements {
                thead { tr { th { "Time" } th { "Decision" } th { "Shadow" } th { "Request" } th { "Decision" } } }
                tbody { @for stored in &disagreements {
                    tr {
                        td { (stored.record.time) }
                        td { (pages::outcome(&stored.record.decision)) }
                        td { @if let Some(shadow) = &stored.record.shadow { (pages::outcome(&shadow.decision)) " " @for r in &shadow.reasons { code { (r) } " " } } }
                        td { code { (stored.record.principal) } " " code { (stored.record.action) } " " code { (stored.record.resource) } }
                        td { (pages::decision_link(&stored.record.decision_id)) }
                    }
                } }
            }
        }
    };
    Ok(Page(pages::layout(
        "Policies",
        Section::Policies,
        &session,
        body,
    )))
}

fn playground(played: &Result<Explanation, String>) -> Markup {
    match played {
        Err(why) => html! { p.unverified #playground-error { (why) } },
        Ok(explanation) => {
            let decision = &explanation.decision;
            let effect = if decision.effect == warrant_domain::Effect::Allow {
                "ALLOW"
            } else {
                "DENY"
            };
            html! {
                div.card #playground-answer {
                    p { (pages::outcome(effect)) " with reasons " @for reason in &decision.reasons { code.reason { (reason) } " " } }
                    @if let Some(advice) = &decision.approval_required {
                        p { "An approval for " code { (advice.action) } " over " code { (advice.scope) } " would allow it." }
                    }
                    @if !explanation.policies.is_empty() {
                        table {
                            thead { tr { th { "Policy" } th { "Effect" } th { "Alone, it is" } } }
                            tbody { @for policy in &explanation.policies {
                                tr {
                                    td { code { (policy.policy_id) } @if let Some(template) = &policy.template_id { " (of " code { (template) } ")" } }
                                    td { (policy.effect) }
                                    td { @match &policy.outcome {
                                        PolicyOutcome::Satisfied => { strong { "satisfied" } },
                                        PolicyOutcome::NotSatisfied => { span.muted { "not satisfied" } },
                                        PolicyOutcome::Failed(error) => { span.unverified { "failed: " (error) } },
                                    } }
                                }
                            } }
                        }
                    }
                }
            }
        }
    }
}
