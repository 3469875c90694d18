//! MCP (Model Context Protocol) servers behind a gateway, over streamable HTTP: a POST to a
//! configured MCP endpoint is decided by the JSON-RPC method it carries, not by its path. The
//! method and tool come from the JSON-RPC request itself, which Envoy forwards
//! (`with_request_body`), and the `Mcp-Method` and `Mcp-Name` request headers (MCP 2026-07-28)
//! must agree with it. A POST without the body is refused (`require_body`, on by default): the
//! headers alone are whatever the client wrote, and a `tools/list` header can carry a
//! `tools/call` body. An endpoint that sets `require_body = false` is decided on the headers
//! when no body came, for gateways that cannot forward it. A `tools/call` becomes the configured action and resource for its
//! tool, with its arguments in the context; every other method is looked up in the endpoint's
//! method table. Anything that cannot be read one way (not JSON-RPC, a batch, a body Envoy cut
//! short, headers and body that disagree) is refused, never passed.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

use crate::api::routes::canonical_segments;
use warrant_domain::{ContextValue, EntityRef, RESERVED_CONTEXT_KEYS};

/// One MCP endpoint as configured (`[[ext_authz.mcp]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpEndpointSpec {
    /// The endpoint's path, e.g. `/mcp/vendors` (literal segments only).
    pub path: String,
    /// A `tools/call`'s action, with `{tool}` for the tool's name [default: {tool}].
    #[serde(default = "default_tool_action")]
    pub tool_action: String,
    /// A `tools/call`'s resource, `Type::id` with `{tool}` [default: Tool::{tool}].
    #[serde(default = "default_tool_resource")]
    pub tool_resource: String,
    /// The context key that receives a `tools/call`'s arguments, when the body is forwarded
    /// [default: input].
    #[serde(default = "default_arguments_context")]
    pub arguments_context: String,
    /// Every other method's action and resource, by JSON-RPC method: exact (`tools/list`), a
    /// prefix (`notifications/*`), or `*`. `response` stands for the client's answers to the
    /// server's requests. A method not in it is refused.
    #[serde(default)]
    pub methods: BTreeMap<String, McpMethodSpec>,
    /// Refuse a POST whose body the gateway did not forward (`warrant:mcp-malformed`), rather
    /// than decide on the `Mcp-Method` and `Mcp-Name` headers alone [default: true].
    #[serde(default = "default_require_body")]
    pub require_body: bool,
}

fn default_require_body() -> bool {
    true
}

/// The action and resource a method maps to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpMethodSpec {
    pub action: String,
    /// `Type::id`.
    pub resource: String,
}

fn default_tool_action() -> String {
    "{tool}".to_owned()
}

fn default_tool_resource() -> String {
    "Tool::{tool}".to_owned()
}

fn default_arguments_context() -> String {
    "input".to_owned()
}

/// An endpoint setting that cannot be used, naming it (`ext_authz.mcp[0].tool_resource: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ext_authz.mcp[{at}].{field}: {message}")]
pub struct McpError {
    pub at: usize,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone)]
struct Endpoint {
    /// The path's segments, lower case.
    segments: Vec<String>,
    tool_action: String,
    tool_resource_type: String,
    tool_resource_id: String,
    arguments_context: String,
    methods: Vec<(String, String, EntityRef)>,
    require_body: bool,
}

/// The configured MCP endpoints.
#[derive(Debug, Clone, Default)]
pub struct McpEndpoints {
    endpoints: Vec<Endpoint>,
}

/// What an MCP request is about.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTarget {
    /// The JSON-RPC method.
    pub method: String,
    pub action: String,
    pub resource: EntityRef,
    /// A `tools/call`'s arguments and the context key they go to (when the body was forwarded).
    pub arguments: Option<(String, ContextValue)>,
}

/// Why an MCP request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpRefusal {
    /// It cannot be read one way.
    Malformed(String),
    /// Its method has no action in the endpoint's table.
    NotMapped(String),
}

