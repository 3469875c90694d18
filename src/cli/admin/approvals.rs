//! `warrant approval ...`: grants, revocations, approval requests and their decisions.

use super::*;

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

/// What `warrant approval` does: the admin API's calls, and the identity's own request.
#[derive(Debug, clap::Subcommand)]
pub enum ApprovalCommand {
    #[command(flatten)]
    Admin(ApprovalAdminCommand),
    /// Ask for an approval as the identity, on the Check port, as an agent does after a deny
    /// (RequestApproval): the request waits for a human to `approve` or `reject` it, here or in
    /// the console. Needs no admin token; an identity whose type needs a credential gives it.
    Ask(AskArgs),
}

/// The calls on the admin API (with its token).
#[derive(Debug, clap::Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per command; `grant` simply has many flags"
)]
pub enum ApprovalAdminCommand {
    /// Grant an approval to an identity.
    Grant(GrantArgs),
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

/// `approval grant`'s flags.
#[derive(Debug, clap::Args)]
pub struct GrantArgs {
    /// Its id; Warrant picks one when not given.
    #[arg(long)]
    pub id: Option<String>,
    /// The change or task ticket.
    #[arg(long)]
    pub ticket: String,
    #[command(flatten)]
    pub approver: ApproverArgs,
    /// Who asked for it, as Type::id.
    #[arg(long)]
    pub requester: String,
    /// The identity it is granted to, as Type::id.
    #[arg(long)]
    pub subject: String,
    /// An action it covers (repeat for more).
    #[arg(long = "action", required = true)]
    pub actions: Vec<String>,
    /// The scope that bounds it, as Scope::id.
    #[arg(long)]
    pub scope: String,
    /// Start of validity, RFC 3339 [default: now]
    #[arg(long)]
    pub not_before: Option<String>,
    /// End of validity, RFC 3339.
    #[arg(long, conflicts_with = "valid_for")]
    pub expires_at: Option<String>,
    /// Or how long from not_before it lasts: 90s, 30m, 2h, 1d.
    #[arg(long = "for")]
    pub valid_for: Option<String>,
    /// Allowed uses it grants (1: single use) [default: unlimited]
    #[arg(long)]
    pub max_uses: Option<u64>,
    /// A budget over all its uses, ATTRIBUTE=TOTAL: each allowed decision spends the
    /// context's ATTRIBUTE, e.g. amount=5000 [default: none]
    #[arg(long)]
    pub budget: Option<String>,
    #[arg(long)]
    pub playbook: Option<String>,
    #[arg(long)]
    pub justification: Option<String>,
    /// Further attributes as a JSON object, e.g. '{"max_amount": 5000}'.
    #[arg(long)]
    pub attributes: Option<String>,
}

/// `approval ask`'s flags.
#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// The identity that needs the approval, as Type::id.
    #[arg(long)]
    pub identity: String,
    /// The action it must cover.
    #[arg(long)]
    pub action: String,
    /// The resource it is needed for, as Type::id.
    #[arg(long)]
    pub resource: String,
    /// The scope to approve, as Type::id [default: the resource's nearest scope]
    #[arg(long)]
    pub scope: Option<String>,
    /// Why, for the human who decides.
    #[arg(long)]
    pub justification: String,
    /// A change ticket to link.
    #[arg(long)]
    pub ticket: Option<String>,
    /// How long it is needed for: 90s, 30m, 2h, 1d.
    #[arg(long = "for")]
    pub needed_for: String,
    /// The human the identity acts for, as Human::id (never its approver).
    #[arg(long)]
    pub on_behalf_of: Option<String>,
    /// The id of the denied decision that prompted it.
    #[arg(long)]
    pub decision: Option<String>,
    /// The Check port to ask.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "WARRANT_SERVER")]
    pub server: String,
    /// The identity's credential (a JWT), where a Check for its type needs one.
    #[arg(long, env = "WARRANT_CREDENTIAL", hide_env_values = true)]
    pub credential: Option<String>,
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

pub async fn approval(args: ApprovalArgs) -> anyhow::Result<ExitCode> {
    let command = match args.command {
        // Asking is the identity's call on the Check port: no admin token is read for it.
        ApprovalCommand::Ask(asked) => return ask(asked, &args.connection.tls).await,
        ApprovalCommand::Admin(command) => command,
    };
    let mut client = args.connection.connect().await?;
    match command {
        ApprovalAdminCommand::Grant(granted) => grant_approval(&mut client, granted).await,
        ApprovalAdminCommand::Revoke { id, reason } => {
            let answer = client
                .revoke_approval(proto::RevokeApprovalRequest {
                    id: id.clone(),
                    reason: reason.unwrap_or_default(),
                })
                .await;
            let record = match answer {
                Ok(record) => record.into_inner(),
                Err(status) => return Err(with_ticket_hint(&mut client, &id, status).await),
            };
            print(approval_json(&record))
        }
        ApprovalAdminCommand::Show { id } => {
            let record = match client
                .get_approval(proto::GetApprovalRequest { id: id.clone() })
                .await
            {
                Ok(record) => record.into_inner(),
                Err(status) => return Err(with_ticket_hint(&mut client, &id, status).await),
            };
            print(approval_json(&record))
        }
        ApprovalAdminCommand::List {
            subject,
            ticket,
            state,
        } => list(&mut client, subject, ticket, state).await,
        ApprovalAdminCommand::Requests { state, identity } => {
            let found = client
                .list_approval_requests(proto::ListApprovalRequestsRequest {
                    state: state.unwrap_or_default(),
                    identity: identity.map(|i| parse_entity(&i, "identity")).transpose()?,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            output::print_list(
                found.requests.iter().map(approval_request_json).collect(),
                &[
                    "id",
                    "state",
                    "identity",
                    "action",
                    "resource",
                    "requested_at",
                    "expires_at",
                ],
                output::Output::Json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        ApprovalAdminCommand::Approve {
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
        ApprovalAdminCommand::Reject {
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

/// When a grant expires: `--expires-at`, or `--for` after its start (`--not-before`, or now).
fn expiry(
    not_before: Option<&prost_types::Timestamp>,
    expires_at: Option<String>,
    valid_for: Option<String>,
) -> anyhow::Result<prost_types::Timestamp> {
    Ok(match (expires_at, valid_for) {
        (Some(at), _) => time(&at, "expires-at")?,
        (None, Some(length)) => {
            let start =
                not_before.map_or_else(|| SystemClock.now(), warrant_proto::convert::unix_millis);
            warrant_proto::convert::timestamp(
                start.saturating_add_millis(duration_millis(&length)?),
            )
        }
        (None, None) => bail!("give --expires-at or --for"),
    })
}

/// A grant's `--attributes`, with its `--budget` as `budget_attribute` and `budget_total`.
fn grant_attributes(
    attributes: Option<&str>,
    budget: Option<&str>,
) -> anyhow::Result<Option<prost_types::Struct>> {
    let mut attributes = json_object(attributes, "attributes")?;
    if let Some(budget) = budget {
        let (attribute, total) = parse_budget(budget)?;
        let fields = &mut attributes.get_or_insert_default().fields;
        fields.insert(
            "budget_attribute".to_owned(),
            warrant_proto::json_to_value(json!(attribute)),
        );
        fields.insert(
            "budget_total".to_owned(),
            warrant_proto::json_to_value(json!(total)),
        );
    }
    Ok(attributes)
}

/// `warrant approval list`: every page of approvals that match.
async fn list(
    client: &mut Client,
    subject: Option<String>,
    ticket: Option<String>,
    state: Option<String>,
) -> anyhow::Result<ExitCode> {
    let state = match state.as_deref() {
        None => proto::ApprovalState::Unspecified,
        Some(name) => {
            proto::ApprovalState::from_str_name(&format!("APPROVAL_STATE_{}", name.to_uppercase()))
                .with_context(|| {
                    format!(
                        "--state: one of pending, active, expired, revoked, exhausted; got {name:?}"
                    )
                })?
        }
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
    output::print_list(
        all,
        &[
            "id",
            "state",
            "subject",
            "actions",
            "scope",
            "ticket",
            "approver",
            "expires_at",
            "uses",
        ],
        output::Output::Json,
    )?;
    Ok(ExitCode::SUCCESS)
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

/// `approval grant`: the approval as the flags describe it, granted by the admin API.
async fn grant_approval(client: &mut Client, grant: GrantArgs) -> anyhow::Result<ExitCode> {
    let GrantArgs {
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
    } = grant;
    let not_before = not_before.map(|t| time(&t, "not-before")).transpose()?;
    let expires_at = expiry(not_before.as_ref(), expires_at, valid_for)?;
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
        attributes: grant_attributes(attributes.as_deref(), budget.as_deref())?,
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

/// `approval ask`: files an approval request on the Check port, as the identity.
async fn ask(asked: AskArgs, tls: &crate::cli::ClientTls) -> anyhow::Result<ExitCode> {
    let AskArgs {
        identity,
        action,
        resource,
        scope,
        justification,
        ticket,
        needed_for,
        on_behalf_of,
        decision,
        server,
        credential,
    } = asked;
    let duration_seconds = length_millis(&needed_for, "for")? / 1000;
    let request = proto::RequestApprovalRequest {
        identity: Some(parse_entity(&identity, "identity")?),
        action,
        resource: Some(parse_entity(&resource, "resource")?),
        scope: scope.map(|s| parse_entity(&s, "scope")).transpose()?,
        justification,
        ticket: ticket.unwrap_or_default(),
        duration_seconds,
        on_behalf_of: on_behalf_of
            .map(|h| parse_entity(&h, "on-behalf-of"))
            .transpose()?,
        decision_id: decision.unwrap_or_default(),
        credential: credential.unwrap_or_default(),
    };
    let channel = tls.connect(&server).await?;
    let filed = warrant_proto::authorizer_client::AuthorizerClient::new(channel)
        .request_approval(request)
        .await
        .map_err(call_failed)?
        .into_inner();
    print(approval_request_json(&filed))
}

/// A call about approval `id` that failed, with a hint when `id` is a ticket rather than an
/// approval's id (`approval revoke CHG-2100` for the approval granted under ticket CHG-2100):
/// the approvals that carry it, by id.
async fn with_ticket_hint(client: &mut Client, id: &str, status: tonic::Status) -> anyhow::Error {
    let failed = call_failed(status.clone());
    if status.code() != tonic::Code::NotFound {
        return failed;
    }
    let carrying = client
        .list_approvals(proto::ListApprovalsRequest {
            ticket: id.to_owned(),
            page_size: 10,
            ..proto::ListApprovalsRequest::default()
        })
        .await;
    let ids: Vec<String> = match carrying {
        Ok(page) => page
            .into_inner()
            .approvals
            .into_iter()
            .filter_map(|record| record.approval.map(|a| a.id))
            .collect(),
        Err(_) => return failed,
    };
    match ids.as_slice() {
        [] => failed,
        [one] => failed.context(format!(
            "{id} is a ticket: approval {one} carries it (approvals are named by their id)"
        )),
        many => failed.context(format!(
            "{id} is a ticket: approvals {} carry it (approvals are named by their id)",
            many.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> prost_types::Timestamp {
        time(text, "test").unwrap()
    }

    #[test]
    fn a_budget_is_an_attribute_and_a_whole_total() {
        assert_eq!(
            parse_budget("amount=5000").unwrap(),
            ("amount".to_owned(), 5000)
        );
        for bad in ["=5000", "amount", "amount=lots", "amount=-1"] {
            let error = parse_budget(bad).unwrap_err().to_string();
            assert!(error.starts_with("--budget:"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_grant_expires_when_asked_or_after_its_length_from_its_start() {
        let start = at("2026-12-01T00:00:00Z");
        assert_eq!(
            expiry(
                Some(&start),
                Some("2026-12-02T00:00:00Z".into()),
                Some("1h".into())
            )
            .unwrap(),
            at("2026-12-02T00:00:00Z"),
            "--expires-at wins over --for"
        );
        assert_eq!(
            expiry(Some(&start), None, Some("2h".into())).unwrap(),
            at("2026-12-01T02:00:00Z")
        );
        let error = expiry(Some(&start), None, None).unwrap_err().to_string();
        assert_eq!(error, "give --expires-at or --for");
        let error = expiry(None, Some("tomorrow".into()), None)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("--expires-at:"), "{error}");
    }

    #[test]
    fn a_budget_joins_the_grants_attributes() {
        let attributes = grant_attributes(Some(r#"{"region": "eu"}"#), Some("amount=300"))
            .unwrap()
            .unwrap();
        assert_eq!(
            Value::Object(proto::struct_to_json(attributes)),
            json!({"region": "eu", "budget_attribute": "amount", "budget_total": 300})
        );
        assert_eq!(grant_attributes(None, None).unwrap(), None);
        let error = grant_attributes(Some("[1]"), None).unwrap_err().to_string();
        assert!(error.starts_with("--attributes:"), "{error}");
    }

    #[test]
    fn an_approval_prints_with_its_state_by_name_and_its_entities_typed() {
        let entity = |t: &str, id: &str| {
            Some(proto::EntityRef {
                r#type: t.to_owned(),
                id: id.to_owned(),
            })
        };
        let record = proto::ApprovalRecord {
            approval: Some(proto::ApprovalSpec {
                id: "a-1".to_owned(),
                ticket: "CHG-1".to_owned(),
                approver: entity("Human", "alice"),
                subject: entity("ServiceAccount", "deployer"),
                actions: vec!["deploy".to_owned()],
                expires_at: Some(at("2026-12-02T00:00:00Z")),
                ..Default::default()
            }),
            state: proto::ApprovalState::Active as i32,
            uses: 2,
            ..Default::default()
        };
        let printed = approval_json(&record);
        assert_eq!(printed["state"], "active");
        assert_eq!(printed["approver"], json!({"type": "Human", "id": "alice"}));
        assert_eq!(printed["requester"], Value::Null);
        assert_eq!(printed["expires_at"], "2026-12-02T00:00:00Z");
        assert_eq!(printed["not_before"], Value::Null);
        assert_eq!(printed["uses"], 2);
        assert_eq!(printed["unchecked"], false);
    }
}
