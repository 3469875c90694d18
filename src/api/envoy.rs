//! Envoy's external authorization API, `envoy.service.auth.v3.Authorization/Check`, served on
//! the Check port so a gateway can point at Warrant with no adapter. Turns the HTTP request Envoy
//! describes into an engine request (principal from the mTLS peer's SPIFFE ID, else a header the
//! gateway sets; action and resource from the route table; approval and context from headers and
//! attributes) and the decision into the answer Envoy expects. Never answers with a gRPC error:
//! whatever goes wrong is a deny, so Envoy's `failure_mode_allow` can never turn it into an allow.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use serde::Deserialize;
use tonic::{Request, Response, Status};

use crate::api::decider::Decider;
use crate::api::mcp::{McpEndpointSpec, McpEndpoints, McpError, McpRefusal};
use crate::api::routes::{AttributeValue, RouteError, RouteSpec, RouteTable};
use crate::observability::metrics::Api;
use crate::observability::traces::{self, TraceHeaders};
use tracing::Instrument as _;
use warrant_domain::{
    ContextValue, Effect, EntityRef, RESERVED_CONTEXT_KEYS, Reason, ResourceDescription,
};

/// The response header (to the upstream on allow, to the client on deny) with the decision id.
pub const DECISION_ID_HEADER: &str = "x-warrant-decision-id";

/// What to do with a request no route matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Deny it (403, `warrant:no-route`).
    #[default]
    Deny,
    /// Let it through undecided and unrecorded: for gateways that send every route to Warrant
    /// but guard only some.
    Allow,
}

/// The `[ext_authz]` section of the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzSettings {
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// MCP endpoints: POSTs to them are decided by their JSON-RPC method (see `api::mcp`),
    /// before the route table.
    #[serde(default)]
    pub mcp: Vec<McpEndpointSpec>,
    #[serde(default)]
    pub unmatched: Unmatched,
    /// A header that names the principal (`Type::id`), set by a gateway that has verified the
    /// caller. Off unless set; an mTLS peer's SPIFFE ID always wins over it.
    pub principal_header: Option<String>,
    /// The header that carries the presented approval's id [default: x-approval-id].
    pub approval_header: Option<String>,
    /// The header that carries the principal's credential (a JWT, with or without `Bearer `),
    /// e.g. `authorization`; off unless set.
    pub credential_header: Option<String>,
    /// The context key that receives `{method, path, host, source_address}`; off unless set
    /// (the schema must declare it).
    pub http_context: Option<String>,
    /// Request headers to pass on, by header name, to the context key that receives each.
    #[serde(default)]
    pub context_headers: BTreeMap<String, String>,
    /// Envoy's per-route `context_extensions` to pass on, by key, to the context key that
    /// receives each.
    #[serde(default)]
    pub context_extensions: BTreeMap<String, String>,
}

/// The ext_authz mapping in force, checked.
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    routes: RouteTable,
    mcp: McpEndpoints,
    unmatched: Unmatched,
    principal_header: Option<String>,
    approval_header: String,
    credential_header: Option<String>,
    http_context: Option<String>,
    context_headers: BTreeMap<String, String>,
    context_extensions: BTreeMap<String, String>,
}

/// Envoy settings that cannot be used, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtAuthzError {
    #[error("ext_authz.{0}")]
    Route(#[from] RouteError),
    #[error("{0}")]
    Mcp(#[from] McpError),
    #[error(
        "ext_authz: context key {key:?} cannot receive request data (it is empty or Warrant's own)"
    )]
    ContextKey { key: String },
}

impl ExtAuthz {
    /// Checks the settings; an error names the setting (`ext_authz.routes[1].path: ...`).
    pub fn new(settings: &ExtAuthzSettings) -> Result<Self, ExtAuthzError> {
        let routes = RouteTable::new(&settings.routes)?;
        let mcp = McpEndpoints::new(&settings.mcp)?;
        let targets = settings
            .http_context
            .iter()
            .chain(settings.context_headers.values())
            .chain(settings.context_extensions.values());
        for key in targets {
            if key.is_empty() || RESERVED_CONTEXT_KEYS.contains(&key.as_str()) {
                return Err(ExtAuthzError::ContextKey { key: key.clone() });
            }
        }
        let header = |name: &str| name.trim().to_ascii_lowercase();
        Ok(ExtAuthz {
            routes,
            mcp,
            unmatched: settings.unmatched,
            principal_header: settings.principal_header.as_deref().map(header),
            credential_header: settings.credential_header.as_deref().map(header),
            approval_header: header(
                settings
                    .approval_header
                    .as_deref()
                    .unwrap_or("x-approval-id"),
            ),
            http_context: settings.http_context.clone(),
            context_headers: settings
                .context_headers
                .iter()
                .map(|(name, key)| (header(name), key.clone()))
                .collect(),
            context_extensions: settings.context_extensions.clone(),
        })
    }

