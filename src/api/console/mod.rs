//! The console: Warrant's web pages for the people in the loop (approvers, security teams,
//! auditors, SREs), served by Warrant itself on a listener of its own. Server-rendered HTML
//! (maud, which escapes every value it writes), one small script of our own for live updates,
//! no asset from anywhere else: it works air-gapped. A person signs in as their `Human` entity
//! (`sessions`); every page and form first asks Warrant's own policies whether they may
//! (`Console::may`, recorded in the ledger like any decision), and every form carries its
//! session's CSRF token. Pages: the decision log and one decision's story, provenance and proof
//! (`decisions`), the approval inbox (`approvals`), identities (`identities`).

mod approvals;
mod charts;
mod decisions;
pub mod fleet;
mod identities;
mod oidc;
mod pages;
mod policies;
pub(crate) mod review;
pub mod sessions;
mod sign_in;

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use crate::api::decider::Decider;
use crate::api::search::Searcher;
use crate::observability::metrics::Api;
use sessions::{InviteError, Session, SessionLimits, Sessions};
use warrant_control::Control;
use warrant_domain::clock::UnixMillis;
use warrant_domain::{Caller, CheckRequest, Decision, Effect, EntityRef, HUMAN_TYPE};
use warrant_ledger::Ledger;

/// The session cookie's name.
const COOKIE: &str = "warrant_console";
/// The most a form may send.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// The resource of the console's actions that are not about one identity.
fn console_resource() -> EntityRef {
    EntityRef::new("Console", "warrant")
}

/// The console's settings (`[console]` in the configuration file).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// How long a sign-in lasts, in hours [default: 8].
    pub session_hours: Option<u64>,
    /// How long a sign-in link made by `warrant console invite` works, in minutes [default: 15].
    pub invite_minutes: Option<u64>,
    /// Most people signed in at once [default: 1000].
    pub max_sessions: Option<usize>,
    /// The console's address as people's browsers reach it, for sign-in links, e.g.
    /// `https://warrant.example.com/console` [default: this listener's own address].
    pub public_url: Option<String>,
    /// In a fleet: this replica's admin API as the other replicas reach it, for the fleet-wide
    /// decision log, e.g. `https://warrant-2.internal:50052` [default: its listener's address].
    pub admin_url: Option<String>,
    /// Sign-in with an OpenID Connect provider (`[console.oidc]`).
    pub oidc: Option<oidc::OidcSettings>,
}

impl ConsoleSettings {
    pub fn limits(&self) -> SessionLimits {
        let defaults = SessionLimits::default();
        let millis = |value: Option<u64>, unit: i64, default: i64| {
            value.map_or(default, |v| {
                i64::try_from(v).unwrap_or(i64::MAX).saturating_mul(unit)
            })
        };
        SessionLimits {
            session_ms: millis(self.session_hours, 3_600_000, defaults.session_ms),
            invite_ms: millis(self.invite_minutes, 60_000, defaults.invite_ms),
            max_sessions: self.max_sessions.unwrap_or(defaults.max_sessions),
            max_invites: defaults.max_invites,
        }
    }
}

pub struct Console {
    control: Arc<Control>,
    decider: Arc<Decider>,
    /// For what an identity can reach.
    searcher: Arc<Searcher>,
    sessions: Arc<Sessions>,
    /// Whether cookies are sent only over TLS (`Secure`); loopback plaintext is a secure
    /// context to browsers, so it holds there too.
    secure_cookies: bool,
    /// Sign-in with an identity provider, when one is configured.
    oidc: Option<Arc<oidc::Oidc>>,
    /// How to ask the other replicas of a fleet for their decisions.
    peers: Option<fleet::Peers>,
    /// The configured credential issuers, for an identity's page.
    credentials: crate::credentials::CredentialSettings,
    /// The access review's periods, and the last review the pages showed.
    review: warrant_review::ReviewSettings,
    reviewed: review::Reviewed,
}

/// Makes one-time sign-in links (for the admin API's `CreateConsoleInvite`).
pub struct Invites {
    control: Arc<Control>,
    sessions: Arc<Sessions>,
    url: String,
}