/// The header Envoy sets when it forwarded only the first `max_request_bytes` of the body.
const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

impl McpEndpoints {
    pub fn new(specs: &[McpEndpointSpec]) -> Result<Self, McpError> {
        let mut endpoints = Vec::new();
        for (at, spec) in specs.iter().enumerate() {
            let error = |field: &str, message: String| McpError {
                at,
                field: field.to_owned(),
                message,
            };
            let segments = canonical_segments(&spec.path)
                .map_err(|problem| error("path", format!("{problem}")))?;
            if segments.iter().any(|s| s.contains(['{', '}'])) {
                return Err(error(
                    "path",
                    "an MCP endpoint's path has literal segments only".to_owned(),
                ));
            }
            let (tool_resource_type, tool_resource_id) = spec
                .tool_resource
                .rsplit_once("::")
                .filter(|(t, id)| !t.is_empty() && !id.is_empty())
                .ok_or_else(|| error("tool_resource", "must be Type::id".to_owned()))?;
            if spec.tool_action.is_empty() {
                return Err(error("tool_action", "must not be empty".to_owned()));
            }
            if spec.arguments_context.is_empty()
                || RESERVED_CONTEXT_KEYS.contains(&spec.arguments_context.as_str())
            {
                return Err(error(
                    "arguments_context",
                    "cannot receive request data (it is empty or Warrant's own)".to_owned(),
                ));
            }
            let mut methods = Vec::new();
            for (method, target) in &spec.methods {
                let resource = EntityRef::parse(&target.resource).ok_or_else(|| {
                    error(
                        &format!("methods.{method:?}.resource"),
                        "must be Type::id".to_owned(),
                    )
                })?;
                if target.action.is_empty() {
                    return Err(error(
                        &format!("methods.{method:?}.action"),
                        "must not be empty".to_owned(),
                    ));
                }
                methods.push((method.clone(), target.action.clone(), resource));
            }
            // Exact methods first, then the longest prefix, then `*`.
            methods.sort_by_key(|(method, _, _)| {
                (
                    method.ends_with('*'),
                    std::cmp::Reverse(method.len()),
                    method.clone(),
                )
            });
            endpoints.push(Endpoint {
                segments: segments.iter().map(|s| s.to_ascii_lowercase()).collect(),
                tool_action: spec.tool_action.clone(),
                tool_resource_type: tool_resource_type.to_owned(),
                tool_resource_id: tool_resource_id.to_owned(),
                arguments_context: spec.arguments_context.clone(),
                methods,
                require_body: spec.require_body,
            });
        }
        Ok(McpEndpoints { endpoints })
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The target of a POST to an MCP endpoint; `None` for any other request (it goes to the
    /// route table). `body` is what Envoy forwarded, if anything.
    pub fn target(
        &self,
        method: &str,
        path: &str,
        headers: &HashMap<String, String>,
        body: Option<&[u8]>,
    ) -> Option<Result<McpTarget, McpRefusal>> {
        if self.endpoints.is_empty() || !method.eq_ignore_ascii_case("POST") {
            return None;
        }
        // An unreadable path is the route table's to refuse.
        let segments = canonical_segments(path).ok()?;
        let endpoint = self.endpoints.iter().find(|endpoint| {
            endpoint.segments.len() == segments.len()
                && endpoint
                    .segments
                    .iter()
                    .zip(&segments)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b))
        })?;
        Some(endpoint.target(headers, body))
    }
}