    /// How many routes the table has.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }
}

pub struct ExtAuthzService {
    decider: Arc<Decider>,
    mapping: Arc<ExtAuthz>,
}

/// What the route says of the resource: decided on only if the facts do not hold it and its
/// type is `@described_by_caller`.
fn resource_description(
    target: &crate::api::routes::Target,
    headers: &HashMap<String, String>,
) -> Option<ResourceDescription> {
    let described = !target.attributes.is_empty() || !target.parents.is_empty();
    described.then(|| ResourceDescription {
        attributes: target
            .attributes
            .iter()
            .filter_map(|(name, value)| {
                let text = match value {
                    AttributeValue::Text(text) => Some(text.clone()),
                    AttributeValue::Header(header) => headers.get(header).cloned(),
                };
                text.map(|text| (name.clone(), ContextValue::String(text)))
            })
            .collect(),
        parents: target.parents.clone(),
    })
}

impl ExtAuthzService {
    pub fn new(decider: Arc<Decider>, mapping: Arc<ExtAuthz>) -> Self {
        ExtAuthzService { decider, mapping }
    }
}

/// A deny given before the engine could decide.
struct Refusal {
    http: HttpStatusCode,
    grpc: tonic::Code,
    reason: &'static str,
    /// What was wrong, for the record.
    detail: Option<String>,
}

impl Refusal {
    fn forbidden(reason: &'static str) -> Self {
        Refusal {
            http: HttpStatusCode::Forbidden,
            grpc: tonic::Code::PermissionDenied,
            reason,
            detail: None,
        }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzService {
    // Calls are counted by their final status, with their latency, in `api::edge`.
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let caller = crate::listeners::peer_of(&request).caller();
        let (metadata, _, mut request) = request.into_parts();
        let headers = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .map(take_headers)
            .unwrap_or_default();
        // The trace is the HTTP request's (Envoy passes its headers), else the gRPC call's.
        let mut trace =
            TraceHeaders::from_pairs(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if trace.is_empty() {
            trace = TraceHeaders::from_metadata(&metadata);
        }
        let span = traces::api_span("ext_authz", &trace);
        let trace_id = traces::trace_id(&span, &trace);
        let mut readable = warrant_domain::CheckRequest::default();
        let answer = match self.engine_request(request, headers, &mut readable) {
            Ok(Some(check)) => {
                let check = warrant_domain::CheckRequest {
                    caller_identity: caller.identity.clone(),
                    ..check
                };
                self.decide(check, caller, &span, trace_id)
                    .instrument(span.clone())
                    .await
            }
            Ok(None) => {
                // Unmatched, and configured to pass: nothing was decided, and no header that
                // only Warrant may set passes with it.
                CheckResponse {
                    status: Some(rpc::Status {
                        code: tonic::Code::Ok as i32,
                        ..rpc::Status::default()
                    }),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers_to_remove: vec![DECISION_ID_HEADER.to_owned()],
                        ..OkHttpResponse::default()
                    })),
                    ..CheckResponse::default()
                }
            }
            Err(refusal) => {
                let decision = self
                    .decider
                    .refuse(
                        Api::ExtAuthz,
                        &readable,
                        refusal.reason,
                        refusal.detail,
                        caller,
                        trace_id,
                    )
                    .instrument(span)
                    .await;
                denied(
                    refusal.grpc,
                    refusal.http,
                    Some(&decision.decision_id.to_string()),
                    &[refusal.reason],
                    None,
                )
            }
        };
        Ok(Response::new(answer))
    }
}

