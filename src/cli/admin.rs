//! The shell's admin client: `warrant approval ...`, `warrant identity ...`,
//! `warrant entity ...`, `warrant facts ...`, `warrant reload`
//! and `warrant status` call a running server's `warrant.v1.Admin` with the admin token and print
//! what it answers as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::cli::{entity_json, parse_entity, time_json};
use crate::proto;
use crate::proto::admin_client::AdminClient;
use warrant_domain::clock::{Clock as _, SystemClock, UnixMillis};

#[derive(Debug, clap::Args)]
pub struct AdminConnection {
    /// The admin API to call.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:50052",
        env = "WARRANT_ADMIN"
    )]
    pub admin: String,
    /// The data folder whose admin.token is sent, unless WARRANT_ADMIN_TOKEN is set.
    #[arg(long, global = true, default_value = "data", env = "WARRANT_DATA_DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub tls: crate::cli::ClientTls,
}

#[derive(Debug, clap::Args)]
pub struct ApprovalArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: ApprovalCommand,
}

// Parsed once per process: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
/// Who approves or rejects: named (the admin caller's word), or proven by their own credential.
#[derive(Debug, clap::Args)]
pub struct ApproverArgs {
    /// The human who decides, as Human::id (with a credential: its Human, when left out).
    #[arg(long, required_unless_present = "approver_credential_file")]
    approver: Option<String>,
    /// A file holding the approver's own credential (a JWT naming a Human): proves who decides,
    /// where the admin token alone only names them. Never the token itself on the command line,
    /// where other users of the machine could read it.
    #[arg(long, env = "WARRANT_APPROVER_CREDENTIAL_FILE")]
    approver_credential_file: Option<PathBuf>,
}

impl ApproverArgs {
    /// The approver as named (if named) and the credential as read from its file ("" without).
    fn resolve(self) -> anyhow::Result<(Option<proto::EntityRef>, String)> {
        let named = self
            .approver
            .map(|a| parse_entity(&a, "approver"))
            .transpose()?;
        let credential = match self.approver_credential_file {
            None => String::new(),
            Some(path) => std::fs::read_to_string(&path)
                .with_context(|| {
                    format!("--approver-credential-file: cannot read {}", path.display())
                })?
                .trim()
                .to_owned(),
        };
        Ok((named, credential))
    }
}