impl Endpoint {
    fn target(
        &self,
        headers: &HashMap<String, String>,
        body: Option<&[u8]>,
    ) -> Result<McpTarget, McpRefusal> {
        let malformed = |text: &str| McpRefusal::Malformed(text.to_owned());
        let header_method = headers.get("mcp-method").map(|m| m.trim().to_owned());
        let header_name = headers.get("mcp-name").map(|n| n.trim().to_owned());
        let body = body.filter(|b| !b.is_empty());
        if body.is_some()
            && headers
                .get(PARTIAL_BODY_HEADER)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err(malformed(
                "the gateway forwarded only part of the body (raise its max_request_bytes)",
            ));
        }
        let (method, name, arguments) = match body {
            Some(bytes) => {
                let request: Value =
                    serde_json::from_slice(bytes).map_err(|_| malformed("the body is not JSON"))?;
                let Value::Object(request) = request else {
                    return Err(malformed(
                        "the body is not one JSON-RPC message (batches are not MCP)",
                    ));
                };
                let method = match request.get("method") {
                    Some(Value::String(method)) => method.clone(),
                    Some(_) => return Err(malformed("the JSON-RPC method is not a string")),
                    None if request.contains_key("result") || request.contains_key("error") => {
                        "response".to_owned()
                    }
                    None => return Err(malformed("the body has no JSON-RPC method")),
                };
                if header_method.as_ref().is_some_and(|h| *h != method) {
                    return Err(malformed("Mcp-Method does not name the body's method"));
                }
                let params = request.get("params");
                let name = match params.and_then(|p| p.get("name")) {
                    Some(Value::String(name)) => Some(name.clone()),
                    Some(_) => return Err(malformed("params.name is not a string")),
                    None => None,
                };
                if header_name.is_some() && header_name != name {
                    return Err(malformed("Mcp-Name does not name the body's params.name"));
                }
                let arguments = match params.and_then(|p| p.get("arguments")) {
                    None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
                    Some(arguments @ Value::Object(_)) => arguments.clone(),
                    Some(_) => return Err(malformed("params.arguments is not an object")),
                };
                (method, name, Some(arguments))
            }
            None if self.require_body => {
                return Err(malformed(
                    "no forwarded body: the endpoint decides on the JSON-RPC request itself \
                     (forward it with the gateway's with_request_body, or set require_body = false)",
                ));
            }
            None => (
                header_method.ok_or_else(|| {
                    malformed("no MCP method: neither an Mcp-Method header nor a forwarded body")
                })?,
                header_name,
                None,
            ),
        };
        if method == "tools/call" {
            let tool = name
                .filter(|n| !n.is_empty())
                .ok_or_else(|| malformed("a tools/call names no tool"))?;
            let arguments = match arguments {
                Some(arguments) => {
                    let value = crate::api::json_context_value(&arguments, "params.arguments")
                        .map_err(|error| McpRefusal::Malformed(error.to_string()))?
                        .unwrap_or(ContextValue::Record(BTreeMap::new()));
                    Some((self.arguments_context.clone(), value))
                }
                None => None,
            };
            return Ok(McpTarget {
                action: self.tool_action.replace("{tool}", &tool),
                resource: EntityRef::new(
                    &self.tool_resource_type,
                    self.tool_resource_id.replace("{tool}", &tool),
                ),
                method,
                arguments,
            });
        }
        let (_, action, resource) = self
            .methods
            .iter()
            .find(|(pattern, _, _)| match pattern.strip_suffix('*') {
                Some(prefix) => method.starts_with(prefix),
                None => *pattern == method,
            })
            .ok_or_else(|| McpRefusal::NotMapped(method.clone()))?;
        Ok(McpTarget {
            method,
            action: action.clone(),
            resource: resource.clone(),
            arguments: None,
        })
    }
}