impl ExtAuthzService {
    /// The engine request Envoy's request maps to: `Ok(None)` for an unmatched route that is
    /// let through.
    /// `readable` collects what is known of the request as it is read, for the record of a
    /// refusal.
    fn engine_request(
        &self,
        request: CheckRequest,
        headers: HashMap<String, String>,
        readable: &mut warrant_domain::CheckRequest,
    ) -> Result<Option<warrant_domain::CheckRequest>, Refusal> {
        let malformed = || Refusal {
            http: HttpStatusCode::BadRequest,
            grpc: tonic::Code::PermissionDenied,
            reason: Reason::MalformedCheck.as_str(),
            detail: None,
        };
        let attributes = request.attributes.ok_or_else(malformed)?;
        let http = attributes
            .request
            .and_then(|r| r.http)
            .ok_or_else(malformed)?;
        if http.method.is_empty() || http.path.is_empty() {
            return Err(malformed());
        }
        readable.request_id = Some(http.id.clone()).filter(|id| !id.is_empty());
        readable.approval_id = headers
            .get(&self.mapping.approval_header)
            .filter(|id| !id.is_empty())
            .cloned();
        let source = attributes.source.unwrap_or_default();
        if !source.principal.is_empty() {
            // The peer as named, until it is found among the identities.
            readable.principal = EntityRef::new("", source.principal.clone());
        }
        let principal = self.principal(&source.principal, &headers)?;
        readable.principal = principal.clone();
        let body = if http.raw_body.is_empty() {
            http.body.as_bytes()
        } else {
            &http.raw_body[..]
        };
        let mcp = self
            .mapping
            .mcp
            .target(&http.method, &http.path, &headers, Some(body))
            .transpose()
            .map_err(|refusal| Refusal {
                detail: Some(refusal.to_string()),
                ..match refusal {
                    McpRefusal::Malformed(_) => Refusal {
                        http: HttpStatusCode::BadRequest,
                        grpc: tonic::Code::PermissionDenied,
                        reason: Reason::McpMalformed.as_str(),
                        detail: None,
                    },
                    McpRefusal::NotMapped(_) => {
                        Refusal::forbidden(Reason::McpMethodNotMapped.as_str())
                    }
                }
            })?;
        let mut arguments = None;
        let target = match mcp {
            Some(mcp) => {
                arguments = mcp.arguments;
                Some(Ok(crate::api::routes::Target {
                    action: mcp.action,
                    resource: mcp.resource,
                    attributes: Vec::new(),
                    parents: Vec::new(),
                    route: usize::MAX,
                }))
            }
            None => self.mapping.routes.resolve(&http.method, &http.path),
        };
        let target = match target {
            Some(Ok(target)) => target,
            Some(Err(problem)) => {
                tracing::debug!(path = http.path, %problem, "refusing an unreadable path");
                return Err(Refusal {
                    http: HttpStatusCode::BadRequest,
                    grpc: tonic::Code::PermissionDenied,
                    reason: Reason::BadPath.as_str(),
                    detail: Some(format!(
                        "{problem}: {} {}",
                        warrant_engine::limits::quote(&http.method),
                        warrant_engine::limits::quote(&http.path)
                    )),
                });
            }
            None if self.mapping.unmatched == Unmatched::Allow => return Ok(None),
            None => {
                return Err(Refusal {
                    detail: Some(format!(
                        "no route for {} {}",
                        warrant_engine::limits::quote(&http.method),
                        warrant_engine::limits::quote(&http.path)
                    )),
                    ..Refusal::forbidden(Reason::NoRoute.as_str())
                });
            }
        };
        readable.action = target.action.clone();
        readable.resource = target.resource.clone();

        let context = self.context(
            &headers,
            &attributes.context_extensions,
            arguments,
            &http,
            source.address.as_ref(),
        );
        let resource_description = resource_description(&target, &headers);
        let credential = self.credential(&headers)?;
        Ok(Some(warrant_domain::CheckRequest {
            principal,
            action: target.action,
            resource: target.resource,
            context,
            approval_id: headers
                .get(&self.mapping.approval_header)
                .filter(|id| !id.is_empty())
                .cloned(),
            request_id: Some(http.id).filter(|id| !id.is_empty()),
            resource_description,
            caller_identity: None,
            credential,
        }))
    }