/// Why a sign-in link was not made.
#[derive(Debug, thiserror::Error)]
pub enum InviteRefused {
    #[error("human: {0}")]
    Invalid(String),
    #[error(transparent)]
    Unavailable(#[from] InviteError),
}

impl Invites {
    /// A link that signs `human` in once, and when it stops working.
    pub fn create(&self, human: &EntityRef) -> Result<(String, UnixMillis), InviteRefused> {
        if human.type_name != HUMAN_TYPE {
            return Err(InviteRefused::Invalid(format!(
                "{human} is not a {HUMAN_TYPE}: only people sign in to the console"
            )));
        }
        if self.control.entity(human).is_err() {
            return Err(InviteRefused::Invalid(format!("the facts hold no {human}")));
        }
        let (token, expires_at) = self.sessions.invite(human.clone(), self.control.now())?;
        tracing::info!(human = %human, "console sign-in link made");
        Ok((
            format!("{}/invite/{token}", self.url.trim_end_matches('/')),
            expires_at,
        ))
    }
}

/// Where the console is and what it may reach, as the server settles it.
pub struct Setup {
    pub settings: ConsoleSettings,
    /// The console's address as browsers reach it (`.../console`).
    pub url: String,
    /// Whether cookies are sent only over TLS (`Secure`).
    pub secure_cookies: bool,
    /// In a fleet: how to ask the other replicas for their decisions.
    pub peers: Option<fleet::Peers>,
    /// The configured credential issuers.
    pub credentials: crate::credentials::CredentialSettings,
    /// The access review's periods.
    pub review: warrant_review::ReviewSettings,
}

impl Console {
    /// The console, and what makes its sign-in links (which send people to `setup.url`).
    pub fn new(
        control: Arc<Control>,
        decider: Arc<Decider>,
        searcher: Arc<Searcher>,
        setup: Setup,
    ) -> Result<(Arc<Console>, Arc<Invites>), String> {
        let Setup {
            settings,
            url,
            secure_cookies,
            peers,
            credentials,
            review,
        } = setup;
        let oidc = match &settings.oidc {
            Some(oidc) => Some(Arc::new(
                oidc::Oidc::new(
                    oidc.clone(),
                    format!("{}/oidc/callback", url.trim_end_matches('/')),
                )
                .map_err(|error| format!("[console.oidc] {error}"))?,
            )),
            None => None,
        };
        let sessions = Arc::new(Sessions::new(settings.limits()));
        let invites = Arc::new(Invites {
            control: Arc::clone(&control),
            sessions: Arc::clone(&sessions),
            url,
        });
        let console = Arc::new(Console {
            control,
            decider,
            searcher,
            sessions,
            secure_cookies,
            oidc,
            peers,
            credentials,
            review,
            reviewed: review::Reviewed::default(),
        });
        Ok((console, invites))
    }

    fn ledger(&self) -> Option<&Arc<Ledger>> {
        self.decider.ledger()
    }

    fn now(&self) -> UnixMillis {
        self.control.now()
    }

    /// Whether the signed-in person may do `action` on `resource`: asked of the policies like
    /// any Check, and recorded. A deny is a page that says so, with the decision's id.
    async fn may(
        &self,
        session: &Session,
        action: &str,
        resource: &EntityRef,
    ) -> Result<Decision, PageError> {
        let Some((_, decision)) = self
            .ask(session, action, vec![resource.clone()])
            .await
            .pop()
        else {
            return Err(PageError::Failed("no decision was made".into()));
        };
        match decision.effect {
            Effect::Allow => Ok(decision),
            Effect::Deny => Err(PageError::Forbidden {
                action: action.to_owned(),
                resource: resource.clone(),
                reasons: decision.reasons.clone(),
                decision_id: decision.decision_id.to_string(),
            }),
        }
    }

    /// Whether the signed-in person may do `action` on each of `resources` (what a page shows
    /// only to those who may): one decision each, recorded together.
    async fn may_each(
        &self,
        session: &Session,
        action: &str,
        resources: Vec<EntityRef>,
    ) -> Vec<bool> {
        self.ask(session, action, resources)
            .await
            .iter()
            .map(|(_, decision)| decision.effect == Effect::Allow)
            .collect()
    }

    /// The policies' decisions on the person doing `action` on each resource, recorded in one
    /// append before they are used (a request Warrant cannot decide is a recorded refusal).
    async fn ask(
        &self,
        session: &Session,
        action: &str,
        resources: Vec<EntityRef>,
    ) -> Vec<(CheckRequest, Decision)> {
        let requests = resources
            .into_iter()
            .map(|resource| CheckRequest {
                principal: session.human.clone(),
                action: action.to_owned(),
                resource,
                ..CheckRequest::default()
            })
            .collect();
        let caller = Caller {
            address: Some(format!("console session of {}", session.human)),
            identity: None,
            identity_from: None,
        };
        self.decider
            .decide_and_record(Api::Console, requests, caller)
            .await
    }
}

/// A signed-in person, from the session cookie; anyone else is sent to sign in.
pub(crate) struct SignedIn(Session);

impl FromRequestParts<Arc<Console>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        cookie(&parts.headers)
            .and_then(|token| console.sessions.session(token, console.now()))
            .map(SignedIn)
            .ok_or_else(|| Redirect::to("/console/sign-in").into_response())
    }
}

