//! Signing in and out of the console: a one-time link made by `warrant console invite` (its
//! page asks for a press of a button: link previews and scanners open links), or the identity
//! provider (`oidc`); either starts a session whose cookie is `HttpOnly`, `SameSite=Strict`,
//! `Secure` (browsers keep it over plaintext only on loopback) and expires.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use maud::html;

use super::sessions::Session;
use super::{
    COOKIE, Console, Page, PageError, SignedIn, checked_csrf, cookie, named_cookie, pages,
};

pub(super) async fn sign_in_page(State(console): State<Arc<Console>>) -> Page {
    Page(pages::bare(
        "Sign in",
        html! {
            p { "Sign in to Warrant's console as yourself, the " code { "Human" } " the facts name you as." }
            @if let Some(oidc) = &console.oidc {
                p { a.button #oidc-sign-in href="/console/oidc/start" { "Sign in with " (oidc.name()) } }
                p.muted { "Or, without the identity provider, ask an administrator for a one-time link:" }
            } @else {
                p { "Ask an administrator for a one-time sign-in link:" }
            }
            pre { "warrant console invite Human::<you>" }
            p { "The link works once, for a few minutes. What you may see and do here is decided by the "
                code { "console.cedar" } " policies." }
        },
    ))
}

/// An invite's page: a button, not a sign-in on GET (link previews and scanners open links).
pub(super) async fn invite_page(
    State(console): State<Arc<Console>>,
    Path(token): Path<String>,
) -> Result<Page, PageError> {
    let human = console
        .sessions
        .invited(&token, console.now())
        .ok_or_else(|| {
            PageError::NotFound(
                "This sign-in link was used already, has expired, or was never made. Ask for a \
                 new one."
                    .into(),
            )
        })?;
    Ok(Page(pages::bare(
        "Sign in",
        html! {
            form method="post" action="/console/invite" {
                input type="hidden" name="token" value=(token);
                p { "This link signs you in as " code { (human) } "." }
                button type="submit" id="sign-in" { "Sign in as " (human.id) }
            }
        },
    )))
}

#[derive(serde::Deserialize)]
pub(super) struct InviteForm {
    token: String,
}

pub(super) async fn redeem_invite(
    State(console): State<Arc<Console>>,
    Form(form): Form<InviteForm>,
) -> Result<Response, PageError> {
    let (token, _) = console.started(
        console
            .sessions
            .redeem(&form.token, console.now())
            .ok_or_else(|| {
                PageError::NotFound("This sign-in link was used already or has expired.".into())
            })?,
    )?;
    Ok((
        [(header::SET_COOKIE, console.session_cookie(&token))],
        Redirect::to("/console/approvals"),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct CsrfForm {
    csrf: String,
}

pub(super) async fn sign_out(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    checked_csrf(&session, &form.csrf)?;
    if let Some(token) = cookie(&headers) {
        console.sessions.end(token);
    }
    console
        .decider
        .metrics()
        .console_sessions(console.sessions.count());
    Ok((
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0"),
        )],
        Redirect::to("/console/sign-in"),
    )
        .into_response())
}

impl Console {
    /// A session just started (its secret and itself), logged and counted.
    fn started(
        &self,
        started: Result<(String, Session), String>,
    ) -> Result<(String, Session), PageError> {
        let (token, session) =
            started.map_err(|error| PageError::Failed(format!("no randomness: {error}")))?;
        tracing::info!(human = %session.human, how = session.how, "signed in to the console");
        self.decider
            .metrics()
            .console_sessions(self.sessions.count());
        Ok((token, session))
    }

    /// The `Set-Cookie` value of a new session.
    fn session_cookie(&self, token: &str) -> String {
        let max_age = self.sessions.limits().session_ms / 1000;
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        format!(
            "{COOKIE}={token}; HttpOnly{secure}; SameSite=Strict; Path=/console; Max-Age={max_age}"
        )
    }
}

/// The cookie that ties a sign-in through the identity provider to the browser that started it.
const LOGIN_COOKIE: &str = "warrant_console_login";

/// Sends the browser to the identity provider.
pub(super) async fn oidc_start(State(console): State<Arc<Console>>) -> Result<Response, PageError> {
    let oidc = console
        .oidc
        .clone()
        .ok_or_else(|| PageError::NotFound("No identity provider is configured.".into()))?;
    let now = console.now();
    let (to, state) = tokio::task::spawn_blocking(move || oidc.start(now))
        .await
        .map_err(|error| PageError::Failed(error.to_string()))?
        .map_err(|error| {
            tracing::error!(%error, "cannot start a sign-in with the identity provider");
            PageError::Failed(format!("The identity provider cannot be reached: {error}"))
        })?;
    let secure = if console.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    // Lax, not Strict: it must come back with the provider's redirect.
    let cookie = format!(
        "{LOGIN_COOKIE}={state}; HttpOnly{secure}; SameSite=Lax; Path=/console/oidc; Max-Age=600"
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&to)).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the browser back here with a code: the person is signed in as the Human
/// the configured claim names.
pub(super) async fn oidc_callback(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, PageError> {
    let oidc = console
        .oidc
        .clone()
        .ok_or_else(|| PageError::NotFound("No identity provider is configured.".into()))?;
    if let Some(error) = &query.error {
        return Err(PageError::Refused(format!(
            "The identity provider did not sign you in: {error} {}",
            query.error_description.as_deref().unwrap_or("")
        )));
    }
    let (Some(code), Some(state)) = (query.code, query.state) else {
        return Err(PageError::Bad("code and state: required".into()));
    };
    let bound = named_cookie(&headers, LOGIN_COOKIE).is_some_and(|started| started == state);
    if !bound {
        return Err(PageError::Bad(
            "This sign-in was not started in this browser: start again from the sign-in page."
                .into(),
        ));
    }
    let now = console.now();
    let facts = Arc::clone(&console.control.engine().snapshot().facts);
    let human = tokio::task::spawn_blocking(move || {
        let claim = oidc.finish(&code, &state, now)?;
        oidc.human_of(&facts, &claim)
    })
    .await
    .map_err(|error| PageError::Failed(error.to_string()))?
    .map_err(|error| {
        tracing::warn!(%error, "a sign-in with the identity provider was refused");
        PageError::Refused(format!("You are not signed in: {error}"))
    })?;
    let (token, session) = console.started(console.sessions.start(human, "oidc", now))?;
    // A page that moves on, rather than a redirect: a redirect chain that began at the provider
    // is cross-site, and the browser would not send the SameSite=Strict session cookie on it.
    let page = pages::bare(
        "Signed in",
        html! {
            meta http-equiv="refresh" content="0;url=/console/approvals";
            p { "Signed in as " code #signed-in-as { (session.human) } ". " a href="/console/approvals" { "Continue" } }
        },
    );
    Ok((
        AppendHeaders([
            (header::SET_COOKIE, console.session_cookie(&token)),
            (
                header::SET_COOKIE,
                format!("{LOGIN_COOKIE}=; HttpOnly; SameSite=Lax; Path=/console/oidc; Max-Age=0"),
            ),
        ]),
        Page(page),
    )
        .into_response())
}