    /// The context Envoy's request gives: mapped headers and context extensions, the MCP
    /// call's arguments, and the HTTP request itself if asked.
    fn context(
        &self,
        headers: &HashMap<String, String>,
        extensions: &HashMap<String, String>,
        arguments: Option<(String, ContextValue)>,
        http: &envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
        source_address: Option<&envoy_types::pb::envoy::config::core::v3::Address>,
    ) -> BTreeMap<String, ContextValue> {
        let mut context = BTreeMap::new();
        for (name, key) in &self.mapping.context_headers {
            if let Some(value) = headers.get(name) {
                context.insert(key.clone(), ContextValue::String(value.clone()));
            }
        }
        for (name, key) in &self.mapping.context_extensions {
            if let Some(value) = extensions.get(name) {
                context.insert(key.clone(), ContextValue::String(value.clone()));
            }
        }
        if let Some((key, value)) = arguments {
            context.insert(key, value);
        }
        if let Some(key) = &self.mapping.http_context {
            let path = http.path.split(['?', '#']).next().unwrap_or_default();
            let record = BTreeMap::from([
                (
                    "method".to_owned(),
                    ContextValue::String(http.method.clone()),
                ),
                ("path".to_owned(), ContextValue::String(path.to_owned())),
                ("host".to_owned(), ContextValue::String(http.host.clone())),
                (
                    "source_address".to_owned(),
                    ContextValue::String(socket_address(source_address)),
                ),
            ]);
            context.insert(key.clone(), ContextValue::Record(record));
        }
        context
    }

    /// The credential the configured header carries (`Bearer` or bare), bounded like the
    /// credential of a Check or an AuthZEN request.
    fn credential(
        &self,
        headers: &HashMap<String, String>,
    ) -> Result<Option<warrant_domain::Credential>, Refusal> {
        let credential = self
            .mapping
            .credential_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .map(|value| {
                let value = value.trim();
                match value.get(..7) {
                    Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => &value[7..],
                    _ => value,
                }
            })
            .filter(|token| !token.is_empty());
        // Bounded like the credential of a Check or an AuthZEN request.
        if let Some(token) = credential
            && let Err(invalid) =
                warrant_proto::convert::bounded_credential(token, "credential_header")
        {
            return Err(Refusal {
                http: HttpStatusCode::BadRequest,
                grpc: tonic::Code::PermissionDenied,
                reason: Reason::CredentialMalformed.as_str(),
                detail: Some(invalid.to_string()),
            });
        }
        Ok(credential.map(|token| warrant_domain::Credential(token.to_owned())))
    }

    /// The principal, in order of trust: the mTLS peer's SPIFFE ID, mapped to an identity by
    /// the facts; then the gateway's principal header, if one is configured.
    fn principal(
        &self,
        peer: &str,
        headers: &HashMap<String, String>,
    ) -> Result<EntityRef, Refusal> {
        if !peer.is_empty() {
            let snapshot = self.decider.engine().snapshot();
            return match snapshot.facts.identity_by_spiffe_id(peer) {
                Some(uid) => Ok(EntityRef::from_uid(&uid)),
                None => Err(Refusal::forbidden(Reason::UnknownSpiffeId.as_str())),
            };
        }
        let named = self
            .mapping
            .principal_header
            .as_ref()
            .and_then(|name| headers.get(name));
        match named {
            Some(value) => EntityRef::parse(value)
                .ok_or_else(|| Refusal::forbidden(Reason::BadPrincipalHeader.as_str())),
            None => Err(Refusal {
                http: HttpStatusCode::Unauthorized,
                grpc: tonic::Code::Unauthenticated,
                reason: Reason::Unauthenticated.as_str(),
                detail: None,
            }),
        }
    }

