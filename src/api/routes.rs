//! The route table for gateway APIs: maps an HTTP method and path to the action and resource a
//! request is about, from templates such as `GET /datasets/{name}` -> `read` on
//! `Dataset::{name}`. `{name}` matches one path segment (percent-decoded); `{*rest}`, last in a
//! template, matches the rest of the path. The first route that matches wins.

use serde::Deserialize;

use crate::domain::EntityRef;

/// One route as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// An HTTP method, or `*` for any.
    pub method: String,
    /// A path template, e.g. `/datasets/{name}`.
    pub path: String,
    /// The action's id, e.g. `read`.
    pub action: String,
    /// The resource, `Type::id`, where the id may use the path's captures: `Dataset::{name}`.
    pub resource: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
    Rest(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Capture(String),
}

#[derive(Debug, Clone)]
struct Route {
    /// `None` for any method.
    method: Option<String>,
    segments: Vec<Segment>,
    action: String,
    resource_type: String,
    resource_id: Vec<Piece>,
}

/// What a request is about, by its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub action: String,
    pub resource: EntityRef,
    /// The route's position in the table, for the record.
    pub route: usize,
}

/// A route that cannot be compiled: which one (its index), which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routes[{route}].{field}: {message}")]
pub struct RouteError {
    pub route: usize,
    /// `method`, `path`, `action` or `resource`.
    pub field: &'static str,
    pub message: String,
}

/// What is wrong with one route, before its index is known.
struct RouteProblem {
    field: &'static str,
    message: String,
}