#[derive(Debug, clap::Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per command; `grant` simply has many flags"
)]
pub enum ApprovalCommand {
    /// Grant an approval to an identity.
    Grant {
        /// Its id; Warrant picks one when not given.
        #[arg(long)]
        id: Option<String>,
        /// The change or task ticket.
        #[arg(long)]
        ticket: String,
        #[command(flatten)]
        approver: ApproverArgs,
        /// Who asked for it, as Type::id.
        #[arg(long)]
        requester: String,
        /// The identity it is granted to, as Type::id.
        #[arg(long)]
        subject: String,
        /// An action it covers (repeat for more).
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
        /// The scope that bounds it, as Scope::id.
        #[arg(long)]
        scope: String,
        /// Start of validity, RFC 3339 [default: now]
        #[arg(long)]
        not_before: Option<String>,
        /// End of validity, RFC 3339.
        #[arg(long, conflicts_with = "valid_for")]
        expires_at: Option<String>,
        /// Or how long from not_before it lasts: 90s, 30m, 2h, 1d.
        #[arg(long = "for")]
        valid_for: Option<String>,
        /// Allowed uses it grants (1: single use) [default: unlimited]
        #[arg(long)]
        max_uses: Option<u64>,
        /// A budget over all its uses, ATTRIBUTE=TOTAL: each allowed decision spends the
        /// context's ATTRIBUTE, e.g. amount=5000 [default: none]
        #[arg(long)]
        budget: Option<String>,
        #[arg(long)]
        playbook: Option<String>,
        #[arg(long)]
        justification: Option<String>,
        /// Further attributes as a JSON object, e.g. '{"max_amount": 5000}'.
        #[arg(long)]
        attributes: Option<String>,
    },
    /// Revoke an approval.
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// One approval, with its state and uses.
    Show { id: String },
    /// Approvals matching every filter given.
    List {
        /// Type::id of the identity they were granted to.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        ticket: Option<String>,
        /// pending, active, expired, revoked or exhausted.
        #[arg(long)]
        state: Option<String>,
    },
    /// Approval requests (filed by identities with RequestApproval), oldest first.
    Requests {
        /// pending, approved, rejected or expired [default: all]
        #[arg(long)]
        state: Option<String>,
        /// Type::id of the identity that asked.
        #[arg(long)]
        identity: Option<String>,
    },
    /// Approve a pending request: an approval is granted to the identity that asked, with every
    /// rule of `grant`.
    Approve {
        request: String,
        #[command(flatten)]
        approver: ApproverArgs,
        /// How long it lasts: 90s, 30m, 2h, 1d [default: what was asked for]
        #[arg(long = "for")]
        valid_for: Option<String>,
        /// Allowed uses it grants (1: single use) [default: unlimited]
        #[arg(long)]
        max_uses: Option<u64>,
        /// A budget over all its uses, ATTRIBUTE=TOTAL, e.g. amount=5000 [default: none]
        #[arg(long)]
        budget: Option<String>,
    },
    /// Reject a pending request.
    Reject {
        request: String,
        #[command(flatten)]
        approver: ApproverArgs,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: IdentityCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum IdentityCommand {
    /// Add an identity.
    Create {
        /// Type::id, e.g. Agent::triage-bot
        entity: String,
        /// The accountable human, as Human::id.
        #[arg(long)]
        owner: String,
        /// active, suspended or retired [default: active]
        #[arg(long)]
        status: Option<String>,
        /// The type's other attributes as a JSON object (Cedar's JSON form).
        #[arg(long)]
        attributes: Option<String>,
        /// A parent entity, as Type::id (repeat for more).
        #[arg(long = "parent")]
        parents: Vec<String>,
    },
    /// Change some of an identity's fields; the others stay.
    Update {
        entity: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        status: Option<String>,
        /// Attributes to replace, as a JSON object; a null value removes one.
        #[arg(long)]
        attributes: Option<String>,
        /// Replace the parents with these (comma-separated Type::id; empty for none).
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        parents: Option<Vec<String>>,
    },
    /// Suspend an identity (status "suspended").
    Suspend {
        entity: String,
    },
    /// Retire an identity (status "retired").
    Retire {
        entity: String,
    },
    Show {
        entity: String,
    },
    List {
        #[arg(long = "type")]
        type_name: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct EntityArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: EntityCommand,
}

/// Resources, scopes, humans: any entity type the schema declares except identities and
/// approvals, which have commands of their own.
#[derive(Debug, clap::Subcommand)]
pub enum EntityCommand {
    /// Create an entity, or replace it whole.
    Put {
        /// Type::id, e.g. Dataset::sales-2027
        entity: String,
        /// Every attribute, as a JSON object (Cedar's JSON form).
        #[arg(long)]
        attributes: Option<String>,
        /// A parent entity, as Type::id (repeat for more).
        #[arg(long = "parent")]
        parents: Vec<String>,
        /// Tags, as a JSON object, if the schema gives the type any.
        #[arg(long)]
        tags: Option<String>,
        /// Who asked for the change, as Type::id.
        #[arg(long)]
        requester: Option<String>,
        #[arg(long)]
        justification: Option<String>,
    },
    /// Show any entity (identities and approvals too) in Cedar's JSON form.
    Get { entity: String },
    /// Remove an entity nothing names (no entity, no policy).
    Retire {
        entity: String,
        #[arg(long)]
        requester: Option<String>,
        #[arg(long)]
        justification: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// Template links: one grant made from a template (`?principal`, `?resource`) per link.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Link a template to the entities of one grant; in force for the next decision.
    Link {
        /// The link's id: the reason decisions report.
        link_id: String,
        /// The template's @id.
        #[arg(long)]
        template: String,
        /// The entity for the template's ?principal slot, as Type::id.
        #[arg(long)]
        principal: Option<String>,
        /// The entity for the template's ?resource slot, as Type::id.
        #[arg(long)]
        resource: Option<String>,
        /// Who asked for the grant, as Type::id.
        #[arg(long)]
        requester: Option<String>,
        #[arg(long)]
        justification: Option<String>,
    },
    /// Remove a link made with `link`.
    Unlink { link_id: String },
    /// Show one link.
    GetLink { link_id: String },
    /// Every link in force (the folder's and the live ones), one JSON object per line.
    Links {
        /// Only the links of this template.
        #[arg(long)]
        template: Option<String>,
    },
    /// Publish a policy folder to a fleet's shared database, validated in full: every replica
    /// loads it, all or nothing (talks to the database, not to a replica).
    Push {
        #[arg(default_value = "policies")]
        dir: std::path::PathBuf,
        #[command(flatten)]
        store: super::fleet::StoreConnection,
    },
}

#[derive(Debug, clap::Args)]
pub struct FactsArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: FactsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FactsCommand {
    /// Add or replace many entities at once, all or nothing, from a Cedar entities file (a JSON
    /// array) or JSON lines (one entity per line), read and sent as a stream; `-` reads standard
    /// input.
    Import {
        file: PathBuf,
        /// Who asked for the import, as Type::id.
        #[arg(long)]
        requester: Option<String>,
        #[arg(long)]
        justification: Option<String>,
        /// Skip the rules identities and approvals are held to one at a time (an owner;
        /// separation of duties and a bounded window): for a trusted restore only. Every entity
        /// written is marked unchecked on its record.
        #[arg(long)]
        unchecked: bool,
    },
    /// Write every entity as JSON lines, ordered by uid: what `import` takes back.
    Export {
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

type Client = AdminClient<InterceptedService<Channel, AddToken>>;

/// Sends `authorization: Bearer <token>` with every call.
#[derive(Clone)]
pub struct AddToken(MetadataValue<tonic::metadata::Ascii>);

impl AddToken {
    pub fn bearer(token: &str) -> anyhow::Result<Self> {
        MetadataValue::try_from(format!("Bearer {token}"))
            .map(AddToken)
            .context("the admin token is not a valid header value")
    }
}

impl tonic::service::Interceptor for AddToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

impl AdminConnection {
    fn token(&self) -> anyhow::Result<String> {
        if let Ok(token) = std::env::var("WARRANT_ADMIN_TOKEN") {
            return Ok(token);
        }
        let path = self.data_dir.join(crate::api::auth::TOKEN_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read the admin token from {} (set WARRANT_ADMIN_TOKEN or --data-dir)",
                path.display()
            )
        })?;
        Ok(text.trim().to_owned())
    }

    pub async fn connect(&self) -> anyhow::Result<Client> {
        let token = AddToken::bearer(&self.token()?)?;
        let channel = self.tls.connect(&self.admin).await?;
        Ok(AdminClient::with_interceptor(channel, token))
    }
}

fn print(value: Value) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}

fn call_failed(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

fn time(text: &str, flag: &str) -> anyhow::Result<prost_types::Timestamp> {
    let at = UnixMillis::parse_rfc3339(text)
        .with_context(|| format!("--{flag}: not an RFC 3339 time: {text:?}"))?;
    Ok(crate::proto::convert::timestamp(at))
}

/// `90s`, `30m`, `2h`, `1d` in milliseconds.
fn duration_millis(text: &str) -> anyhow::Result<i64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .with_context(|| format!("--for: expected e.g. 30m or 2h, got {text:?}"))?;
    let unit = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--for: the unit must be s, m, h or d, got {text:?}"),
    };
    Ok(number.saturating_mul(unit))
}

fn json_object(text: Option<&str>, flag: &str) -> anyhow::Result<Option<prost_types::Struct>> {
    let Some(text) = text else { return Ok(None) };
    let value: Value = serde_json::from_str(text).with_context(|| format!("--{flag}: not JSON"))?;
    match proto::json_to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(fields)) => Ok(Some(fields)),
        _ => bail!("--{flag}: must be a JSON object"),
    }
}

