//! The console's frame: the layout every page shares (navigation, who is signed in, the
//! sign-out form), the bits pages repeat (an entity's link, a time, an outcome), and the two
//! assets, compiled into the binary. maud escapes everything it writes, so a name like
//! `<script>` shows as text.

use axum::http::header;
use axum::response::IntoResponse;
use maud::{DOCTYPE, Markup, html};

use super::sessions::Session;
use warrant_domain::EntityRef;
use warrant_domain::clock::UnixMillis;

pub(super) const CSS: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

pub(super) async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

pub(super) async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Warrant" }
            link rel="stylesheet" href="/console/static/console.css";
            script src="/console/static/console.js" defer {}
        }
    }
}

/// A page for someone not signed in (or an error).
pub(super) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header { span.brand { "Warrant" } }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The pages of the console, in the navigation's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Approvals,
    Decisions,
    Identities,
    Policies,
    Review,
}

/// A page for a signed-in person.
pub(super) fn layout(title: &str, section: Section, session: &Session, body: Markup) -> Markup {
    let tab = |this: Section, href: &str, label: &str| {
        html! { a href=(href) class=[(this == section).then_some("current")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    span.brand { "Warrant" }
                    nav {
                        (tab(Section::Approvals, "/console/approvals", "Approvals"))
                        (tab(Section::Decisions, "/console/decisions", "Decisions"))
                        (tab(Section::Identities, "/console/identities", "Identities"))
                        (tab(Section::Policies, "/console/policies", "Policies"))
                        (tab(Section::Review, "/console/review", "Review"))
                    }
                    form.sign-out method="post" action="/console/sign-out" {
                        span.who { "Signed in as " code #signed-in-as { (session.human) } }
                        input type="hidden" name="csrf" value=(session.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// An identity's name, linked to its page (a Human's is not: a person is no identity).
pub(super) fn identity_link(entity: &EntityRef) -> Markup {
    if entity.type_name == warrant_domain::HUMAN_TYPE {
        return html! { code { (entity) } };
    }
    html! {
        a href=(format!("/console/identities/{}/{}", path_part(&entity.type_name), path_part(&entity.id))) {
            code { (entity) }
        }
    }
}

/// A decision's id, linked to its page.
pub(super) fn decision_link(id: &str) -> Markup {
    html! { a href=(format!("/console/decisions/{}", path_part(id))) { code { (short(id)) } } }
}

/// `text` as one path segment (percent-encoded).
pub(super) fn path_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The last 8 characters of an id, for tables (the full id is the link's target). Ids are
/// UUIDv7: their first characters are the time, the same for everything made in one minute.
pub(super) fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

/// An attribute's value as Cedar's JSON holds it, written for people: an entity reference as
/// `Type::"id"`, a set as its members, a string as itself.
pub(super) fn cedar_value(value: &serde_json::Value) -> String {
    use serde::Deserialize as _;
    use serde_json::Value;
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(cedar_value).collect::<Vec<_>>().join(", "),
        Value::Object(fields) => {
            if let Some(entity) = fields
                .get("__entity")
                .and_then(|entity| EntityRef::deserialize(entity).ok())
            {
                entity.to_string()
            } else if let Some(argument) = fields.get("__extn").and_then(|e| e.get("arg")) {
                cedar_value(argument)
            } else {
                value.to_string()
            }
        }
        other => other.to_string(),
    }
}

pub(super) fn time(millis: i64) -> String {
    UnixMillis(millis).to_rfc3339()
}

/// "ALLOW" or "DENY", as a badge.
pub(super) fn outcome(decision: &str) -> Markup {
    let class = if decision.eq_ignore_ascii_case("allow") {
        "badge allow"
    } else {
        "badge deny"
    };
    html! { span class=(class) { (decision) } }
}

/// A duration in words: "3 h 20 min", "45 s".
pub(super) fn duration(millis: i64) -> String {
    let seconds = millis.max(0) / 1000;
    match seconds {
        s if s >= 3600 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}