fn problem(field: &'static str, message: impl Into<String>) -> RouteProblem {
    RouteProblem {
        field,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Checks and compiles the routes. An error names the route and its field.
    pub fn new(specs: &[RouteSpec]) -> Result<Self, RouteError> {
        let routes = specs
            .iter()
            .enumerate()
            .map(|(route, spec)| {
                Route::new(spec).map_err(|RouteProblem { field, message }| RouteError {
                    route,
                    field,
                    message,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(RouteTable { routes })
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The target of `method` on `path` (query string and fragment already removed or not):
    /// `None` when no route matches, `Err` when the path is refused (see `canonical_segments`).
    pub fn resolve(&self, method: &str, path: &str) -> Option<Result<Target, BadPath>> {
        let segments = match canonical_segments(path) {
            Ok(segments) => segments,
            Err(problem) => return Some(Err(problem)),
        };
        self.routes.iter().enumerate().find_map(|(index, route)| {
            if route
                .method
                .as_deref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(method))
            {
                return None;
            }
            let captures = route.matches(&segments)?;
            let id = route
                .resource_id
                .iter()
                .map(|piece| match piece {
                    Piece::Text(text) => text.as_str(),
                    Piece::Capture(name) => captures
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or("", |(_, v)| v.as_str()),
                })
                .collect::<String>();
            Some(Ok(Target {
                action: route.action.clone(),
                resource: EntityRef::new(route.resource_type.clone(), id),
                route: index,
            }))
        })
    }
}

/// Why a path is refused (see `canonical_segments`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("the path does not start with /")]
    NotAbsolute,
    #[error("the path holds a backslash, a `;` or a control character")]
    ForbiddenCharacter,
    #[error("the path has an empty segment (//)")]
    EmptySegment,
    #[error("the path has a . or .. segment")]
    DotSegment,
    #[error("a path segment encodes a /, a backslash or a control character")]
    EncodedSeparator,
    #[error("the path has bad percent-encoding")]
    BadPercentEncoding,
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
}

/// The path's segments, percent-decoded, as routes match them; `Err` for a path whose reading is
/// ambiguous, which is refused rather than guessed at.
///
/// The rule: the query and fragment are dropped, one trailing `/` is dropped (`/a/` is `/a`),
/// every segment is percent-decoded (so `/%61dmin` is `/admin`). Refused: a path that does not
/// start with `/`; an empty segment (`//`); a `.` or `..` segment, plain or encoded; an encoded
/// `/` or `\` inside a segment; a `\`, a `;` (path parameters) or a control character anywhere;
/// bad percent-encoding or bytes that are not UTF-8. A refused path never reaches a route or
/// the `unmatched` fallback, so a gateway and its upstream cannot read one path two ways.
pub fn canonical_segments(path: &str) -> Result<Vec<String>, BadPath> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let Some(rest) = path.strip_prefix('/') else {
        return Err(BadPath::NotAbsolute);
    };
    if path.contains(['\\', ';']) || path.chars().any(char::is_control) {
        return Err(BadPath::ForbiddenCharacter);
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(|raw| {
            if raw.is_empty() {
                return Err(BadPath::EmptySegment);
            }
            let segment = percent_decode(raw)?;
            if segment == "." || segment == ".." {
                return Err(BadPath::DotSegment);
            }
            if segment.contains(['/', '\\']) || segment.chars().any(char::is_control) {
                return Err(BadPath::EncodedSeparator);
            }
            Ok(segment)
        })
        .collect()
}

impl Route {
    fn new(spec: &RouteSpec) -> Result<Self, RouteProblem> {
        let method = match spec.method.trim() {
            "*" => None,
            "" => return Err(problem("method", "required (an HTTP method, or * for any)")),
            m if m.chars().all(|c| c.is_ascii_alphabetic()) => Some(m.to_ascii_uppercase()),
            m => return Err(problem("method", format!("{m:?} is not an HTTP method"))),
        };
        if !spec.path.starts_with('/') {
            return Err(problem(
                "path",
                format!("{:?} must start with /", spec.path),
            ));
        }
        let parts: Vec<&str> = spec.path.trim_start_matches('/').split('/').collect();
        let mut segments = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(rest) if rest.starts_with('*') => {
                    if i + 1 != parts.len() {
                        return Err(problem(
                            "path",
                            format!("{{{rest}}} must be the last segment"),
                        ));
                    }
                    Segment::Rest(rest[1..].to_owned())
                }
                Some(name) => Segment::Capture(name.to_owned()),
                None if part.contains(['{', '}']) => {
                    return Err(problem(
                        "path",
                        format!("{part:?}: a capture must be a whole segment, like {{name}}"),
                    ));
                }
                None => Segment::Literal((*part).to_owned()),
            };
            if let Segment::Capture(name) | Segment::Rest(name) = &segment
                && (name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            {
                return Err(problem("path", format!("{name:?} is not a capture name")));
            }
            segments.push(segment);
        }
        let captured = |name: &str| {
            segments
                .iter()
                .any(|s| matches!(s, Segment::Capture(n) | Segment::Rest(n) if n == name))
        };
        if spec.action.is_empty() {
            return Err(problem("action", "required"));
        }
        let brace = spec.resource.find('{').unwrap_or(spec.resource.len());
        let Some((resource_type, id_head)) = spec.resource[..brace].rsplit_once("::") else {
            return Err(problem(
                "resource",
                format!(
                    "{:?} is not Type::id (e.g. Dataset::{{name}})",
                    spec.resource
                ),
            ));
        };
        let mut resource_id = Vec::new();
        let mut rest = format!("{id_head}{}", &spec.resource[brace..]);
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest.find('}').ok_or_else(|| {
                        problem("resource", format!("unclosed {{ in {:?}", spec.resource))
                    })?;
                    let name = rest[1..end].to_owned();
                    if !captured(&name) {
                        return Err(problem(
                            "resource",
                            format!("{{{name}}} is not captured by the path {:?}", spec.path),
                        ));
                    }
                    resource_id.push(Piece::Capture(name));
                    rest = rest[end + 1..].to_owned();
                }
                Some(at) => {
                    resource_id.push(Piece::Text(rest[..at].to_owned()));
                    rest = rest[at..].to_owned();
                }
                None => {
                    resource_id.push(Piece::Text(std::mem::take(&mut rest)));
                }
            }
        }
        if resource_type.is_empty() || resource_id.is_empty() {
            return Err(problem(
                "resource",
                format!("{:?} is not Type::id", spec.resource),
            ));
        }
        Ok(Route {
            method,
            segments,
            action: spec.action.clone(),
            resource_type: resource_type.to_owned(),
            resource_id,
        })
    }

    /// The captures, if the path's (decoded) segments match this route's. Literal segments match
    /// whatever their ASCII case, so a case-insensitive upstream cannot be reached around them.
    fn matches(&self, path: &[String]) -> Option<Vec<(String, String)>> {
        let mut captures = Vec::new();
        let mut at = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    if !path.get(at)?.eq_ignore_ascii_case(literal) {
                        return None;
                    }
                    at += 1;
                }
                Segment::Capture(name) => {
                    captures.push((name.clone(), path.get(at)?.clone()));
                    at += 1;
                }
                Segment::Rest(name) => {
                    let value = path[at.min(path.len())..].join("/");
                    if value.is_empty() {
                        return None;
                    }
                    captures.push((name.clone(), value));
                    at = path.len();
                }
            }
        }
        (at == path.len()).then_some(captures)
    }
}