fn struct_json(fields: &Option<prost_types::Struct>) -> Value {
    fields
        .clone()
        .map_or(Value::Null, |f| Value::Object(proto::struct_to_json(f)))
}

fn approval_json(record: &proto::ApprovalRecord) -> Value {
    let a = record.approval.clone().unwrap_or_default();
    let state = proto::ApprovalState::try_from(record.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("APPROVAL_STATE_")
                .to_lowercase()
        })
        .unwrap_or_default();
    json!({
        "id": a.id,
        "ticket": a.ticket,
        "state": state,
        "approver": entity_json(&a.approver),
        "requester": entity_json(&a.requester),
        "subject": entity_json(&a.subject),
        "actions": a.actions,
        "scope": entity_json(&a.scope),
        "not_before": time_json(&a.not_before),
        "expires_at": time_json(&a.expires_at),
        "max_uses": a.max_uses,
        "uses": record.uses,
        "budget_spent": record.budget_spent,
        "playbook": a.playbook,
        "justification": a.justification,
        "attributes": struct_json(&a.attributes),
        "origin": record.origin,
        "granted_at": time_json(&record.granted_at),
        "revoked_at": time_json(&record.revoked_at),
        "revoke_reason": record.revoke_reason,
        "approver_credential_sha256": record.approver_credential_sha256,
        "unchecked": record.unchecked,
    })
}

