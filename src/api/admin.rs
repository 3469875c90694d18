//! `warrant.v1.Admin` on the admin listener: live approvals and approval requests, identities and
//! entities, policy reloads and status. Wire conversion only: the rules live in `control`. (Beside it on the same listener:
//! `decision_log`, and `auth`, the bearer token every call passes first.)

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::import_spool::ImportSpool;
use crate::api::page_token::PageTokens;
use crate::observability::metrics::Metrics;
use warrant_control::approvals::{ApprovalFilter, ApprovalGrant, ApprovalState, ApprovalView};
use warrant_control::entities::{ChangeReason, EntitySpec, EntityView};
use warrant_control::identities::{IdentityFilter, IdentitySpec, IdentityUpdate, IdentityView};
use warrant_control::links::LinkView;
use warrant_control::requests::{ApprovalRequest, ApproverProof, RequestState, Verdict};
use warrant_control::{Control, ControlError, Origin, StatusView};
use warrant_domain::EntityRef;
use warrant_domain::clock::UnixMillis;
use warrant_policy::{LinkOrigin, LinkSpec};
use warrant_proto as proto;
use warrant_proto::convert::{entity_ref, non_empty, timestamp, uid_ref, unix_millis};

/// `warrant.v1.Admin`.
pub struct AdminService {
    control: Arc<Control>,
    /// The issuers, whose keys a reload reads again.
    credentials: Option<Arc<crate::credentials::Credentials>>,
    metrics: Arc<Metrics>,
    page_tokens: PageTokens,
    /// The console's sign-in links; `None` when the console is off.
    invites: Option<Arc<crate::api::console::Invites>>,
    /// Access reviews and attestations.
    reviews: Arc<crate::api::review::Reviews>,
    /// The data folder, where an import is spooled on its way in.
    data_dir: std::path::PathBuf,
}

impl AdminService {
    pub fn new(
        control: Arc<Control>,
        credentials: Option<Arc<crate::credentials::Credentials>>,
        metrics: Arc<Metrics>,
        page_tokens: PageTokens,
        invites: Option<Arc<crate::api::console::Invites>>,
        reviews: Arc<crate::api::review::Reviews>,
        data_dir: std::path::PathBuf,
    ) -> Self {
        AdminService {
            control,
            credentials,
            metrics,
            page_tokens,
            invites,
            reviews,
            data_dir,
        }
    }

    /// The position `token` names in `list`; a token this node did not issue is refused (and
    /// the call `call` counted as refused).
    fn position(
        &self,
        call: &'static str,
        list: &str,
        token: &str,
    ) -> Result<Option<String>, Status> {
        self.page_tokens.read(list, token).inspect_err(|status| {
            self.metrics.admin_call(call, status.code());
        })
    }

    /// Runs `call` on the control plane off the async threads (it writes to disk), counts it,
    /// and maps its error to a status.
    async fn run<T: Send + 'static>(
        &self,
        method: &'static str,
        call: impl FnOnce(&Control) -> Result<T, Status> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let control = Arc::clone(&self.control);
        let outcome = tokio::task::spawn_blocking(move || call(&control))
            .await
            .unwrap_or_else(|error| Err(Status::internal(format!("admin call failed: {error}"))));
        counted(&self.metrics, method, &outcome);
        outcome.map(Response::new)
    }
}

/// Counts a finished admin call by its status code, and logs one that failed inside Warrant.
fn counted<T>(metrics: &Metrics, method: &'static str, outcome: &Result<T, Status>) {
    let code = outcome
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    metrics.admin_call(method, code);
    if let Err(status) = outcome
        && code == tonic::Code::Internal
    {
        tracing::error!(method, error = status.message(), "admin call failed");
    }
}