/// Decodes `%XX` escapes; refuses a malformed escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Result<String, BadPath> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(BadPath::BadPercentEncoding)?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BadPath::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str, action: &str, resource: &str) -> RouteSpec {
        RouteSpec {
            method: method.into(),
            path: path.into(),
            action: action.into(),
            resource: resource.into(),
        }
    }

    #[test]
    fn templates_match_segments_and_fill_the_resource() {
        let table = RouteTable::new(&[
            route("GET", "/datasets/{name}", "read", "Dataset::{name}"),
            route("PUT", "/configs/{name}", "update", "Config::{name}"),
            route("*", "/tools/{*path}", "use", "Tool::{path}"),
            route(
                "POST",
                "/teams/{team}/exports/{db}",
                "export",
                "Ns::Database::{team}-{db}",
            ),
        ])
        .unwrap();
        let target = |m: &str, p: &str| table.resolve(m, p).map(Result::unwrap);
        let read = target("get", "/datasets/sales%202026?limit=5").unwrap();
        assert_eq!((read.action.as_str(), read.route), ("read", 0));
        assert_eq!(read.resource, EntityRef::new("Dataset", "sales 2026"));
        assert_eq!(target("GET", "/datasets/a/b"), None);
        assert_eq!(target("GET", "/datasets/"), None);
        assert_eq!(target("POST", "/datasets/a"), None);
        assert_eq!(
            target("DELETE", "/tools/a/b").unwrap().resource,
            EntityRef::new("Tool", "a/b")
        );
        assert_eq!(
            target("POST", "/teams/t1/exports/db2").unwrap().resource,
            EntityRef::new("Ns::Database", "t1-db2")
        );
        assert!(table.resolve("GET", "/datasets/%zz").unwrap().is_err());
    }

    #[test]
    fn paths_are_read_one_way_or_refused() {
        let table = RouteTable::new(&[
            route("GET", "/admin/{name}", "administer", "Config::{name}"),
            route("GET", "/public/{*rest}", "read", "Dataset::{rest}"),
        ])
        .unwrap();
        let action = |m: &str, p: &str| table.resolve(m, p).map(|t| t.map(|t| t.action));
        // Spellings of the guarded path reach the guarded route, never another one.
        for path in [
            "/admin/x",
            "/admin/x/",
            "/ADMIN/x",
            "/%61dmin/x",
            "/Admin/x?y=1",
        ] {
            assert_eq!(action("get", path), Some(Ok("administer".into())), "{path}");
        }
        // Ambiguous spellings are refused before any route or the unmatched fallback.
        for path in [
            "/public/../admin/x",
            "/public/%2e%2e/admin/x",
            "/public/.%2E/admin/x",
            "/public/./x",
            "//admin/x",
            "/admin//x",
            "/public/a%2Fb",
            "/public/a%5Cb",
            "/public/a\\b",
            "/admin/x;jsessionid=1",
            "/admin/x%00",
            "admin/x",
            "/admin/%zz",
            "/admin/%ff",
        ] {
            assert!(matches!(action("GET", path), Some(Err(_))), "{path}");
        }
        assert_eq!(
            table
                .resolve("GET", "/public/a/b%20c")
                .unwrap()
                .unwrap()
                .resource,
            EntityRef::new("Dataset", "a/b c")
        );
        assert_eq!(action("GET", "/"), None);
    }

    #[test]
    fn bad_routes_are_refused_naming_the_field() {
        let field = |spec: RouteSpec| RouteTable::new(&[spec]).unwrap_err().field;
        assert_eq!(
            field(route("GET", "/d/{n}", "read", "Dataset::{m}")),
            "resource"
        );
        assert_eq!(field(route("GET", "d/{n}", "read", "Dataset::{n}")), "path");
        assert_eq!(
            field(route("GET", "/d/{*n}/x", "read", "Dataset::{n}")),
            "path"
        );
        assert_eq!(
            field(route("GET", "/d/x{n}", "read", "Dataset::{n}")),
            "path"
        );
        assert_eq!(field(route("G T", "/d", "read", "Dataset::x")), "method");
        assert_eq!(field(route("GET", "/d", "read", "Dataset")), "resource");
        assert_eq!(field(route("GET", "/d", "", "Dataset::x")), "action");
    }
}