fn identity_json(record: &proto::IdentityRecord) -> Value {
    let i = record.identity.clone().unwrap_or_default();
    json!({
        "entity": entity_json(&i.entity),
        "owner": entity_json(&i.owner),
        "status": i.status,
        "attributes": struct_json(&i.attributes),
        "parents": i.parents.iter().map(|p| entity_json(&Some(p.clone()))).collect::<Vec<_>>(),
        "origin": record.origin,
        "updated_at": time_json(&record.updated_at),
        "unchecked": record.unchecked,
    })
}

fn entity_record_json(record: &proto::EntityRecord) -> Value {
    let e = record.entity.clone().unwrap_or_default();
    json!({
        "entity": entity_json(&e.entity),
        "attributes": struct_json(&e.attributes),
        "parents": e.parents.iter().map(|p| entity_json(&Some(p.clone()))).collect::<Vec<_>>(),
        "tags": struct_json(&e.tags),
        "origin": record.origin,
        "updated_at": time_json(&record.updated_at),
        "requester": entity_json(&record.requester),
        "justification": record.justification,
        "retired_at": time_json(&record.retired_at),
    })
}

fn link_record_json(record: &proto::PolicyLinkRecord) -> Value {
    let link = record.link.clone().unwrap_or_default();
    json!({
        "link_id": link.link_id,
        "template_id": link.template_id,
        "principal": entity_json(&link.principal),
        "resource": entity_json(&link.resource),
        "origin": record.origin,
        "linked_at": time_json(&record.linked_at),
        "requester": entity_json(&record.requester),
        "justification": record.justification,
    })
}

fn status_json(status: &proto::StatusResponse) -> Value {
    json!({
        "policy_version": status.policy_version,
        "policies_loaded_at": time_json(&status.policies_loaded_at),
        "policy_count": status.policy_count,
        "template_count": status.template_count,
        "link_count": status.link_count,
        "facts_version": status.facts_version,
        "entity_count": status.entity_count,
        "identity_count": status.identity_count,
        "approval_count": status.approval_count,
        "live_changes": status.live_changes,
        "reloads": status.reloads,
        "reload_failures": status.reload_failures,
        "last_reload_error": status.last_reload_error,
        "last_reload_failed_at": time_json(&status.last_reload_failed_at),
        "replica": status.replica.as_ref().map(|replica| json!({
            "id": replica.id,
            "applied_change": replica.applied_change,
            "head_change": replica.head_change,
            "fresh_as_of": time_json(&replica.fresh_as_of),
            "stale": replica.stale,
        })),
    })
}