/// The session cookie's secret, if the request carries one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    named_cookie(headers, COOKIE)
}

fn named_cookie<'a>(headers: &'a HeaderMap, wanted: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value)
}

/// What a page could not do, as the page that says so.
#[derive(Debug)]
pub(crate) enum PageError {
    Forbidden {
        action: String,
        resource: EntityRef,
        reasons: Vec<String>,
        decision_id: String,
    },
    NotFound(String),
    /// The form or the query was wrong: says what.
    Bad(String),
    /// A refused change (a rule of Warrant's, a conflict): says why.
    Refused(String),
    Failed(String),
}

impl From<warrant_control::ControlError> for PageError {
    fn from(error: warrant_control::ControlError) -> Self {
        use warrant_control::ControlError as E;
        match error {
            E::NotFound(message) => PageError::NotFound(message),
            E::Invalid { .. } | E::Conflict(_) | E::Refused(_) => {
                PageError::Refused(error.to_string())
            }
            other => {
                tracing::error!(error = %other, "a console page failed");
                PageError::Failed(other.to_string())
            }
        }
    }
}

impl From<warrant_ledger::LedgerError> for PageError {
    fn from(error: warrant_ledger::LedgerError) -> Self {
        tracing::error!(%error, "a console page could not read the ledger");
        PageError::Failed(error.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, body) = match &self {
            PageError::Forbidden {
                action,
                resource,
                reasons,
                decision_id,
            } => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                html! {
                    p { "The console's policies do not let you " code { (action) } " on " code { (resource) } "." }
                    p { "Reasons: " @for reason in reasons { code.reason { (reason) } " " } }
                    p { "This refusal is decision " code { (decision_id) } " in the ledger. Ask your security team to change "
                        code { "console.cedar" } " if you need this right." }
                },
            ),
            PageError::NotFound(what) => {
                (StatusCode::NOT_FOUND, "Not found", html! { p { (what) } })
            }
            PageError::Bad(what) => (
                StatusCode::BAD_REQUEST,
                "Not understood",
                html! { p { (what) } },
            ),
            PageError::Refused(what) => (StatusCode::CONFLICT, "Refused", html! { p { (what) } }),
            PageError::Failed(what) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something failed",
                html! { p { (what) } },
            ),
        };
        (status, Page(pages::bare(title, body))).into_response()
    }
}

/// An HTML page.
pub(crate) struct Page(Markup);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            self.0.into_string(),
        )
            .into_response()
    }
}

/// Headers on every answer: no script but ours, no framing, no caching, no sniffing.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

pub fn router(console: Arc<Console>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/sign-in", get(sign_in::sign_in_page))
        .route("/console/invite/{token}", get(sign_in::invite_page))
        .route("/console/invite", post(sign_in::redeem_invite))
        .route("/console/sign-out", post(sign_in::sign_out))
        .route("/console/oidc/start", get(sign_in::oidc_start))
        .route("/console/oidc/callback", get(sign_in::oidc_callback))
        .route("/console/decisions", get(decisions::list))
        .route("/console/decisions/{id}", get(decisions::page))
        .route("/console/approvals", get(approvals::inbox))
        .route("/console/approvals/{id}", post(approvals::decide))
        .route("/console/identities", get(identities::list))
        .route(
            "/console/identities/{type_name}/{id}",
            get(identities::page),
        )
        .route(
            "/console/identities/{type_name}/{id}/status",
            post(identities::set_status),
        )
        .route("/console/policies", get(policies::page))
        .route("/console/review", get(review::page))
        .route("/console/review/attest", post(review::attest))
        .route("/console/events", get(approvals::events))
        .route("/console/static/console.css", get(pages::css))
        .route("/console/static/console.js", get(pages::script))
        .fallback(|| async { PageError::NotFound("No such page.".into()) })
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(console)
}

async fn home(State(console): State<Arc<Console>>, headers: HeaderMap) -> Redirect {
    let signed_in = cookie(&headers)
        .and_then(|token| console.sessions.session(token, console.now()))
        .is_some();
    Redirect::to(if signed_in {
        "/console/approvals"
    } else {
        "/console/sign-in"
    })
}

/// Refuses a form whose CSRF token is not its session's.
fn checked_csrf(session: &Session, token: &str) -> Result<(), PageError> {
    if session.csrf_matches(token) {
        Ok(())
    } else {
        Err(PageError::Bad(
            "This form's CSRF token is missing or not this session's: reload the page and send \
             it again."
                .into(),
        ))
    }
}
