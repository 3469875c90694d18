//! The route table for gateway APIs: maps an HTTP method and path to the action and resource a
//! request is about, from templates such as `GET /datasets/{name}` -> `read` on
//! `Dataset::{name}`. `{name}` matches one path segment (percent-decoded); `{*rest}`, last in a
//! template, matches the rest of the path. The first route that matches wins. A route may also
//! describe its resource, for types the schema marks `@described_by_caller`: attributes from the
//! path's captures or from request headers, and parents from captures.

use std::collections::BTreeMap;

use serde::Deserialize;

use warrant_domain::EntityRef;

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
    /// The resource's attributes, by name, for a resource Warrant's facts do not hold (of a
    /// type marked `@described_by_caller`): a text with the path's captures (`"{owner}"`) or a
    /// request header (`"header:x-todo-owner"`; left out when the request has none).
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// Its parents among the entities Warrant holds, `Type::id` with captures:
    /// `Project::{project}`.
    #[serde(default)]
    pub resource_parents: Vec<String>,
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
    attributes: Vec<(String, AttributeSource)>,
    parents: Vec<(String, Vec<Piece>)>,
}

#[derive(Debug, Clone)]
enum AttributeSource {
    Template(Vec<Piece>),
    Header(String),
}

/// Where a described attribute's value comes from, once the path is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    Text(String),
    /// The value of this request header (lower case), if the request has it.
    Header(String),
}

