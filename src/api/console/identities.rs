//! Identities for people: a list (by type, owner, status) and one identity's page: its owner,
//! status and attributes, its approvals (used, unused, expiring), its recent decisions, what it
//! can reach now (a resource search per action it may be asked, on record like every search),
//! and, where the policies allow, the button that suspends or resumes it.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::pages::{self, Section};
use super::{Console, Page, PageError, SignedIn, checked_csrf};
use crate::api::search::{SearchAsk, SearchRefused};
use warrant_control::approvals::ApprovalFilter;
use warrant_control::identities::{IdentityFilter, IdentityUpdate};
use warrant_domain::{Caller, CheckRequest, EntityRef};
use warrant_engine::engine::search::Searched;
use warrant_ledger::{Filter, Order};

/// Identities per page of the list.
const PAGE: usize = 50;
/// Approvals, decisions and reached resources shown on an identity's page.
const SHOWN: usize = 20;
/// Candidates each of the page's searches examines: a preview (`warrant search` goes on).
const REACH_EXAMINED: usize = 500;

#[derive(serde::Deserialize, Default)]
pub(super) struct ListQuery {
    #[serde(default)]
    type_name: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: String,
}

pub(super) async fn list(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(query): Query<ListQuery>,
) -> Result<Page, PageError> {
    let owner = match query.owner.trim() {
        "" => None,
        text => Some(
            EntityRef::parse(text)
                .ok_or_else(|| PageError::Bad(format!("owner: {text:?} is not Human::id")))?,
        ),
    };
    let filter = IdentityFilter {
        type_name: Some(query.type_name.trim().to_owned()).filter(|t| !t.is_empty()),
        owner,
        status: Some(query.status.trim().to_owned()).filter(|s| !s.is_empty()),
    };
    let control = Arc::clone(&console.control);
    let after = Some(query.after.clone()).filter(|a| !a.is_empty());
    let page =
        tokio::task::spawn_blocking(move || control.identities(&filter, after.as_deref(), PAGE))
            .await
            .map_err(|error| PageError::Failed(error.to_string()))??;
    let visible = console
        .may_each(
            &session,
            "view_identity",
            page.items.iter().map(|view| view.entity.clone()).collect(),
        )
        .await;
    let hidden = visible.iter().filter(|may| !**may).count();
    let next = page.next_after.as_ref().map(|after| {
        format!(
            "/console/identities?type_name={}&owner={}&status={}&after={}",
            pages::path_part(&query.type_name),
            pages::path_part(&query.owner),
            pages::path_part(&query.status),
            pages::path_part(after)
        )
    });
    let body = html! {
        form.filters method="get" action="/console/identities" {
            label { "Type" input type="text" name="type_name" value=(query.type_name) placeholder="Agent"; }
            label { "Owner" input type="text" name="owner" value=(query.owner) placeholder="Human::carol"; }
            label { "Status" select name="status" {
                option value="" selected[query.status.is_empty()] { "any" }
                @for status in warrant_control::identities::IDENTITY_STATUSES {
                    option value=(status) selected[query.status == status] { (status) }
                }
            } }
            button type="submit" { "List" }
        }
        table #identities {
            thead { tr { th { "Identity" } th { "Owner" } th { "Status" } } }
            tbody {
                @for (view, _) in page.items.iter().zip(&visible).filter(|(_, may)| **may) {
                    tr {
                        td { (pages::identity_link(&view.entity)) }
                        td { @match &view.identity.owner { Some(owner) => { code { (owner.entity) } @if let Some(name) = &owner.name { " " (name) } }, None => { span.unverified { "no owner" } } } }
                        td { (view.identity.status.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if hidden > 0 {
            p.muted { (hidden) " identities on this page are not shown: the policies do not let you view them." }
        }
        @if let Some(next) = next { p { a href=(next) { "More" } } }
    };
    Ok(Page(pages::layout(
        "Identities",
        Section::Identities,
        &session,
        body,
    )))
}

pub(super) async fn page(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path((type_name, id)): Path<(String, String)>,
) -> Result<Page, PageError> {
    let entity = EntityRef::new(type_name, id);
    console.may(&session, "view_identity", &entity).await?;
    let control = Arc::clone(&console.control);
    let ledger = console.ledger().cloned();
    let looked_up = entity.clone();
    let (view, approvals, decisions) = tokio::task::spawn_blocking(move || {
        let view = control.identity(&looked_up)?;
        let approvals = control
            .approvals(
                &ApprovalFilter {
                    subject: Some(looked_up.clone()),
                    ..ApprovalFilter::default()
                },
                None,
                SHOWN,
            )?
            .items;
        let decisions = match &ledger {
            Some(ledger) => ledger.find(
                &Filter {
                    principal: Some(looked_up),
                    ..Filter::default()
                },
                Order::NewestFirst { before: None },
                SHOWN,
            )?,
            None => Vec::new(),
        };
        Ok::<_, PageError>((view, approvals, decisions))
    })
    .await
    .map_err(|error| PageError::Failed(error.to_string()))??;
    let reach = reach(&console, &session, &entity).await;
    let now = console.now().0;
    let status = view.identity.status.clone().unwrap_or_default();
    let (next_status, button) = if status == "active" {
        ("suspended", "Suspend")
    } else {
        ("active", "Resume")
    };
    let body = html! {
        div.card #identity { dl {
            dt { "Identity" } dd { code #identity-name { (view.entity) } }
            dt { "Owner" } dd { @match &view.identity.owner {
                Some(owner) => { code { (owner.entity) } @if let Some(name) = &owner.name { " " (name) } @if let Some(email) = &owner.email { " <" (email) ">" } },
                None => { span.unverified { "no owner: nobody answers for it" } },
            } }
            dt { "Status" } dd #status { (status) }
            @if let Some(expires) = view.identity.expires_at { dt { "Credential expires" } dd { (pages::time(expires.0)) } }
            @for (name, value) in &view.attributes { dt { (name) } dd { code { (pages::cedar_value(value)) } } }
            dt { "Credentials" } dd #credentials { (credentials(&console.credentials, &view.entity.type_name)) }
        } }
        @if status != "retired" {
            form method="post" action=(format!("/console/identities/{}/{}/status", pages::path_part(&view.entity.type_name), pages::path_part(&view.entity.id))) {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="status" value=(next_status);
                button type="submit" id="set-status" class=[(next_status == "suspended").then_some("danger")] { (button) }
            }
        }
        h2 { "Approvals" }
        table #approvals {
            thead { tr { th { "Approval" } th { "Ticket" } th { "Actions" } th { "Scope" } th { "State" } th { "Uses" } th { "Expires" } th { "Approver" } } }
            tbody { @for a in &approvals {
                tr {
                    td { code { (a.approval.uid.id().unescaped()) } }
                    td { code { (a.approval.ticket) } }
                    td { @for action in &a.approval.actions { code { (action) } " " } }
                    td { code { (a.approval.scope) } }
                    td { (format!("{:?}", a.state).to_lowercase()) }
                    td { (a.uses) @if let Some(max) = a.approval.max_uses { " of " (max) } @if a.uses == 0 { " (unused)" } }
                    td { (pages::time(a.approval.expires_at.0)) @if a.approval.expires_at.0 > now && a.approval.expires_at.0 - now < 86_400_000 { " (within a day)" } }
                    td { code { (a.approval.approver) } }
                }
            } }
        }
        h2 { "What it can reach now" }
        (reach)
        h2 { "Recent decisions" }
        table #recent-decisions {
            thead { tr { th { "Time" } th { "Outcome" } th { "Action" } th { "Resource" } th { "Reasons" } th { "Decision" } } }
            tbody { @for stored in &decisions {
                tr {
                    td { (stored.record.time) }
                    td { (pages::outcome(&stored.record.decision)) }
                    td { code { (stored.record.action) } }
                    td { code { (stored.record.resource) } }
                    td { @for reason in &stored.record.reasons { code.reason { (reason) } " " } }
                    td { (pages::decision_link(&stored.record.decision_id)) }
                }
            } }
        }
    };
    Ok(Page(pages::layout(
        "Identity",
        Section::Identities,
        &session,
        body,
    )))
}

/// Which configured issuers' tokens name an identity of this type, and whether its Checks must
/// carry one.
fn credentials(settings: &crate::credentials::CredentialSettings, type_name: &str) -> Markup {
    let issuers: Vec<&crate::credentials::IssuerSettings> = settings
        .issuers
        .iter()
        .filter(|issuer| issuer.principal.split("::").next() == Some(type_name))
        .collect();
    let required = settings.required_for.iter().any(|t| t == type_name);
    html! {
        @if issuers.is_empty() { span.muted { "no configured issuer's tokens name a " code { (type_name) } } }
        @for issuer in &issuers {
            code { (issuer.issuer) } " (as " code { (issuer.principal) } ")"
            @if issuer.single_use { " single-use" } " "
        }
        @if required { br; strong { "Its Checks must carry a credential." } }
    }
}

/// For each action the identity's type may be asked and each resource type of it: the first
/// resources a Check would allow now (a search, recorded as such).
async fn reach(
    console: &Console,
    session: &super::sessions::Session,
    entity: &EntityRef,
) -> Markup {
    let policies = console.decider.engine().snapshot().policies.clone();
    let schema = policies.schema();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut actions: Vec<_> = policies.actions().iter().collect();
    actions.sort_by(|a, b| a.0.cmp(b.0));
    for (name, uid) in actions {
        let principal_fits = schema
            .principals_for_action(uid)
            .is_some_and(|mut types| types.any(|t| t.to_string() == entity.type_name));
        if !principal_fits {
            continue;
        }
        for resource_type in schema.resources_for_action(uid).into_iter().flatten() {
            pairs.push((name.clone(), resource_type.to_string()));
        }
    }
    let mut rows = Vec::new();
    for (action, resource_type) in pairs {
        let ask = SearchAsk {
            searched: Searched::Resources {
                type_name: resource_type.clone(),
            },
            template: CheckRequest {
                principal: entity.clone(),
                action: action.clone(),
                resource: EntityRef::new(resource_type.clone(), ""),
                ..CheckRequest::default()
            },
            per_action: None,
            include_approvable: false,
            token: String::new(),
            limit: Some(SHOWN as u64),
            max_examined: Some(REACH_EXAMINED),
        };
        let caller = Caller {
            address: Some(format!("console session of {}", session.human)),
            identity: None,
            identity_from: None,
        };
        let found = console.searcher.search(ask, "console", caller, None).await;
        rows.push((action, resource_type, found));
    }
    html! {
        table #reach {
            thead { tr { th { "Action" } th { "Resources" } th { "Search" } } }
            tbody { @for (action, resource_type, found) in &rows {
                tr {
                    td { code { (action) } }
                    @match found {
                        Ok(answer) => {
                            td {
                                @for item in &answer.found { code { (resource_type) "::" (item.id) } " " }
                                @match (answer.found.is_empty(), answer.next_token.is_empty()) {
                                    (true, true) => { span.muted { "none of type " (resource_type) } },
                                    (true, false) => { span.muted { "none among the first " (answer.examined) " examined; " code { "warrant search" } " goes on" } },
                                    (false, false) => { " and perhaps more (" code { "warrant search" } " goes on)" },
                                    (false, true) => {},
                                }
                            }
                            td { code { (pages::short(&answer.search_id)) } }
                        }
                        Err(SearchRefused::Invalid(invalid)) => {
                            td.muted { "depends on the request's " code { (invalid.field) } " (" (invalid.message) "): ask "
                                code { "warrant search" } " with that context" }
                            td {}
                        }
                        Err(SearchRefused::Unavailable(why)) => { td.unverified { "cannot be searched now: " (why) } td {} }
                    }
                }
            } }
        }
    }
}

#[derive(serde::Deserialize)]
pub(super) struct StatusForm {
    #[serde(default)]
    csrf: String,
    status: String,
}

pub(super) async fn set_status(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path((type_name, id)): Path<(String, String)>,
    Form(form): Form<StatusForm>,
) -> Result<Response, PageError> {
    checked_csrf(&session, &form.csrf)?;
    if form.status != "active" && form.status != "suspended" {
        return Err(PageError::Bad(format!(
            "status: {:?} is neither active nor suspended",
            form.status
        )));
    }
    let entity = EntityRef::new(type_name, id);
    console.may(&session, "suspend_identity", &entity).await?;
    let control = Arc::clone(&console.control);
    let changed = entity.clone();
    let status = form.status.clone();
    tokio::task::spawn_blocking(move || {
        control.update_identity(
            &changed,
            IdentityUpdate {
                status: Some(status),
                ..IdentityUpdate::default()
            },
        )
    })
    .await
    .map_err(|error| PageError::Failed(error.to_string()))??;
    tracing::info!(identity = %entity, status = form.status, by = %session.human, "identity status set in the console");
    Ok(Redirect::to(&format!(
        "/console/identities/{}/{}",
        pages::path_part(&entity.type_name),
        pages::path_part(&entity.id)
    ))
    .into_response())
}