pub(crate) fn control_status(error: ControlError) -> Status {
    match error {
        ControlError::Invalid { .. } => Status::invalid_argument(error.to_string()),
        ControlError::NotFound(message) => Status::not_found(message),
        ControlError::AlreadyExists(message) => Status::already_exists(message),
        ControlError::ReloadFailed(message) => Status::failed_precondition(format!(
            "the reload failed and the last good policies keep serving: {message}"
        )),
        ControlError::Conflict(message) => Status::failed_precondition(message),
        ControlError::Exhausted(message) => Status::resource_exhausted(message),
        ControlError::Refused(message) => Status::permission_denied(message),
        ControlError::Store(error) => Status::internal(error.to_string()),
        ControlError::Unrecorded(message) | ControlError::SharedStore(message) => {
            Status::unavailable(message)
        }
    }
}

fn entity(entity: Option<proto::EntityRef>) -> Option<EntityRef> {
    entity.map(|e| EntityRef::new(e.r#type, e.id))
}

fn entities(list: Vec<proto::EntityRef>) -> Vec<EntityRef> {
    list.into_iter().filter_map(|e| entity(Some(e))).collect()
}

fn required_entity(value: Option<proto::EntityRef>, field: &str) -> Result<EntityRef, Status> {
    entity(value).ok_or_else(|| Status::invalid_argument(format!("{field}: required")))
}

fn attributes(fields: Option<prost_types::Struct>) -> serde_json::Map<String, serde_json::Value> {
    fields.map(proto::struct_to_json).unwrap_or_default()
}

fn attributes_proto(
    fields: serde_json::Map<String, serde_json::Value>,
) -> Option<prost_types::Struct> {
    match proto::json_to_value(serde_json::Value::Object(fields)).kind {
        Some(prost_types::value::Kind::StructValue(fields)) if !fields.fields.is_empty() => {
            Some(fields)
        }
        _ => None,
    }
}

fn origin(origin: Origin) -> String {
    match origin {
        Origin::File => "file",
        Origin::Live => "live",
    }
    .to_owned()
}

fn state_proto(state: ApprovalState) -> proto::ApprovalState {
    match state {
        ApprovalState::Pending => proto::ApprovalState::Pending,
        ApprovalState::Active => proto::ApprovalState::Active,
        ApprovalState::Expired => proto::ApprovalState::Expired,
        ApprovalState::Revoked => proto::ApprovalState::Revoked,
        ApprovalState::Exhausted => proto::ApprovalState::Exhausted,
    }
}

fn approval_proto(view: ApprovalView) -> proto::ApprovalRecord {
    let a = &view.approval;
    proto::ApprovalRecord {
        approval: Some(proto::ApprovalSpec {
            id: a.uid.id().unescaped().to_owned(),
            ticket: a.ticket.clone(),
            approver: Some(entity_ref(&a.approver)),
            requester: view.meta.requester.as_ref().map(entity_ref),
            subject: Some(uid_ref(&a.subject)),
            actions: a.actions.clone(),
            scope: Some(entity_ref(&a.scope)),
            not_before: Some(timestamp(a.not_before)),
            expires_at: Some(timestamp(a.expires_at)),
            max_uses: a.max_uses.unwrap_or(0),
            playbook: a.playbook.clone().unwrap_or_default(),
            justification: view.meta.justification.clone().unwrap_or_default(),
            attributes: attributes_proto(view.attributes),
        }),
        state: state_proto(view.state) as i32,
        uses: view.uses,
        budget_spent: view.spent,
        unchecked: view.meta.unchecked,
        approver_credential_sha256: view.meta.approver_credential.clone().unwrap_or_default(),
        origin: origin(view.origin),
        granted_at: view.meta.granted_at.map(|t| timestamp(UnixMillis(t))),
        revoked_at: view.meta.revoked_at.map(|t| timestamp(UnixMillis(t))),
        revoke_reason: view.meta.revoke_reason.unwrap_or_default(),
    }
}

fn entity_proto(view: EntityView) -> proto::EntityRecord {
    proto::EntityRecord {
        entity: Some(proto::EntitySpec {
            entity: Some(entity_ref(&view.entity)),
            attributes: attributes_proto(view.attributes),
            parents: view.parents.iter().map(entity_ref).collect(),
            tags: attributes_proto(view.tags),
        }),
        origin: origin(view.origin),
        updated_at: view.meta.updated_at.map(|t| timestamp(UnixMillis(t))),
        requester: view.meta.requester.as_ref().map(entity_ref),
        justification: view.meta.justification.unwrap_or_default(),
        retired_at: view.meta.retired_at.map(|t| timestamp(UnixMillis(t))),
    }
}

fn change_reason(requester: Option<proto::EntityRef>, justification: String) -> ChangeReason {
    ChangeReason {
        requester: entity(requester),
        justification: non_empty(justification),
    }
}

/// Entities as JSON lines, in chunks of about 64 KiB that end with a whole line.
fn export_chunks(entities: Vec<serde_json::Value>) -> Vec<proto::ExportFactsChunk> {
    const CHUNK: usize = 64 * 1024;
    let mut chunks = Vec::new();
    let mut data = Vec::with_capacity(CHUNK);
    for entity in entities {
        data.extend_from_slice(entity.to_string().as_bytes());
        data.push(b'\n');
        if data.len() >= CHUNK {
            chunks.push(proto::ExportFactsChunk {
                data: std::mem::replace(&mut data, Vec::with_capacity(CHUNK)),
            });
        }
    }
    if !data.is_empty() {
        chunks.push(proto::ExportFactsChunk { data });
    }
    chunks
}

type ImportStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<proto::ImportFactsProgress, Status>> + Send>,
>;

/// How often an import's caller hears how far it has come.
const IMPORT_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// An import: spooled to disk as it arrives, then read back one line at a time into the store
/// under the change (the import's size costs disk for the length of the call, not memory),
/// its progress sent to the caller as it goes, its outcome last. A caller that goes away does
/// not stop it: it is all or nothing, and ends either way.
async fn import_with_progress(
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    data_dir: std::path::PathBuf,
    stream: tonic::Streaming<proto::ImportFactsRequest>,
    answer: tokio::sync::mpsc::Sender<Result<proto::ImportFactsProgress, Status>>,
) {
    use crate::api::import_spool::ImportProgress;
    use std::sync::atomic::Ordering::Relaxed;
    let max_bytes = control.rules().max_import_bytes;
    let spool = match ImportSpool::receive(&data_dir, stream, max_bytes, change_reason).await {
        Ok(spool) => spool,
        Err(status) => {
            metrics.admin_call("ImportFacts", status.code());
            let _ = answer.send(Err(status)).await;
            return;
        }
    };
    let total = spool.bytes;
    let progress = Arc::new(ImportProgress::default());
    let work = {
        let progress = Arc::clone(&progress);
        tokio::task::spawn_blocking(move || {
            let entities = spool.entities(progress)?;
            control
                .import_entities(entities, spool.reason.clone(), spool.unchecked)
                .map_err(control_status)
        })
    };
    // (A last line without its newline is counted one byte long: hence the cap.)
    let so_far = |done: Option<proto::ImportFactsResponse>| proto::ImportFactsProgress {
        bytes_read: progress.bytes_read.load(Relaxed).min(total),
        bytes_total: total,
        entities: progress.entities.load(Relaxed),
        done,
    };
    tokio::pin!(work);
    let mut every = tokio::time::interval(IMPORT_PROGRESS_EVERY);
    let outcome = loop {
        tokio::select! {
            ended = &mut work => {
                break ended.unwrap_or_else(|error| {
                    Err(Status::internal(format!("admin call failed: {error}")))
                });
            }
            _ = every.tick() => {
                // A caller that stopped listening is no reason to stop: the import ends whole.
                let _ = answer.try_send(Ok(so_far(None)));
            }
        }
    };
    counted(&metrics, "ImportFacts", &outcome);
    let last = outcome.map(|summary| {
        so_far(Some(proto::ImportFactsResponse {
            entities: summary.entities as u64,
            created: summary.created as u64,
            facts_version: summary.facts_version.to_string(),
        }))
    });
    let _ = answer.send(last).await;
}

type ExportStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<proto::ExportFactsChunk, Status>> + Send>,
>;

fn identity_proto(view: IdentityView) -> proto::IdentityRecord {
    proto::IdentityRecord {
        identity: Some(proto::IdentitySpec {
            entity: Some(entity_ref(&view.entity)),
            owner: view.identity.owner.as_ref().map(|o| entity_ref(&o.entity)),
            status: view.identity.status.clone().unwrap_or_default(),
            attributes: attributes_proto(view.attributes),
            parents: view.parents.iter().map(entity_ref).collect(),
        }),
        origin: origin(view.origin),
        updated_at: view.meta.updated_at.map(|t| timestamp(UnixMillis(t))),
        unchecked: view.meta.unchecked,
    }
}

fn status_proto(status: StatusView) -> proto::StatusResponse {
    let (error_at, error) = match status.last_reload_error {
        Some((at, message)) => (Some(timestamp(at)), message),
        None => (None, String::new()),
    };
    proto::StatusResponse {
        policy_version: status.policy_version.to_string(),
        policies_loaded_at: Some(timestamp(status.policies_loaded_at)),
        policy_count: u32::try_from(status.policy_count).unwrap_or(u32::MAX),
        facts_version: status.facts_version.to_string(),
        entity_count: status.entity_count,
        identity_count: status.identity_count,
        approval_count: status.approval_count,
        live_changes: status.live_changes,
        last_reload_error: error,
        last_reload_failed_at: error_at,
        reloads: status.reloads,
        reload_failures: status.reload_failures,
        template_count: u32::try_from(status.template_count).unwrap_or(u32::MAX),
        link_count: status.link_count as u64,
        replica: status.replica.map(|replica| proto::ReplicaStatus {
            id: replica.id,
            applied_change: replica.applied_change,
            head_change: replica.head_change,
            fresh_as_of: Some(timestamp(replica.fresh_as_of)),
            stale: replica.stale,
        }),
    }
}

fn link_proto(view: LinkView) -> proto::PolicyLinkRecord {
    proto::PolicyLinkRecord {
        link: Some(proto::PolicyLinkSpec {
            link_id: view.spec.id,
            template_id: view.spec.template,
            principal: view.spec.principal.as_ref().map(entity_ref),
            resource: view.spec.resource.as_ref().map(entity_ref),
        }),
        origin: match view.origin {
            LinkOrigin::File => "file",
            LinkOrigin::Live => "live",
        }
        .to_owned(),
        linked_at: view.meta.granted_at.map(|t| timestamp(UnixMillis(t))),
        requester: view.meta.requester.as_ref().map(entity_ref),
        justification: view.meta.justification.unwrap_or_default(),
    }
}

/// The most items one page of a list call (ListApprovals, ListIdentities, ListPolicyLinks) holds.
const MAX_PAGE: usize = 1000;

/// A list call's page size: 0 (unset) or more than `MAX_PAGE` is `MAX_PAGE`.
fn page_limit(page_size: u32) -> usize {
    match page_size as usize {
        0 => MAX_PAGE,
        size => size.min(MAX_PAGE),
    }
}

#[tonic::async_trait]
impl proto::admin_server::Admin for AdminService {
    async fn list_approval_requests(
        &self,
        request: Request<proto::ListApprovalRequestsRequest>,
    ) -> Result<Response<proto::ListApprovalRequestsResponse>, Status> {
        let request = request.into_inner();
        let state = match request.state.as_str() {
            "" => None,
            text => Some(RequestState::parse(text).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "state: {} is not pending, approved, rejected or expired",
                    warrant_engine::limits::quote(text)
                ))
            })?),
        };
        let identity = entity(request.identity);
        self.run("ListApprovalRequests", move |control| {
            control
                .approval_requests(state, identity.as_ref())
                .map(|requests| proto::ListApprovalRequestsResponse {
                    requests: requests.iter().map(approval_request_proto).collect(),
                })
                .map_err(control_status)
        })
        .await
    }

    async fn decide_approval_request(
        &self,
        request: Request<proto::DecideApprovalRequestRequest>,
    ) -> Result<Response<proto::ApprovalRequestRecord>, Status> {
        let request = request.into_inner();
        let approver = entity(request.approver).unwrap_or_default();
        let approver_proof = match approver_credential(request.approver_credential)? {
            Some(token) => ApproverProof::Credential(token),
            None => ApproverProof::Named,
        };
        let verdict = if request.approve {
            Verdict::Approve {
                approver,
                approver_proof,
                duration_ms: Some(request.duration_seconds)
                    .filter(|s| *s != 0)
                    .map(|s| s.saturating_mul(1000)),
                max_uses: Some(request.max_uses).filter(|n| *n > 0),
                budget: (!request.budget_attribute.is_empty()).then_some(warrant_domain::Budget {
                    attribute: request.budget_attribute,
                    total: request.budget_total,
                }),
                note: None,
            }
        } else {
            Verdict::Reject {
                approver,
                approver_proof,
                reason: request.reason,
            }
        };
        self.run("DecideApprovalRequest", move |control| {
            control
                .decide_approval_request(&request.id, verdict)
                .map(|decided| approval_request_proto(&decided))
                .map_err(control_status)
        })
        .await
    }

    async fn create_console_invite(
        &self,
        request: Request<proto::CreateConsoleInviteRequest>,
    ) -> Result<Response<proto::ConsoleInvite>, Status> {
        let human = entity(request.into_inner().human).unwrap_or_default();
        let Some(invites) = self.invites.clone() else {
            self.metrics
                .admin_call("CreateConsoleInvite", tonic::Code::FailedPrecondition);
            return Err(Status::failed_precondition(
                "the console is off (console_listen is not set to an address)",
            ));
        };
        self.run("CreateConsoleInvite", move |_| {
            use crate::api::console::InviteRefused;
            let (url, expires_at) = invites.create(&human).map_err(|refused| match refused {
                InviteRefused::Invalid(_) => Status::invalid_argument(refused.to_string()),
                InviteRefused::Unavailable(_) => Status::resource_exhausted(refused.to_string()),
            })?;
            Ok(proto::ConsoleInvite {
                url,
                expires_at: Some(timestamp(expires_at)),
            })
        })
        .await
    }

    async fn grant_approval(
        &self,
        request: Request<proto::GrantApprovalRequest>,
    ) -> Result<Response<proto::ApprovalRecord>, Status> {
        let request = request.into_inner();
        let spec = request
            .approval
            .ok_or_else(|| Status::invalid_argument("approval: required"))?;
        let grant = ApprovalGrant {
            id: non_empty(spec.id),
            ticket: spec.ticket,
            approver: entity(spec.approver),
            approver_credential: approver_credential(request.approver_credential)?,
            requester: entity(spec.requester),
            subject: entity(spec.subject),
            actions: spec.actions,
            scope: entity(spec.scope),
            not_before: spec.not_before.as_ref().map(unix_millis),
            expires_at: spec.expires_at.as_ref().map(unix_millis),
            max_uses: Some(spec.max_uses).filter(|n| *n > 0),
            playbook: non_empty(spec.playbook),
            justification: non_empty(spec.justification),
            attributes: attributes(spec.attributes),
        };
        self.run("GrantApproval", move |control| {
            control
                .grant_approval(grant)
                .map(approval_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn revoke_approval(
        &self,
        request: Request<proto::RevokeApprovalRequest>,
    ) -> Result<Response<proto::ApprovalRecord>, Status> {
        let request = request.into_inner();
        if request.id.is_empty() {
            return Err(Status::invalid_argument("id: required"));
        }
        self.run("RevokeApproval", move |control| {
            control
                .revoke_approval(&request.id, &request.reason)
                .map(approval_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn get_approval(
        &self,
        request: Request<proto::GetApprovalRequest>,
    ) -> Result<Response<proto::ApprovalRecord>, Status> {
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(Status::invalid_argument("id: required"));
        }
        self.run("GetApproval", move |control| {
            control
                .approval(&id)
                .map(approval_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn list_approvals(
        &self,
        request: Request<proto::ListApprovalsRequest>,
    ) -> Result<Response<proto::ListApprovalsResponse>, Status> {
        let request = request.into_inner();
        let state = match proto::ApprovalState::try_from(request.state) {
            Ok(proto::ApprovalState::Unspecified) => None,
            Ok(proto::ApprovalState::Pending) => Some(ApprovalState::Pending),
            Ok(proto::ApprovalState::Active) => Some(ApprovalState::Active),
            Ok(proto::ApprovalState::Expired) => Some(ApprovalState::Expired),
            Ok(proto::ApprovalState::Revoked) => Some(ApprovalState::Revoked),
            Ok(proto::ApprovalState::Exhausted) => Some(ApprovalState::Exhausted),
            Err(_) => return Err(Status::invalid_argument("state: unknown value")),
        };
        let filter = ApprovalFilter {
            subject: entity(request.subject),
            ticket: non_empty(request.ticket),
            state,
        };
        let limit = page_limit(request.page_size);
        let after = self.position("ListApprovals", "approvals", &request.page_token)?;
        let tokens = self.page_tokens.clone();
        self.run("ListApprovals", move |control| {
            let page = control
                .approvals(&filter, after.as_deref(), limit)
                .map_err(control_status)?;
            Ok(proto::ListApprovalsResponse {
                approvals: page.items.into_iter().map(approval_proto).collect(),
                next_page_token: next_token(&tokens, "approvals", page.next_after),
            })
        })
        .await
    }

    async fn create_identity(
        &self,
        request: Request<proto::CreateIdentityRequest>,
    ) -> Result<Response<proto::IdentityRecord>, Status> {
        let spec = request
            .into_inner()
            .identity
            .ok_or_else(|| Status::invalid_argument("identity: required"))?;
        let spec = IdentitySpec {
            entity: entity(spec.entity),
            owner: entity(spec.owner),
            status: non_empty(spec.status),
            attributes: attributes(spec.attributes),
            parents: entities(spec.parents),
        };
        self.run("CreateIdentity", move |control| {
            control
                .create_identity(spec)
                .map(identity_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn update_identity(
        &self,
        request: Request<proto::UpdateIdentityRequest>,
    ) -> Result<Response<proto::IdentityRecord>, Status> {
        let request = request.into_inner();
        let target = required_entity(request.entity, "entity")?;
        let update = IdentityUpdate {
            owner: entity(request.owner),
            status: request.status,
            attributes: attributes(request.attributes),
            parents: request.set_parents.then(|| entities(request.parents)),
        };
        self.run("UpdateIdentity", move |control| {
            control
                .update_identity(&target, update)
                .map(identity_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn retire_identity(
        &self,
        request: Request<proto::RetireIdentityRequest>,
    ) -> Result<Response<proto::IdentityRecord>, Status> {
        let target = required_entity(request.into_inner().entity, "entity")?;
        self.run("RetireIdentity", move |control| {
            control
                .retire_identity(&target)
                .map(identity_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn get_identity(
        &self,
        request: Request<proto::GetIdentityRequest>,
    ) -> Result<Response<proto::IdentityRecord>, Status> {
        let target = required_entity(request.into_inner().entity, "entity")?;
        self.run("GetIdentity", move |control| {
            control
                .identity(&target)
                .map(identity_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn list_identities(
        &self,
        request: Request<proto::ListIdentitiesRequest>,
    ) -> Result<Response<proto::ListIdentitiesResponse>, Status> {
        let request = request.into_inner();
        let filter = IdentityFilter {
            type_name: non_empty(request.r#type),
            owner: entity(request.owner),
            status: non_empty(request.status),
        };
        let limit = page_limit(request.page_size);
        let after = self.position("ListIdentities", "identities", &request.page_token)?;
        let tokens = self.page_tokens.clone();
        self.run("ListIdentities", move |control| {
            let page = control
                .identities(&filter, after.as_deref(), limit)
                .map_err(control_status)?;
            Ok(proto::ListIdentitiesResponse {
                identities: page.items.into_iter().map(identity_proto).collect(),
                next_page_token: next_token(&tokens, "identities", page.next_after),
            })
        })
        .await
    }

    async fn put_entity(
        &self,
        request: Request<proto::PutEntityRequest>,
    ) -> Result<Response<proto::EntityRecord>, Status> {
        let request = request.into_inner();
        let spec = request
            .entity
            .ok_or_else(|| Status::invalid_argument("entity: required"))?;
        let spec = EntitySpec {
            entity: entity(spec.entity),
            attributes: attributes(spec.attributes),
            parents: entities(spec.parents),
            tags: attributes(spec.tags),
        };
        let reason = change_reason(request.requester, request.justification);
        self.run("PutEntity", move |control| {
            control
                .put_entity(spec, reason)
                .map(entity_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn get_entity(
        &self,
        request: Request<proto::GetEntityRequest>,
    ) -> Result<Response<proto::EntityRecord>, Status> {
        let target = required_entity(request.into_inner().entity, "entity")?;
        self.run("GetEntity", move |control| {
            control
                .entity(&target)
                .map(entity_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn retire_entity(
        &self,
        request: Request<proto::RetireEntityRequest>,
    ) -> Result<Response<proto::EntityRecord>, Status> {
        let request = request.into_inner();
        let target = required_entity(request.entity, "entity")?;
        let reason = change_reason(request.requester, request.justification);
        self.run("RetireEntity", move |control| {
            control
                .retire_entity(&target, reason)
                .map(entity_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn link_policy(
        &self,
        request: Request<proto::LinkPolicyRequest>,
    ) -> Result<Response<proto::PolicyLinkRecord>, Status> {
        let request = request.into_inner();
        let link = request
            .link
            .ok_or_else(|| Status::invalid_argument("link: required"))?;
        let spec = LinkSpec {
            id: link.link_id,
            template: link.template_id,
            principal: entity(link.principal),
            resource: entity(link.resource),
        };
        let reason = change_reason(request.requester, request.justification);
        self.run("LinkPolicy", move |control| {
            control
                .link_policy(spec, reason)
                .map(link_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn unlink_policy(
        &self,
        request: Request<proto::UnlinkPolicyRequest>,
    ) -> Result<Response<proto::PolicyLinkRecord>, Status> {
        let id = request.into_inner().link_id;
        self.run("UnlinkPolicy", move |control| {
            control
                .unlink_policy(&id)
                .map(link_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn get_policy_link(
        &self,
        request: Request<proto::GetPolicyLinkRequest>,
    ) -> Result<Response<proto::PolicyLinkRecord>, Status> {
        let id = request.into_inner().link_id;
        self.run("GetPolicyLink", move |control| {
            control
                .policy_link(&id)
                .map(link_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn list_policy_links(
        &self,
        request: Request<proto::ListPolicyLinksRequest>,
    ) -> Result<Response<proto::ListPolicyLinksResponse>, Status> {
        let request = request.into_inner();
        let limit = page_limit(request.page_size);
        let after = self.position("ListPolicyLinks", "policy-links", &request.page_token)?;
        let tokens = self.page_tokens.clone();
        self.run("ListPolicyLinks", move |control| {
            let page = control.policy_links(
                non_empty(request.template_id).as_deref(),
                after.as_deref(),
                limit,
            );
            Ok(proto::ListPolicyLinksResponse {
                links: page.links.into_iter().map(link_proto).collect(),
                next_page_token: next_token(&tokens, "policy-links", page.next_after),
            })
        })
        .await
    }

    type ImportFactsStream = ImportStream;

    async fn import_facts(
        &self,
        request: Request<tonic::Streaming<proto::ImportFactsRequest>>,
    ) -> Result<Response<Self::ImportFactsStream>, Status> {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(import_with_progress(
            Arc::clone(&self.control),
            Arc::clone(&self.metrics),
            self.data_dir.clone(),
            request.into_inner(),
            sender,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    type ExportFactsStream = ExportStream;
    type ReviewStream = crate::api::review::ReviewStream;

    async fn review(
        &self,
        request: Request<proto::ReviewRequest>,
    ) -> Result<Response<Self::ReviewStream>, Status> {
        self.metrics.admin_call("Review", tonic::Code::Ok);
        Ok(Response::new(
            self.reviews.stream(request.into_inner().since_seconds),
        ))
    }

    async fn attest(
        &self,
        request: Request<proto::AttestRequest>,
    ) -> Result<Response<proto::AttestResponse>, Status> {
        let outcome = self.reviews.attest_call(request.into_inner()).await;
        self.metrics.admin_call(
            "Attest",
            outcome
                .as_ref()
                .map_or_else(|s| s.code(), |_| tonic::Code::Ok),
        );
        outcome.map(Response::new)
    }

    async fn export_facts(
        &self,
        _request: Request<proto::ExportFactsRequest>,
    ) -> Result<Response<Self::ExportFactsStream>, Status> {
        let chunks = self
            .run("ExportFacts", |control| {
                Ok(export_chunks(
                    control.export_entities().map_err(control_status)?,
                ))
            })
            .await?
            .into_inner();
        let stream: ExportStream = Box::pin(tokio_stream::iter(chunks.into_iter().map(Ok)));
        Ok(Response::new(stream))
    }

    async fn reload_policies(
        &self,
        _request: Request<proto::ReloadPoliciesRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        // A reload also reads every issuer's keys again: a key withdrawn from a JWKS stops
        // verifying now, not at the next poll or refresh.
        let credentials = self.credentials.clone();
        self.run("ReloadPolicies", move |control| {
            if let Some(credentials) = &credentials {
                let changed = credentials.read_keys_again();
                tracing::info!(changed, "issuers' keys read again");
            }
            control
                .reload_policies()
                .map(status_proto)
                .map_err(control_status)
        })
        .await
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        self.run("Status", |control| Ok(status_proto(control.status())))
            .await
    }
}

/// An approver's credential as sent (`None` when empty), bounded like a Check's.
fn approver_credential(token: String) -> Result<Option<String>, Status> {
    warrant_proto::convert::bounded_credential(&token, "approver_credential")
        .map_err(|invalid| Status::invalid_argument(invalid.to_string()))?;
    Ok(non_empty(token))
}

/// The token of the page after `next_after` in `list`; empty on the last page.
fn next_token(tokens: &PageTokens, list: &str, next_after: Option<String>) -> String {
    next_after
        .map(|position| tokens.issue(list, &position))
        .unwrap_or_default()
}

/// A request as the API shows it (here and on the Check port).
pub(crate) fn approval_request_proto(request: &ApprovalRequest) -> proto::ApprovalRequestRecord {
    proto::ApprovalRequestRecord {
        id: request.id.clone(),
        identity: Some(entity_ref(&request.identity)),
        action: request.action.clone(),
        resource: Some(entity_ref(&request.resource)),
        scope: Some(entity_ref(&request.scope)),
        justification: request.justification.clone(),
        ticket: request.ticket.clone().unwrap_or_default(),
        duration_seconds: request.duration_ms / 1000,
        on_behalf_of: request.on_behalf_of.as_ref().map(entity_ref),
        decision_id: request.decision_id.clone().unwrap_or_default(),
        state: request.state.as_str().to_owned(),
        requested_at: Some(timestamp(UnixMillis(request.requested_at))),
        expires_at: Some(timestamp(UnixMillis(request.expires_at))),
        decided_by: request.decided_by.as_ref().map(entity_ref),
        decided_by_credential_sha256: request.decided_by_credential.clone().unwrap_or_default(),
        decided_at: request.decided_at.map(|at| timestamp(UnixMillis(at))),
        reason: request.reason.clone().unwrap_or_default(),
        approval_id: request.approval_id.clone().unwrap_or_default(),
    }
}