pub async fn approval(args: ApprovalArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connection.connect().await?;
    match args.command {
        ApprovalCommand::Grant {
            id,
            ticket,
            approver,
            requester,
            subject,
            actions,
            scope,
            not_before,
            expires_at,
            valid_for,
            max_uses,
            budget,
            playbook,
            justification,
            attributes,
        } => {
            let not_before = not_before.map(|t| time(&t, "not-before")).transpose()?;
            let expires_at = match (expires_at, valid_for) {
                (Some(at), _) => time(&at, "expires-at")?,
                (None, Some(length)) => {
                    let start = not_before
                        .as_ref()
                        .map_or_else(|| SystemClock.now(), crate::proto::convert::unix_millis);
                    crate::proto::convert::timestamp(
                        start.saturating_add_millis(duration_millis(&length)?),
                    )
                }
                (None, None) => bail!("give --expires-at or --for"),
            };
            let (approver, approver_credential) = approver.resolve()?;
            let spec = proto::ApprovalSpec {
                id: id.unwrap_or_default(),
                ticket,
                approver,
                requester: Some(parse_entity(&requester, "requester")?),
                subject: Some(parse_entity(&subject, "subject")?),
                actions,
                scope: Some(parse_entity(&scope, "scope")?),
                not_before,
                expires_at: Some(expires_at),
                max_uses: max_uses.unwrap_or(0),
                playbook: playbook.unwrap_or_default(),
                justification: justification.unwrap_or_default(),
                attributes: {
                    let mut attributes = json_object(attributes.as_deref(), "attributes")?;
                    if let Some(budget) = budget {
                        let (attribute, total) = parse_budget(&budget)?;
                        let fields = &mut attributes.get_or_insert_default().fields;
                        fields.insert(
                            "budget_attribute".to_owned(),
                            crate::proto::json_to_value(json!(attribute)),
                        );
                        fields.insert(
                            "budget_total".to_owned(),
                            crate::proto::json_to_value(json!(total)),
                        );
                    }
                    attributes
                },
            };
            let record = client
                .grant_approval(proto::GrantApprovalRequest {
                    approval: Some(spec),
                    approver_credential,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(approval_json(&record))
        }
        ApprovalCommand::Revoke { id, reason } => {
            let record = client
                .revoke_approval(proto::RevokeApprovalRequest {
                    id,
                    reason: reason.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(approval_json(&record))
        }
        ApprovalCommand::Show { id } => {
            let record = client
                .get_approval(proto::GetApprovalRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(approval_json(&record))
        }
        ApprovalCommand::List {
            subject,
            ticket,
            state,
        } => {
            let state = match state.as_deref() {
                None => proto::ApprovalState::Unspecified,
                Some(name) => proto::ApprovalState::from_str_name(&format!(
                    "APPROVAL_STATE_{}",
                    name.to_uppercase()
                ))
                .with_context(|| {
                    format!(
                        "--state: one of pending, active, expired, revoked, exhausted; got {name:?}"
                    )
                })?,
            };
            let subject = subject.map(|s| parse_entity(&s, "subject")).transpose()?;
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_approvals(proto::ListApprovalsRequest {
                        subject: subject.clone(),
                        ticket: ticket.clone().unwrap_or_default(),
                        state: state as i32,
                        page_size: 0,
                        page_token,
                    })
                    .await
                    .map_err(call_failed)?
                    .into_inner();
                all.extend(page.approvals.iter().map(approval_json));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            print(Value::Array(all))
        }
        ApprovalCommand::Requests { state, identity } => {
            let found = client
                .list_approval_requests(proto::ListApprovalRequestsRequest {
                    state: state.unwrap_or_default(),
                    identity: identity.map(|i| parse_entity(&i, "identity")).transpose()?,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(Value::Array(
                found.requests.iter().map(approval_request_json).collect(),
            ))
        }
        ApprovalCommand::Approve {
            request,
            approver,
            valid_for,
            max_uses,
            budget,
        } => {
            let (approver, approver_credential) = approver.resolve()?;
            let (budget_attribute, budget_total) = match budget {
                Some(budget) => parse_budget(&budget)?,
                None => (String::new(), 0),
            };
            let duration_seconds = valid_for
                .map(|length| duration_millis(&length).map(|ms| ms / 1000))
                .transpose()?
                .unwrap_or(0);
            let decided = client
                .decide_approval_request(proto::DecideApprovalRequestRequest {
                    id: request,
                    approver,
                    approver_credential,
                    approve: true,
                    duration_seconds,
                    max_uses: max_uses.unwrap_or(0),
                    reason: String::new(),
                    budget_attribute,
                    budget_total,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(approval_request_json(&decided))
        }
        ApprovalCommand::Reject {
            request,
            approver,
            reason,
        } => {
            let (approver, approver_credential) = approver.resolve()?;
            let decided = client
                .decide_approval_request(proto::DecideApprovalRequestRequest {
                    id: request,
                    approver,
                    approver_credential,
                    approve: false,
                    duration_seconds: 0,
                    max_uses: 0,
                    reason,
                    budget_attribute: String::new(),
                    budget_total: 0,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(approval_request_json(&decided))
        }
    }
}

/// `ATTRIBUTE=TOTAL`, e.g. `amount=5000`.
fn parse_budget(text: &str) -> anyhow::Result<(String, u64)> {
    let (attribute, total) = text
        .split_once('=')
        .filter(|(attribute, _)| !attribute.is_empty())
        .with_context(|| format!("--budget: ATTRIBUTE=TOTAL, e.g. amount=5000; got {text:?}"))?;
    let total = total
        .parse()
        .with_context(|| format!("--budget: {total:?} is not a whole number"))?;
    Ok((attribute.to_owned(), total))
}

fn approval_request_json(record: &proto::ApprovalRequestRecord) -> Value {
    json!({
        "id": record.id,
        "state": record.state,
        "identity": entity_json(&record.identity),
        "action": record.action,
        "resource": entity_json(&record.resource),
        "scope": entity_json(&record.scope),
        "justification": record.justification,
        "ticket": record.ticket,
        "duration_seconds": record.duration_seconds,
        "on_behalf_of": entity_json(&record.on_behalf_of),
        "decision_id": record.decision_id,
        "requested_at": time_json(&record.requested_at),
        "expires_at": time_json(&record.expires_at),
        "decided_by": entity_json(&record.decided_by),
        "decided_by_credential_sha256": record.decided_by_credential_sha256,
        "decided_at": time_json(&record.decided_at),
        "reason": record.reason,
        "approval_id": record.approval_id,
    })
}

pub async fn identity(args: IdentityArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connection.connect().await?;
    let update = |entity: &str, status: &str| -> anyhow::Result<proto::UpdateIdentityRequest> {
        Ok(proto::UpdateIdentityRequest {
            entity: Some(parse_entity(entity, "entity")?),
            status: Some(status.to_owned()),
            ..proto::UpdateIdentityRequest::default()
        })
    };
    let record = match args.command {
        IdentityCommand::Create {
            entity,
            owner,
            status,
            attributes,
            parents,
        } => {
            let spec = proto::IdentitySpec {
                entity: Some(parse_entity(&entity, "entity")?),
                owner: Some(parse_entity(&owner, "owner")?),
                status: status.unwrap_or_default(),
                attributes: json_object(attributes.as_deref(), "attributes")?,
                parents: parents
                    .iter()
                    .map(|p| parse_entity(p, "parent"))
                    .collect::<anyhow::Result<_>>()?,
            };
            client
                .create_identity(proto::CreateIdentityRequest {
                    identity: Some(spec),
                })
                .await
        }
        IdentityCommand::Update {
            entity,
            owner,
            status,
            attributes,
            parents,
        } => {
            let request = proto::UpdateIdentityRequest {
                entity: Some(parse_entity(&entity, "entity")?),
                owner: owner.map(|o| parse_entity(&o, "owner")).transpose()?,
                status,
                attributes: json_object(attributes.as_deref(), "attributes")?,
                set_parents: parents.is_some(),
                parents: parents
                    .unwrap_or_default()
                    .iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| parse_entity(p, "parents"))
                    .collect::<anyhow::Result<_>>()?,
            };
            client.update_identity(request).await
        }
        IdentityCommand::Suspend { entity } => {
            client.update_identity(update(&entity, "suspended")?).await
        }
        IdentityCommand::Retire { entity } => {
            client
                .retire_identity(proto::RetireIdentityRequest {
                    entity: Some(parse_entity(&entity, "entity")?),
                })
                .await
        }
        IdentityCommand::Show { entity } => {
            client
                .get_identity(proto::GetIdentityRequest {
                    entity: Some(parse_entity(&entity, "entity")?),
                })
                .await
        }
        IdentityCommand::List {
            type_name,
            owner,
            status,
        } => {
            let owner = owner.map(|o| parse_entity(&o, "owner")).transpose()?;
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_identities(proto::ListIdentitiesRequest {
                        r#type: type_name.clone().unwrap_or_default(),
                        owner: owner.clone(),
                        status: status.clone().unwrap_or_default(),
                        page_size: 0,
                        page_token,
                    })
                    .await
                    .map_err(call_failed)?
                    .into_inner();
                all.extend(page.identities.iter().map(identity_json));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            return print(Value::Array(all));
        }
    };
    print(identity_json(&record.map_err(call_failed)?.into_inner()))
}

pub async fn entity(args: EntityArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connection.connect().await?;
    let requester =
        |requester: Option<String>| requester.map(|r| parse_entity(&r, "requester")).transpose();
    let record = match args.command {
        EntityCommand::Put {
            entity,
            attributes,
            parents,
            tags,
            requester: asked_by,
            justification,
        } => {
            let spec = proto::EntitySpec {
                entity: Some(parse_entity(&entity, "entity")?),
                attributes: json_object(attributes.as_deref(), "attributes")?,
                parents: parents
                    .iter()
                    .map(|p| parse_entity(p, "parent"))
                    .collect::<anyhow::Result<_>>()?,
                tags: json_object(tags.as_deref(), "tags")?,
            };
            client
                .put_entity(proto::PutEntityRequest {
                    entity: Some(spec),
                    requester: requester(asked_by)?,
                    justification: justification.unwrap_or_default(),
                })
                .await
        }
        EntityCommand::Get { entity } => {
            client
                .get_entity(proto::GetEntityRequest {
                    entity: Some(parse_entity(&entity, "entity")?),
                })
                .await
        }
        EntityCommand::Retire {
            entity,
            requester: asked_by,
            justification,
        } => {
            client
                .retire_entity(proto::RetireEntityRequest {
                    entity: Some(parse_entity(&entity, "entity")?),
                    requester: requester(asked_by)?,
                    justification: justification.unwrap_or_default(),
                })
                .await
        }
    };
    print(entity_record_json(
        &record.map_err(call_failed)?.into_inner(),
    ))
}

pub async fn policy(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    if let PolicyCommand::Push { dir, store } = args.command {
        return tokio::task::spawn_blocking(move || super::fleet::push(&store, &dir)).await?;
    }
    let mut client = args.connection.connect().await?;
    let entity =
        |value: Option<String>, flag: &str| value.map(|v| parse_entity(&v, flag)).transpose();
    let record = match args.command {
        PolicyCommand::Link {
            link_id,
            template,
            principal,
            resource,
            requester,
            justification,
        } => {
            client
                .link_policy(proto::LinkPolicyRequest {
                    link: Some(proto::PolicyLinkSpec {
                        link_id,
                        template_id: template,
                        principal: entity(principal, "principal")?,
                        resource: entity(resource, "resource")?,
                    }),
                    requester: entity(requester, "requester")?,
                    justification: justification.unwrap_or_default(),
                })
                .await
        }
        PolicyCommand::Unlink { link_id } => {
            client
                .unlink_policy(proto::UnlinkPolicyRequest { link_id })
                .await
        }
        PolicyCommand::GetLink { link_id } => {
            client
                .get_policy_link(proto::GetPolicyLinkRequest { link_id })
                .await
        }
        PolicyCommand::Links { template } => {
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_policy_links(proto::ListPolicyLinksRequest {
                        template_id: template.clone().unwrap_or_default(),
                        page_size: 0,
                        page_token,
                    })
                    .await
                    .map_err(call_failed)?
                    .into_inner();
                for link in &page.links {
                    println!("{}", link_record_json(link));
                }
                if page.next_page_token.is_empty() {
                    return Ok(ExitCode::SUCCESS);
                }
                page_token = page.next_page_token;
            }
        }
        PolicyCommand::Push { .. } => bail!("pushed above"),
    };
    print(link_record_json(&record.map_err(call_failed)?.into_inner()))
}

/// How much of an import goes in one message.
const IMPORT_CHUNK_BYTES: usize = 256 * 1024;

pub async fn facts(args: FactsArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connection.connect().await?;
    match args.command {
        FactsCommand::Import {
            file,
            requester,
            justification,
            unchecked,
        } => {
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            sender
                .send(proto::ImportFactsRequest {
                    data: Vec::new(),
                    requester: requester
                        .map(|r| parse_entity(&r, "requester"))
                        .transpose()?,
                    justification: justification.unwrap_or_default(),
                    unchecked,
                })
                .await?;
            // The file is read on a thread of its own while the call streams what it sent. The
            // sender outlives a read error until the call is dropped (cancelled), so that a
            // file that breaks half-way never ends the stream as if it were whole.
            let reading = tokio::task::spawn_blocking(move || {
                let result = send_import(&file, &sender);
                (result, sender)
            });
            let call = client.import_facts(tokio_stream::wrappers::ReceiverStream::new(receiver));
            tokio::pin!(call);
            let answer = tokio::select! {
                answer = &mut call => answer,
                read = reading => {
                    let (result, sender) = read?;
                    if let Err(error) = result {
                        return Err(error.context("nothing was imported"));
                    }
                    drop(sender);
                    call.await
                }
            };
            let summary = answer.map_err(call_failed)?.into_inner();
            print(json!({
                "entities": summary.entities,
                "created": summary.created,
                "facts_version": summary.facts_version,
            }))
        }
        FactsCommand::Export { output } => {
            use std::io::Write as _;
            let mut stream = client
                .export_facts(proto::ExportFactsRequest {})
                .await
                .map_err(call_failed)?
                .into_inner();
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            while let Some(chunk) = stream.message().await.map_err(call_failed)? {
                out.write_all(&chunk.data)?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Sends the entities of `file` (a JSON array, read one element at a time, or JSON lines, passed
/// through) as JSON lines in chunks.
fn send_import(
    file: &std::path::Path,
    sender: &tokio::sync::mpsc::Sender<proto::ImportFactsRequest>,
) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Read as _};
    let input: Box<dyn std::io::Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        )
    };
    let mut reader = std::io::BufReader::with_capacity(IMPORT_CHUNK_BYTES, input);
    let send = |data: Vec<u8>| {
        sender
            .blocking_send(proto::ImportFactsRequest {
                data,
                ..proto::ImportFactsRequest::default()
            })
            .map_err(|_| anyhow::anyhow!("the server stopped reading the import"))
    };
    let first = loop {
        let buffer = reader.fill_buf()?;
        match buffer.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(at) => break Some(buffer[at]),
            None if buffer.is_empty() => break None,
            None => {
                let length = buffer.len();
                reader.consume(length);
            }
        }
    };
    if first != Some(b'[') {
        // JSON lines: the server splits and parses them.
        loop {
            let mut data = vec![0; IMPORT_CHUNK_BYTES];
            let read = reader.read(&mut data)?;
            if read == 0 {
                return Ok(());
            }
            data.truncate(read);
            send(data)?;
        }
    }
    let mut data = Vec::with_capacity(IMPORT_CHUNK_BYTES);
    let mut each = |entity: Value| -> anyhow::Result<()> {
        data.extend_from_slice(entity.to_string().as_bytes());
        data.push(b'\n');
        if data.len() >= IMPORT_CHUNK_BYTES {
            send(std::mem::replace(
                &mut data,
                Vec::with_capacity(IMPORT_CHUNK_BYTES),
            ))?;
        }
        Ok(())
    };
    let mut json = serde_json::Deserializer::from_reader(reader);
    serde::de::DeserializeSeed::deserialize(EachElement(&mut each), &mut json)
        .with_context(|| format!("{} is not a JSON array of entities", file.display()))?;
    json.end()
        .with_context(|| format!("{}: text after the array", file.display()))?;
    if !data.is_empty() {
        send(data)?;
    }
    Ok(())
}

/// Deserialises a JSON array one element at a time, handing each to a function, so that a
/// large file is never held whole.
struct EachElement<'f>(&'f mut dyn FnMut(Value) -> anyhow::Result<()>);

impl<'de> serde::de::DeserializeSeed<'de> for EachElement<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EachElement<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of entities")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(entity) = seq.next_element::<Value>()? {
            (self.0)(entity).map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}

/// `warrant reload`: reload the policy folder now.
pub async fn reload(connection: AdminConnection) -> anyhow::Result<ExitCode> {
    let mut client = connection.connect().await?;
    let status = client
        .reload_policies(proto::ReloadPoliciesRequest {})
        .await
        .map_err(call_failed)?
        .into_inner();
    print(status_json(&status))
}

/// `warrant status`: what the server is serving.
pub async fn status(connection: AdminConnection) -> anyhow::Result<ExitCode> {
    let mut client = connection.connect().await?;
    let status = client
        .status(proto::StatusRequest {})
        .await
        .map_err(call_failed)?
        .into_inner();
    print(status_json(&status))
}

/// `warrant log tail`: prints decisions as the server records them.
pub async fn tail(args: crate::cli::LogArgs) -> anyhow::Result<ExitCode> {
    let crate::cli::LogCommand::Tail {
        admin,
        tls,
        principal,
        decision,
        action,
        json,
    } = args.command
    else {
        bail!("not a tail command");
    };
    let [data_dir] = <[std::path::PathBuf; 1]>::try_from(args.data_dirs)
        .map_err(|_| anyhow::anyhow!("`log tail` follows one server: give one --data-dir"))?;
    let connection = AdminConnection {
        admin,
        data_dir,
        tls,
    };
    let token = AddToken::bearer(&connection.token()?)?;
    let channel = connection.tls.connect(&connection.admin).await?;
    let mut client =
        crate::proto::decision_log_client::DecisionLogClient::with_interceptor(channel, token);
    let decision = match decision.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => proto::Decision::Unspecified,
        Some("allow") => proto::Decision::Allow,
        Some("deny") => proto::Decision::Deny,
        Some(other) => bail!("--decision: allow or deny, not {other:?}"),
    };
    let mut stream = client
        .tail_decisions(proto::TailDecisionsRequest {
            principal: principal
                .map(|p| parse_entity(&p, "principal"))
                .transpose()?,
            decision: decision as i32,
            action: action.unwrap_or_default(),
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    use std::io::Write as _;
    while let Some(record) = stream.message().await.map_err(call_failed)? {
        let line = if json {
            record.record_json
        } else {
            tail_line(&record.record_json)?
        };
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the tail quietly.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One readable line for a record: when, what was decided, about what, and why.
fn tail_line(record_json: &str) -> anyhow::Result<String> {
    let record: warrant_ledger::Record = serde_json::from_str(record_json)
        .context("the server sent a record this tool cannot read")?;
    let entity = |e: &warrant_domain::EntityRef| format!("{}::{}", e.type_name, e.id);
    let mut line = format!(
        "{} {:<5} {} {} {}",
        record.time,
        record.decision,
        entity(&record.principal),
        record.action,
        entity(&record.resource)
    );
    if let Some(approval) = &record.approval_presented {
        line.push_str(&format!(" approval={approval}"));
    }
    line.push_str(&format!(" because {}", record.reasons.join(",")));
    if record.answered_from_cache {
        line.push_str(" (cached)");
    }
    line.push_str(&format!(" {}", record.decision_id));
    Ok(line)
}