impl std::fmt::Display for McpRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McpRefusal::Malformed(text) => write!(f, "{text}"),
            McpRefusal::NotMapped(method) => write!(
                f,
                "no action for the MCP method {}",
                warrant_engine::limits::quote(method)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> McpEndpoints {
        endpoints_requiring_body(false)
    }

    fn endpoints_requiring_body(require_body: bool) -> McpEndpoints {
        McpEndpoints::new(&[McpEndpointSpec {
            require_body,
            path: "/mcp/vendors".to_owned(),
            tool_action: default_tool_action(),
            tool_resource: default_tool_resource(),
            arguments_context: default_arguments_context(),
            methods: BTreeMap::from([
                (
                    "tools/list".to_owned(),
                    McpMethodSpec {
                        action: "use_mcp_server".to_owned(),
                        resource: "McpServer::vendors".to_owned(),
                    },
                ),
                (
                    "notifications/*".to_owned(),
                    McpMethodSpec {
                        action: "notify".to_owned(),
                        resource: "McpServer::vendors".to_owned(),
                    },
                ),
            ]),
        }])
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_tool_call_is_read_from_headers_or_body_and_they_must_agree() {
        let mcp = endpoints();
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay_invoice","arguments":{"vendor":"acme","amount":1200}}}"#;
        let target = mcp
            .target("POST", "/mcp/vendors", &headers(&[]), Some(call))
            .unwrap()
            .unwrap();
        assert_eq!(target.action, "pay_invoice");
        assert_eq!(target.resource, EntityRef::new("Tool", "pay_invoice"));
        let (key, ContextValue::Record(arguments)) = target.arguments.unwrap() else {
            panic!("arguments are a record")
        };
        assert_eq!(key, "input");
        assert_eq!(arguments["amount"], ContextValue::Long(1200));

        let only_headers = headers(&[("mcp-method", "tools/call"), ("mcp-name", "pay_invoice")]);
        let target = mcp
            .target("POST", "/MCP/vendors/", &only_headers, None)
            .unwrap()
            .unwrap();
        assert_eq!(target.action, "pay_invoice");
        assert_eq!(target.arguments, None);

        let disagreeing = headers(&[("mcp-name", "lookup_vendor")]);
        assert!(matches!(
            mcp.target("POST", "/mcp/vendors", &disagreeing, Some(call)),
            Some(Err(McpRefusal::Malformed(_)))
        ));
        let cut = headers(&[(PARTIAL_BODY_HEADER, "true")]);
        assert!(matches!(
            mcp.target("POST", "/mcp/vendors", &cut, Some(call)),
            Some(Err(McpRefusal::Malformed(_)))
        ));
    }

    #[test]
    fn other_methods_come_from_the_table_and_anything_else_is_refused() {
        let mcp = endpoints();
        let none = headers(&[]);
        let ask = |body: &[u8]| mcp.target("POST", "/mcp/vendors", &none, Some(body));
        let listed = ask(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(listed.action, "use_mcp_server");
        let notified = ask(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(notified.action, "notify");
        assert_eq!(
            ask(br#"{"jsonrpc":"2.0","id":3,"method":"resources/read"}"#),
            Some(Err(McpRefusal::NotMapped("resources/read".to_owned())))
        );
        for bad in [
            &b"not json"[..],
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"n":1.5}}}"#,
        ] {
            assert!(
                matches!(ask(bad), Some(Err(McpRefusal::Malformed(_)))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Not a POST to the endpoint: the route table's.
        assert_eq!(mcp.target("GET", "/mcp/vendors", &none, None), None);
        assert_eq!(mcp.target("POST", "/mcp/other", &none, None), None);
        // Neither headers nor body.
        assert!(matches!(
            mcp.target("POST", "/mcp/vendors", &none, None),
            Some(Err(McpRefusal::Malformed(_)))
        ));
    }

    #[test]
    fn by_default_a_post_without_its_body_is_refused_whatever_its_headers_say() {
        let mcp = endpoints_requiring_body(true);
        let listing = headers(&[("mcp-method", "tools/list")]);
        for body in [None, Some(&b""[..])] {
            assert!(matches!(
                mcp.target("POST", "/mcp/vendors", &listing, body),
                Some(Err(McpRefusal::Malformed(_)))
            ));
        }
        // The body decides, and a header that names another method is refused.
        let call =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay_invoice"}}"#;
        assert!(matches!(
            mcp.target("POST", "/mcp/vendors", &listing, Some(call)),
            Some(Err(McpRefusal::Malformed(_)))
        ));
        let target = mcp
            .target("POST", "/mcp/vendors", &headers(&[]), Some(call))
            .unwrap()
            .unwrap();
        assert_eq!(target.action, "pay_invoice");
    }
}