/// What a request is about, by its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub action: String,
    pub resource: EntityRef,
    /// The resource as the route describes it: attributes by name, and parents.
    pub attributes: Vec<(String, AttributeValue)>,
    pub parents: Vec<EntityRef>,
    /// The route's position in the table (`usize::MAX` for an MCP endpoint's).
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
            let render = |pieces: &[Piece]| -> String {
                pieces
                    .iter()
                    .map(|piece| match piece {
                        Piece::Text(text) => text.as_str(),
                        Piece::Capture(name) => captures
                            .iter()
                            .find(|(n, _)| n == name)
                            .map_or("", |(_, v)| v.as_str()),
                    })
                    .collect()
            };
            Some(Ok(Target {
                action: route.action.clone(),
                resource: EntityRef::new(route.resource_type.clone(), render(&route.resource_id)),
                attributes: route
                    .attributes
                    .iter()
                    .map(|(name, source)| {
                        let value = match source {
                            AttributeSource::Template(pieces) => {
                                AttributeValue::Text(render(pieces))
                            }
                            AttributeSource::Header(header) => {
                                AttributeValue::Header(header.clone())
                            }
                        };
                        (name.clone(), value)
                    })
                    .collect(),
                parents: route
                    .parents
                    .iter()
                    .map(|(type_name, id)| EntityRef::new(type_name.clone(), render(id)))
                    .collect(),
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
        let (resource_type, resource_id) =
            entity_template(&spec.resource, "resource", &spec.path, &captured)?;
        let mut attributes = Vec::new();
        for (name, source) in &spec.resource_attributes {
            let source = match source.strip_prefix("header:") {
                Some(header) if !header.trim().is_empty() => {
                    AttributeSource::Header(header.trim().to_ascii_lowercase())
                }
                Some(_) => {
                    return Err(problem(
                        "resource_attributes",
                        format!("{name}: \"header:\" names no header"),
                    ));
                }
                None => AttributeSource::Template(
                    pieces(source, "resource_attributes", &spec.path, &captured)
                        .map_err(|p| problem(p.field, format!("{name}: {}", p.message)))?,
                ),
            };
            attributes.push((name.clone(), source));
        }
        let parents = spec
            .resource_parents
            .iter()
            .map(|parent| {
                entity_template(parent, "resource_parents", &spec.path, &captured)
                    .map(|(type_name, id)| (type_name.to_owned(), id))
            })
            .collect::<Result<_, _>>()?;
        Ok(Route {
            method,
            segments,
            action: spec.action.clone(),
            resource_type: resource_type.to_owned(),
            resource_id,
            attributes,
            parents,
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

/// `Type::id` where the id may use the path's captures, split into the type and the id's pieces.
fn entity_template<'t>(
    template: &'t str,
    field: &'static str,
    path: &str,
    captured: &dyn Fn(&str) -> bool,
) -> Result<(&'t str, Vec<Piece>), RouteProblem> {
    let not_an_entity = || {
        problem(
            field,
            format!("{template:?} is not Type::id (e.g. Dataset::{{name}})"),
        )
    };
    let brace = template.find('{').unwrap_or(template.len());
    let (type_name, id_head) = template[..brace]
        .rsplit_once("::")
        .ok_or_else(not_an_entity)?;
    let id = pieces(
        &format!("{id_head}{}", &template[brace..]),
        field,
        path,
        captured,
    )?;
    if type_name.is_empty() || id.is_empty() {
        return Err(not_an_entity());
    }
    Ok((type_name, id))
}

/// A text with `{capture}`s of the path, split into pieces.
fn pieces(
    template: &str,
    field: &'static str,
    path: &str,
    captured: &dyn Fn(&str) -> bool,
) -> Result<Vec<Piece>, RouteProblem> {
    let mut found = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest
                    .find('}')
                    .ok_or_else(|| problem(field, format!("unclosed {{ in {template:?}")))?;
                let name = &rest[1..end];
                if !captured(name) {
                    return Err(problem(
                        field,
                        format!("{{{name}}} is not captured by the path {path:?}"),
                    ));
                }
                found.push(Piece::Capture(name.to_owned()));
                rest = &rest[end + 1..];
            }
            Some(at) => {
                found.push(Piece::Text(rest[..at].to_owned()));
                rest = &rest[at..];
            }
            None => {
                found.push(Piece::Text(rest.to_owned()));
                rest = "";
            }
        }
    }
    Ok(found)
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
            resource_attributes: BTreeMap::new(),
            resource_parents: Vec::new(),
        }
    }

    #[test]
    fn a_route_describes_its_resource_from_captures_and_headers() {
        let mut spec = route(
            "DELETE",
            "/projects/{project}/todos/{id}",
            "delete",
            "todo::{id}",
        );
        spec.resource_attributes = BTreeMap::from([
            ("ownerID".to_owned(), "header:X-Todo-Owner".to_owned()),
            ("label".to_owned(), "p-{project}".to_owned()),
        ]);
        spec.resource_parents = vec!["Project::{project}".to_owned()];
        let table = RouteTable::new(&[spec.clone()]).unwrap();
        let target = table
            .resolve("DELETE", "/projects/apollo/todos/t-1")
            .unwrap()
            .unwrap();
        assert_eq!(target.resource, EntityRef::new("todo", "t-1"));
        assert_eq!(
            target.attributes,
            [
                ("label".to_owned(), AttributeValue::Text("p-apollo".into())),
                (
                    "ownerID".to_owned(),
                    AttributeValue::Header("x-todo-owner".into())
                ),
            ]
        );
        assert_eq!(target.parents, [EntityRef::new("Project", "apollo")]);

        for (attributes, parents, message) in [
            (
                vec![("a", "{nope}")],
                vec![],
                "routes[0].resource_attributes: a: {nope} is not captured",
            ),
            (
                vec![("a", "header: ")],
                vec![],
                "routes[0].resource_attributes: a: \"header:\" names no header",
            ),
            (
                vec![],
                vec!["{project}"],
                "routes[0].resource_parents: \"{project}\" is not Type::id",
            ),
            (
                vec![],
                vec!["Project::{other}"],
                "routes[0].resource_parents: {other} is not captured",
            ),
        ] {
            let mut bad = spec.clone();
            bad.resource_attributes = attributes
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            bad.resource_parents = parents.into_iter().map(str::to_owned).collect();
            let error = RouteTable::new(&[bad]).unwrap_err().to_string();
            assert!(error.starts_with(message), "{error}");
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