    async fn decide(
        &self,
        check: warrant_domain::CheckRequest,
        caller: warrant_domain::Caller,
        span: &tracing::Span,
        trace_id: Option<String>,
    ) -> CheckResponse {
        let decision = match span.in_scope(|| self.decider.decide(Api::ExtAuthz, &check)) {
            Ok(decision) => decision,
            Err(invalid) => {
                // A route or context mapping the schema refuses: the operator has to fix it.
                tracing::warn!(
                    principal = %check.principal,
                    action = check.action,
                    resource = %check.resource,
                    error = %invalid,
                    "ext_authz request does not fit the schema; denying"
                );
                let refusal = self
                    .decider
                    .refuse(
                        Api::ExtAuthz,
                        &check,
                        Reason::NotDecidable.as_str(),
                        Some(invalid.to_string()),
                        caller,
                        trace_id,
                    )
                    .await;
                return denied(
                    tonic::Code::PermissionDenied,
                    HttpStatusCode::Forbidden,
                    Some(&refusal.decision_id.to_string()),
                    &[Reason::NotDecidable.as_str()],
                    None,
                );
            }
        };
        let mut decided = [(check, decision)];
        self.decider
            .record(Api::ExtAuthz, &mut decided, caller, trace_id)
            .await;
        let [(_, decision)] = decided;
        let decision_id = decision.decision_id.to_string();
        let metadata = metadata(&decision_id, &decision.policy_version, decision.effect);
        match decision.effect {
            Effect::Allow => CheckResponse {
                status: Some(rpc::Status {
                    code: tonic::Code::Ok as i32,
                    ..rpc::Status::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![header(DECISION_ID_HEADER, &decision_id)],
                    ..OkHttpResponse::default()
                })),
                dynamic_metadata: Some(metadata),
            },
            Effect::Deny => {
                let reasons: Vec<&str> = decision.reasons.iter().map(String::as_str).collect();
                let mut answer = denied(
                    tonic::Code::PermissionDenied,
                    HttpStatusCode::Forbidden,
                    Some(&decision_id),
                    &reasons,
                    Some(metadata),
                );
                // The approval that would allow it, for the client to ask for.
                if let Some(advice) = &decision.approval_required
                    && let Some(HttpResponse::DeniedResponse(denied)) = &mut answer.http_response
                    && let Ok(mut body) = serde_json::from_str::<serde_json::Value>(&denied.body)
                {
                    body["approval_required"] =
                        serde_json::json!(warrant_ledger::ApprovalAdviceRecord::from(advice));
                    denied.body = body.to_string();
                }
                answer
            }
        }
    }
}

/// A header Envoy sets, replacing any the client sent under the same name.
fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..HeaderValue::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

/// The HTTP request's headers by lower-case name, taken out of it: Envoy sends `headers`, or
/// `header_map` (values possibly raw bytes) when told to encode raw headers.
fn take_headers(
    http: &mut envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
) -> HashMap<String, String> {
    if !http.headers.is_empty() {
        return std::mem::take(&mut http.headers);
    }
    http.header_map
        .take()
        .map(|map| {
            map.headers
                .into_iter()
                .map(|h| {
                    let value = if h.value.is_empty() {
                        String::from_utf8_lossy(&h.raw_value).into_owned()
                    } else {
                        h.value
                    };
                    (h.key.to_ascii_lowercase(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn string_value(text: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(text.to_owned())),
    }
}

/// What Envoy stores as the filter's dynamic metadata (for access logs and later filters).
fn metadata(decision_id: &str, policy_version: &str, effect: Effect) -> Struct {
    Struct {
        fields: [
            ("decision_id", string_value(decision_id)),
            ("policy_version", string_value(policy_version)),
            ("decision", string_value(effect.label())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    }
}

/// A deny as Envoy expects it: a gRPC status for Envoy, an HTTP answer for the client whose
/// JSON body carries the decision id and reasons (policy ids and Warrant's own, nothing more).
pub(crate) fn denied(
    grpc: tonic::Code,
    http: HttpStatusCode,
    decision_id: Option<&str>,
    reasons: &[&str],
    metadata: Option<Struct>,
) -> CheckResponse {
    let body = serde_json::json!({
        "decision": "deny",
        "decision_id": decision_id,
        "reasons": reasons,
    });
    let mut headers = vec![header("content-type", "application/json")];
    if let Some(id) = decision_id {
        headers.push(header(DECISION_ID_HEADER, id));
    }
    CheckResponse {
        status: Some(rpc::Status {
            code: grpc as i32,
            message: reasons.join(", "),
            ..rpc::Status::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http as i32 }),
            headers,
            body: body.to_string(),
        })),
        dynamic_metadata: metadata,
    }
}

fn socket_address(address: Option<&envoy_types::pb::envoy::config::core::v3::Address>) -> String {
    match address.and_then(|a| a.address.as_ref()) {
        Some(Address::SocketAddress(socket)) => match socket.port_specifier {
            Some(PortSpecifier::PortValue(port)) => format!("{}:{port}", socket.address),
            _ => socket.address.clone(),
        },
        Some(Address::Pipe(pipe)) => pipe.path.clone(),
        _ => String::new(),
    }
}
