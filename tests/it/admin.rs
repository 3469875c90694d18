//! The admin API against the real server: live approvals and identities (the rules, durability,
//! restarts, the cache), authentication, and the Check port's refusal of admin calls.

use crate::common::{Admin, Server, deploy, entity, request, scrape, value};
use warrant_proto as proto;

fn in_hours(hours: f64) -> Option<prost_types::Timestamp> {
    use warrant_domain::clock::Clock as _;
    let now = warrant_domain::clock::SystemClock.now();
    let at = now.0 as f64 / 1000.0 + hours * 3600.0;
    #[expect(clippy::cast_possible_truncation, reason = "seconds from now, as f64")]
    Some(prost_types::Timestamp {
        seconds: at as i64,
        nanos: 0,
    })
}

/// A one-hour approval for the bundled deploy agent to update production configs.
fn deploy_grant(id: &str) -> proto::ApprovalSpec {
    proto::ApprovalSpec {
        id: id.to_owned(),
        ticket: format!("CHG-{id}"),
        approver: entity("Human", "alice"),
        requester: entity("Human", "bob"),
        subject: entity("ServiceAccount", "deploy-bot"),
        actions: vec!["update".to_owned()],
        scope: entity("Scope", "production"),
        expires_at: in_hours(1.0),
        justification: "payments hotfix".to_owned(),
        ..proto::ApprovalSpec::default()
    }
}

async fn grant(
    admin: &mut Admin,
    spec: proto::ApprovalSpec,
) -> Result<proto::ApprovalRecord, tonic::Status> {
    admin
        .grant_approval(proto::GrantApprovalRequest {
            approval: Some(spec),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn revoke(admin: &mut Admin, id: &str) -> proto::ApprovalRecord {
    admin
        .revoke_approval(proto::RevokeApprovalRequest {
            id: id.to_owned(),
            reason: "change cancelled".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

pub(crate) async fn decide(server: &Server, check: proto::CheckRequest) -> proto::CheckResponse {
    server
        .client()
        .await
        .check(check)
        .await
        .unwrap()
        .into_inner()
}

fn allowed(response: &proto::CheckResponse) -> bool {
    response.decision == proto::Decision::Allow as i32
}

#[tokio::test]
async fn a_granted_approval_allows_at_once_and_a_revocation_beats_the_cache_and_a_restart() {
    let server = Server::start(&[]);
    let mut admin = server.admin_client().await;
    // Unknown before the grant.
    let before = decide(&server, deploy("live-1")).await;
    assert_eq!(before.reasons, ["warrant:unknown-approval"]);

    let granted = grant(&mut admin, deploy_grant("live-1")).await.unwrap();
    assert_eq!(granted.state, proto::ApprovalState::Active as i32);
    assert_eq!(granted.origin, "live");
    assert_eq!(
        granted.approval.as_ref().unwrap().requester,
        entity("Human", "bob")
    );
    let first = decide(&server, deploy("live-1")).await;
    assert!(allowed(&first), "{:?}", first.reasons);
    let approval = first
        .provenance
        .as_ref()
        .unwrap()
        .approval
        .as_ref()
        .unwrap();
    assert_eq!(
        (approval.ticket.as_str(), approval.valid_at_decision),
        ("CHG-live-1", true)
    );
    // The allow is cached now...
    let cached = decide(&server, deploy("live-1")).await;
    assert!(allowed(&cached) && cached.provenance.unwrap().answered_from_cache);

    // ...and the revocation still wins on the very next Check.
    let revoked = revoke(&mut admin, "live-1").await;
    assert_eq!(revoked.state, proto::ApprovalState::Revoked as i32);
    assert_eq!(revoked.revoke_reason, "change cancelled");
    let after = decide(&server, deploy("live-1")).await;
    assert!(!allowed(&after));
    assert!(!after.provenance.as_ref().unwrap().answered_from_cache);
    assert!(after.provenance.unwrap().approval.unwrap().revoked);

    // A file approval can be revoked too; the change is an overlay, the file is untouched.
    assert!(allowed(&decide(&server, deploy("CHG-1042")).await));
    revoke(&mut admin, "CHG-1042").await;
    assert!(!allowed(&decide(&server, deploy("CHG-1042")).await));
    grant(&mut admin, deploy_grant("live-2")).await.unwrap();

    // After a crash (SIGKILL) everything acknowledged is still there.
    let data = server.kill();
    let server = Server::restart_in(data);
    let mut admin = server.admin_client().await;
    assert!(!allowed(&decide(&server, deploy("live-1")).await));
    assert!(!allowed(&decide(&server, deploy("CHG-1042")).await));
    assert!(allowed(&decide(&server, deploy("live-2")).await));
    let listed = admin
        .list_approvals(proto::ListApprovalsRequest {
            state: proto::ApprovalState::Revoked as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed
        .approvals
        .iter()
        .map(|a| a.approval.as_ref().unwrap().id.as_str())
        .collect();
    // CHG-1001 is revoked in the file.
    assert_eq!(ids, ["CHG-1001", "CHG-1042", "live-1"]);
}

#[tokio::test]
async fn grants_that_break_a_rule_are_refused_naming_it() {
    let server = Server::start(&[]);
    let mut admin = server.admin_client().await;
    type Change = Box<dyn Fn(&mut proto::ApprovalSpec)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "approver is the requester",
            Box::new(|s| s.requester = entity("Human", "alice")),
            "approval.approver: separation of duties: the approver cannot be the requester",
        ),
        (
            "approver is not a human",
            Box::new(|s| s.approver = entity("ServiceAccount", "db-admin")),
            "approval.approver: separation of duties: an approval is given by a Human",
        ),
        (
            "granted to a human",
            Box::new(|s| s.subject = entity("Human", "carol")),
            "approval.subject: an approval is granted to an identity",
        ),
        (
            "unknown approver",
            Box::new(|s| s.approver = entity("Human", "mallory")),
            "approval.approver: no Human::\"mallory\" is known",
        ),
        (
            "window inverted",
            Box::new(|s| {
                s.not_before = in_hours(2.0);
                s.expires_at = in_hours(1.0);
            }),
            "approval.expires_at: must be after not_before",
        ),
        (
            "already over",
            Box::new(|s| {
                s.not_before = in_hours(-3.0);
                s.expires_at = in_hours(-1.0);
            }),
            "approval.expires_at: must be in the future",
        ),
        (
            "too long",
            Box::new(|s| s.expires_at = in_hours(24.0 * 365.0)),
            "approval.expires_at: the approval would last",
        ),
        (
            "no expiry",
            Box::new(|s| s.expires_at = None),
            "approval.expires_at: required",
        ),
        (
            "unknown action",
            Box::new(|s| s.actions = vec!["update".into(), "delete".into()]),
            "approval.actions[1]: the schema declares no action \"delete\"",
        ),
        (
            "no ticket",
            Box::new(|s| s.ticket.clear()),
            "approval.ticket: required",
        ),
        (
            "attribute set twice",
            Box::new(|s| {
                s.attributes = crate::common::context(serde_json::json!({"revoked": true}))
            }),
            "approval.attributes.revoked: is set by its own field",
        ),
        (
            "more uses than JSON counts exactly",
            Box::new(|s| s.max_uses = (1 << 53) + 1),
            "approval.max_uses: at most 2^53",
        ),
        (
            "attribute the schema lacks",
            Box::new(|s| {
                s.attributes = crate::common::context(serde_json::json!({"colour": "red"}))
            }),
            "approval: entities do not fit the schema",
        ),
    ];
    for (name, change, expected) in cases {
        let mut spec = deploy_grant("rule-test");
        change(&mut spec);
        let error = grant(&mut admin, spec).await.unwrap_err();
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "{name}: {error:?}"
        );
        assert!(
            error.message().starts_with(expected),
            "{name}: {:?} does not start with {expected:?}",
            error.message()
        );
    }
    // Nothing of the refused grants was kept.
    let answer = decide(&server, deploy("rule-test")).await;
    assert_eq!(answer.reasons, ["warrant:unknown-approval"]);
    let status = admin
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.live_changes, 0);
    // A single node follows no shared database.
    assert!(status.replica.is_none());

    grant(&mut admin, deploy_grant("rule-test")).await.unwrap();
    let taken = grant(&mut admin, deploy_grant("rule-test"))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists);
    let taken = grant(&mut admin, deploy_grant("CHG-1042"))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists);
}

#[tokio::test]
async fn an_approval_presented_by_another_identity_is_a_replay() {
    let server = Server::start(&[]);
    let mut admin = server.admin_client().await;
    grant(&mut admin, deploy_grant("bound")).await.unwrap();
    let answer = decide(
        &server,
        request(
            "ServiceAccount::db-admin",
            "update",
            "Config::payments-api",
            "bound",
        ),
    )
    .await;
    assert!(!allowed(&answer));
    assert_eq!(
        answer.reasons,
        ["warrant:approval-granted-to-another-identity"]
    );
    let provenance = answer.provenance.unwrap();
    let evidence = provenance.approval.unwrap();
    assert!(evidence.replay_suspected);
    assert_eq!(evidence.subject, entity("ServiceAccount", "deploy-bot"));
    assert_eq!(provenance.principal, entity("ServiceAccount", "db-admin"));
}

#[tokio::test]
async fn a_single_use_approval_allows_once_even_under_concurrency_and_across_restarts() {
    let server = Server::start(&[]);
    let mut admin = server.admin_client().await;
    let mut spec = deploy_grant("break-glass");
    spec.max_uses = 1;
    grant(&mut admin, spec).await.unwrap();
    let mut limited = deploy_grant("three-uses");
    limited.max_uses = 3;
    grant(&mut admin, limited).await.unwrap();

    // Eight Checks at once against three uses: exactly three allows.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            client
                .check(deploy("three-uses"))
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut uses = Vec::new();
    let mut exhausted = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        if allowed(&answer) {
            let evidence = answer.provenance.unwrap().approval.unwrap();
            assert_eq!(evidence.max_uses, 3);
            uses.push(evidence.use_number);
        } else {
            assert_eq!(answer.reasons, ["warrant:approval-uses-exhausted"]);
            exhausted += 1;
        }
    }
    uses.sort_unstable();
    assert_eq!((uses, exhausted), (vec![1, 2, 3], 5));

    let first = decide(&server, deploy("break-glass")).await;
    assert!(allowed(&first));
    assert!(!first.provenance.as_ref().unwrap().answered_from_cache);
    let second = decide(&server, deploy("break-glass")).await;
    assert_eq!(second.reasons, ["warrant:approval-uses-exhausted"]);
    let shown = admin
        .get_approval(proto::GetApprovalRequest {
            id: "break-glass".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (shown.uses, shown.state),
        (1, proto::ApprovalState::Exhausted as i32)
    );

    let data = server.kill();
    let server = Server::restart_in(data);
    let after = decide(&server, deploy("break-glass")).await;
    assert_eq!(after.reasons, ["warrant:approval-uses-exhausted"]);
    // The ledger holds which use each allow took.
    let mut log = server.decision_log_client().await;
    let record = log
        .get_decision(proto::GetDecisionRequest {
            decision_id: first.decision_id,
        })
        .await
        .unwrap()
        .into_inner();
    let record: serde_json::Value = serde_json::from_str(&record.record_json).unwrap();
    assert_eq!(record["approval"]["use_number"], 1);
    assert_eq!(record["approval"]["max_uses"], 1);
}

#[tokio::test]
async fn identities_change_in_part_and_a_suspension_stops_the_next_check() {
    let server = Server::start(&[]);
    let mut admin = server.admin_client().await;
    assert!(allowed(&decide(&server, deploy("CHG-1042")).await));
    assert!(allowed(&decide(&server, deploy("CHG-1042")).await));

    // Suspend: only the status changes; the cached allow is not served again.
    let suspended = admin
        .update_identity(proto::UpdateIdentityRequest {
            entity: entity("ServiceAccount", "deploy-bot"),
            status: Some("suspended".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let identity = suspended.identity.unwrap();
    assert_eq!(identity.status, "suspended");
    assert_eq!(identity.owner, entity("Human", "alice"));
    let attributes = proto_json(identity.attributes);
    assert_eq!(attributes["environment"], "production");
    let answer = decide(&server, deploy("CHG-1042")).await;
    assert_eq!(answer.reasons, ["identity-not-active"]);

    // A new owner, partially: the status stays suspended.
    let moved = admin
        .update_identity(proto::UpdateIdentityRequest {
            entity: entity("ServiceAccount", "deploy-bot"),
            owner: entity("Human", "carol"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .identity
        .unwrap();
    assert_eq!(
        (moved.owner, moved.status.as_str()),
        (entity("Human", "carol"), "suspended")
    );
    let bad_status = admin
        .update_identity(proto::UpdateIdentityRequest {
            entity: entity("ServiceAccount", "deploy-bot"),
            status: Some("sleeping".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_status.code(), tonic::Code::InvalidArgument);
    assert!(
        bad_status
            .message()
            .starts_with("status: \"sleeping\" is not one of")
    );
    let owned_by_a_bot = admin
        .update_identity(proto::UpdateIdentityRequest {
            entity: entity("ServiceAccount", "deploy-bot"),
            owner: entity("ServiceAccount", "db-admin"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        owned_by_a_bot
            .message()
            .starts_with("owner: an identity is owned by a Human")
    );

    // A new agent, created live, acts at once, and is retired.
    let created = admin
        .create_identity(proto::CreateIdentityRequest {
            identity: Some(proto::IdentitySpec {
                entity: entity("ApiKey", "nightly-report"),
                owner: entity("Human", "dave"),
                status: String::new(),
                attributes: crate::common::context(serde_json::json!({
                    "environment": "production",
                    "scopes": [{"__entity": {"type": "Scope", "id": "sales-datasets"}}],
                })),
                parents: vec![],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.identity.unwrap().status, "active");
    // It reads datasets once it is granted them (a link of the bundled dataset template).
    let read = request("ApiKey::nightly-report", "read", "Dataset::sales-2026", "");
    let answer = decide(&server, read.clone()).await;
    assert_eq!(answer.reasons, ["warrant:no-permitting-policy"]);
    admin
        .link_policy(proto::LinkPolicyRequest {
            link: Some(proto::PolicyLinkSpec {
                link_id: "nightly-report-reads-sales".into(),
                template_id: "dataset-read-grant".into(),
                principal: entity("ApiKey", "nightly-report"),
                resource: entity("Scope", "sales-datasets"),
            }),
            requester: entity("Human", "dave"),
            justification: "CHG-2001".into(),
        })
        .await
        .unwrap();
    let answer = decide(&server, read.clone()).await;
    assert!(allowed(&answer), "{:?}", answer.reasons);
    assert_eq!(answer.reasons, ["nightly-report-reads-sales"]);
    assert_eq!(
        answer.provenance.unwrap().owner.unwrap().name,
        "Dave Schmidt"
    );
    let missing_attribute = admin
        .create_identity(proto::CreateIdentityRequest {
            identity: Some(proto::IdentitySpec {
                entity: entity("ApiKey", "half-made"),
                owner: entity("Human", "dave"),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(missing_attribute.code(), tonic::Code::InvalidArgument);
    assert!(
        missing_attribute
            .message()
            .starts_with("identity: entities do not fit the schema")
    );
    admin
        .retire_identity(proto::RetireIdentityRequest {
            entity: entity("ApiKey", "nightly-report"),
        })
        .await
        .unwrap();
    assert_eq!(
        decide(&server, read.clone()).await.reasons,
        ["identity-not-active"]
    );

    // All of it survives a restart.
    let data = server.terminate();
    let server = Server::restart_in(data);
    let mut admin = server.admin_client().await;
    let listed = admin
        .list_identities(proto::ListIdentitiesRequest {
            owner: entity("Human", "carol"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let found: Vec<(String, String)> = listed
        .identities
        .into_iter()
        .map(|r| {
            let i = r.identity.unwrap();
            (i.entity.unwrap().id, i.status)
        })
        .collect();
    assert!(
        found.contains(&("deploy-bot".into(), "suspended".into())),
        "{found:?}"
    );
    assert_eq!(decide(&server, read).await.reasons, ["identity-not-active"]);
}

/// Lists come in pages: following the tokens gives every identity (and approval) once, in
/// order, whatever the page size; the whole list is the one page of the default size.
#[tokio::test]
async fn identities_and_approvals_are_listed_page_by_page() {
    let server = Server::start(&[]);
    let mut admin = server.admin_client().await;
    let ids = |records: &[proto::IdentityRecord]| -> Vec<String> {
        records
            .iter()
            .map(|r| {
                let e = r.identity.as_ref().unwrap().entity.as_ref().unwrap();
                format!("{}::{}", e.r#type, e.id)
            })
            .collect()
    };
    let whole = admin
        .list_identities(proto::ListIdentitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(whole.next_page_token.is_empty());
    let whole = ids(&whole.identities);
    assert!(whole.len() > 4, "{whole:?}");
    let mut sorted = whole.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), whole.len(), "each once");
    for page_size in [1, 2, 3] {
        let (mut paged, mut token, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let page = admin
                .list_identities(proto::ListIdentitiesRequest {
                    page_size,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.identities.len() <= page_size as usize);
            paged.extend(ids(&page.identities));
            pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(paged, whole, "pages of {page_size}");
        assert!(pages >= whole.len() / page_size as usize);
    }
    // A filter applies across pages.
    let (mut active, mut token) = (Vec::new(), String::new());
    loop {
        let page = admin
            .list_identities(proto::ListIdentitiesRequest {
                status: "active".into(),
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for record in &page.identities {
            assert_eq!(record.identity.as_ref().unwrap().status, "active");
        }
        active.extend(ids(&page.identities));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(
        !active.is_empty() && active.len() < whole.len(),
        "{active:?}"
    );
    // Approvals the same way.
    let approvals = |page_size, page_token| proto::ListApprovalsRequest {
        page_size,
        page_token,
        ..Default::default()
    };
    let whole = admin
        .list_approvals(approvals(0, String::new()))
        .await
        .unwrap()
        .into_inner()
        .approvals;
    let (mut paged, mut token) = (Vec::new(), String::new());
    loop {
        let page = admin
            .list_approvals(approvals(2, token))
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.approvals);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(whole.len() > 2);
    assert_eq!(paged, whole);

    // Page tokens are Warrant's own: a position written by hand, a token edited, or a token of
    // another list is refused, never taken as a place to start.
    let first = admin
        .list_approvals(approvals(1, String::new()))
        .await
        .unwrap()
        .into_inner();
    let issued = first.next_page_token;
    let (position, tag) = issued.split_once('.').unwrap();
    let edited = format!("{}.{tag}", hex::encode("Approval::\"CHG-2001\""));
    assert_ne!(position, hex::encode("Approval::\"CHG-2001\""));
    for forged in [
        "Approval::\"CHG-2001\"".to_owned(),
        edited,
        format!("{issued}0"),
    ] {
        let refused = admin
            .list_approvals(approvals(1, forged.clone()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{forged}");
        assert_eq!(
            refused.message(),
            "page_token: not a token this server gave"
        );
    }
    let refused = admin
        .list_identities(proto::ListIdentitiesRequest {
            page_token: issued,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

fn proto_json(fields: Option<prost_types::Struct>) -> serde_json::Value {
    serde_json::Value::Object(warrant_proto::struct_to_json(fields.unwrap_or_default()))
}

#[tokio::test]
async fn admin_calls_need_the_token_and_never_reach_the_check_port() {
    use warrant_proto::admin_client::AdminClient;
    let server = Server::start(&[]);
    let token_file = server.data.path().join("admin.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let mut anonymous = AdminClient::connect(format!("http://{}", server.admin))
        .await
        .unwrap();
    let refused = anonymous.status(proto::StatusRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let wrong = tonic::transport::Channel::from_shared(format!("http://{}", server.admin))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut wrong = AdminClient::with_interceptor(
        wrong,
        warrant::cli::admin::AddToken::bearer("not-the-token-at-all").unwrap(),
    );
    let refused = wrong
        .grant_approval(proto::GrantApprovalRequest {
            approval: Some(deploy_grant("sneaky")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        decide(&server, deploy("sneaky")).await.reasons,
        ["warrant:unknown-approval"]
    );

    // The Check port does not serve the admin API at all.
    let mut on_check_port = AdminClient::connect(server.url()).await.unwrap();
    let refused = on_check_port
        .status(proto::StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);

    let mut admin = server.admin_client().await;
    let status = admin
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.policy_count, 24);
    assert_eq!((status.template_count, status.link_count), (1, 3));
    let metrics = scrape(&server).await;
    assert_eq!(
        value(&metrics, "warrant_admin_unauthenticated_total", &[]),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            "warrant_admin_calls_total",
            &[("method", "Status"), ("code", "Ok")]
        ),
        1.0
    );
}

/// Runs `warrant ARGS` against the server's admin API; (exit status, stdout, stderr).
pub(crate) fn shell(server: &Server, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(args)
        .env("WARRANT_ADMIN", format!("http://{}", server.admin))
        .env("WARRANT_DATA_DIR", server.data.path())
        .env_remove("WARRANT_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn the_shell_commands_grant_revoke_suspend_and_report() {
    let server = Server::start(&[]);
    let (ok, out, err) = shell(
        &server,
        &[
            "approval",
            "grant",
            "--id",
            "cli-1",
            "--ticket",
            "CHG-55",
            "--approver",
            "Human::alice",
            "--requester",
            "Human::bob",
            "--subject",
            "ServiceAccount::deploy-bot",
            "--action",
            "update",
            "--scope",
            "Scope::production",
            "--for",
            "2h",
            "--max-uses",
            "2",
            "--justification",
            "rollback",
        ],
    );
    assert!(ok, "{err}");
    let granted: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            &granted["state"],
            &granted["max_uses"],
            &granted["requester"]["id"]
        ),
        (
            &serde_json::json!("active"),
            &serde_json::json!(2),
            &serde_json::json!("bob")
        )
    );
    assert!(allowed(&decide(&server, deploy("cli-1")).await));

    let (ok, _, err) = shell(
        &server,
        &[
            "approval",
            "grant",
            "--ticket",
            "CHG-56",
            "--approver",
            "Human::bob",
            "--requester",
            "Human::bob",
            "--subject",
            "ServiceAccount::deploy-bot",
            "--action",
            "update",
            "--scope",
            "Scope::production",
            "--for",
            "1h",
        ],
    );
    assert!(!ok);
    assert!(err.contains("separation of duties"), "{err}");

    let (ok, out, _) = shell(
        &server,
        &[
            "approval",
            "list",
            "--state",
            "active",
            "--subject",
            "ServiceAccount::deploy-bot",
        ],
    );
    assert!(ok);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = listed.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&"cli-1") && ids.contains(&"CHG-1042"),
        "{ids:?}"
    );
    let (ok, out, _) = shell(&server, &["approval", "show", "cli-1"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["uses"],
        1
    );

    let (ok, out, _) = shell(
        &server,
        &["approval", "revoke", "cli-1", "--reason", "done"],
    );
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["state"],
        "revoked"
    );
    assert!(!allowed(&decide(&server, deploy("cli-1")).await));

    let (ok, _, err) = shell(
        &server,
        &["identity", "suspend", "ServiceAccount::deploy-bot"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        decide(&server, deploy("CHG-1042")).await.reasons,
        ["identity-not-active"]
    );
    let (ok, out, _) = shell(
        &server,
        &[
            "identity",
            "update",
            "ServiceAccount::deploy-bot",
            "--status",
            "active",
        ],
    );
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["status"],
        "active"
    );
    assert!(allowed(&decide(&server, deploy("CHG-1042")).await));

    // A reload of a folder that has not changed succeeds, and `status` counts it.
    let (ok, _, err) = shell(&server, &["reload"]);
    assert!(ok, "{err}");
    let (ok, out, _) = shell(&server, &["status"]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            status["policy_count"].as_u64(),
            status["live_changes"].as_u64()
        ),
        (Some(24), Some(2))
    );
    assert!(status["reloads"].as_u64() >= Some(1), "{status}");

    // A reader that has gone (`warrant status | true`): the shell ends quietly, with the status
    // a shell gives a process that SIGPIPE ended.
    let mut gone = std::process::Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(["status"])
        .env("WARRANT_ADMIN", format!("http://{}", server.admin))
        .env("WARRANT_DATA_DIR", server.data.path())
        .env_remove("WARRANT_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(gone.stdout.take());
    let ended = gone.wait_with_output().unwrap();
    assert_eq!(
        ended.status.code(),
        Some(141),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ended.stderr), "");

    // Without the token the shell is refused.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(["status"])
        .env("WARRANT_ADMIN", format!("http://{}", server.admin))
        .env("WARRANT_ADMIN_TOKEN", "wrong-token-of-some-length")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Unauthenticated"));
}

#[tokio::test]
async fn a_second_server_on_the_same_data_folder_names_the_first_and_the_way_out() {
    let server = Server::start(&[]);
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(["serve", "--data-dir"])
        .arg(server.data.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args([
            "--metrics-listen",
            "127.0.0.1:0",
            "--authzen-listen",
            "127.0.0.1:0",
        ])
        .args(["--console-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    let first = format!("(pid {}, warrant)", server.pid());
    assert!(
        said.contains("is open in another process") && said.contains(&first),
        "{said}"
    );
    assert!(said.contains("--data-dir"), "{said}");
    // Said once, not once more as its cause.
    assert_eq!(said.matches("another process").count(), 1, "{said}");
}

#[test]
fn other_policies_on_a_data_folder_with_live_changes_are_refused_naming_the_way_out() {
    let server = Server::start(&[]);
    let (ok, _, err) = shell(
        &server,
        &[
            "identity",
            "create",
            "Agent::triage-bot",
            "--owner",
            "Human::erin",
            "--attributes",
            r#"{"environment": "production", "scopes": []}"#,
        ],
    );
    assert!(ok, "{err}");
    let data = server.terminate();
    let gateway = crate::common::bundled_policies().join("examples/authzen-gateway");
    let refused = Server::start_in(
        data,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policies",
            gateway.to_str().unwrap(),
        ],
    )
    .err()
    .expect("the gateway's schema has no Agent");
    assert!(refused.contains("holds 1 live change(s)"), "{refused}");
    assert!(refused.contains("--data-dir"), "{refused}");
}

#[test]
fn the_exit_status_tells_a_usage_error_and_an_unreachable_server_from_a_deny() {
    let warrant = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_warrant"))
            .args(args)
            .env(
                "WARRANT_ADMIN_TOKEN",
                "a-token-long-enough-to-be-accepted-here",
            )
            .output()
            .unwrap()
    };
    // A mistyped command line: 64, never the 2 a deny gives.
    let mistyped = warrant(&["check", "--principl", "ApiKey::x"]);
    assert_eq!(mistyped.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&mistyped.stderr).contains("--principl"));
    // A port nobody listens on: 69.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = warrant(&["status", "--admin", &format!("http://{closed}")]);
    assert_eq!(
        unreachable.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
    // --help says so, and succeeds.
    let help = warrant(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "2    denied",
        "3    `log verify`: intact, but checked with the key found in the folder",
        "4    `log verify`: the ledger is damaged",
        "64   the command line is wrong",
        "69   the server could not be reached",
    ] {
        assert!(help.contains(line), "{line}: {help}");
    }
}

/// Writing the man pages builds every command of the shell, and in a debug build clap then checks
/// each (two flags of one command with one name, a global one included, panic here).
#[test]
fn completions_complete_in_bash_and_man_pages_cover_every_command() {
    let warrant = env!("CARGO_BIN_EXE_warrant");
    // Bash, given the script, completes `warrant lo` to `log` and `warrant log ver` to `verify`.
    let completed = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{warrant}' completions bash) && \
             COMP_WORDS=(warrant lo) COMP_CWORD=1 && _warrant warrant lo warrant && \
             echo \"${{COMPREPLY[@]}}\" && \
             COMP_WORDS=(warrant log ver) COMP_CWORD=2 && _warrant warrant ver log && \
             echo \"${{COMPREPLY[@]}}\""
        ))
        .output()
        .unwrap();
    assert!(completed.status.success(), "{completed:?}");
    assert_eq!(String::from_utf8_lossy(&completed.stdout), "log\nverify\n");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = std::process::Command::new(warrant)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            script.status.success() && script.stdout.len() > 1000,
            "{shell}"
        );
    }

    let pages = tempfile::tempdir().unwrap();
    let wrote = std::process::Command::new(warrant)
        .arg("man")
        .arg(pages.path().join("man1"))
        .output()
        .unwrap();
    assert!(wrote.status.success(), "{wrote:?}");
    let page = |name: &str| std::fs::read_to_string(pages.path().join("man1").join(name)).unwrap();
    assert!(page("warrant.1").starts_with(".ie \\n(.g .ds Aq \\(aq"));
    assert!(page("warrant.1").contains(".TH warrant 1"));
    let verify = page("warrant-log-verify.1");
    assert!(verify.contains(".TH warrant-log-verify 1"), "{verify}");
    assert!(verify.contains("expect\\-head"), "{verify}");
    // One page for every command, down to the last level.
    assert!(pages.path().join("man1/warrant-approval-grant.1").exists());
    assert!(pages.path().join("man1/warrant-store-migrate.1").exists());
}

#[tokio::test]
async fn a_use_counts_only_if_its_decision_was_recorded() {
    // Every batch starts a new segment, so the next one's name is known: make it /dev/full.
    let server = Server::start(&["--ledger-segment-bytes", "1"]);
    let mut admin = server.admin_client().await;
    let mut spec = deploy_grant("break-glass");
    spec.max_uses = 1;
    grant(&mut admin, spec).await.unwrap();
    let ledger = server.ledger_dir().join("ledger");
    let segments = || {
        std::fs::read_dir(&ledger)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("segment-")
            })
            .count()
    };
    let next = ledger.join(format!("segment-{:020}.jsonl", segments() + 1));
    std::os::unix::fs::symlink("/dev/full", &next).unwrap();
    let answer = decide(&server, deploy("break-glass")).await;
    assert_eq!(answer.reasons, ["warrant:ledger-unavailable"]);
    // Repaired and restarted: the single use is still there to take.
    let data = server.kill();
    std::fs::remove_file(&next).unwrap();
    let server = Server::restart_in(data);
    let answer = decide(&server, deploy("break-glass")).await;
    assert_eq!(answer.decision(), proto::Decision::Allow, "{answer:?}");
    assert_eq!(answer.provenance.unwrap().approval.unwrap().use_number, 1);
}

#[tokio::test]
async fn secrets_and_evidence_are_private_and_a_loose_token_file_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = Server::start(&[]);
    decide(&server, crate::common::pipeline_read("Dataset::sales-2026")).await;
    let data = server.kill();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.path()), 0o700);
    assert_eq!(mode(&data.path().join("ledger")), 0o700);
    assert_eq!(mode(&data.path().join("facts.redb")), 0o600);
    assert_eq!(mode(&data.path().join("counters.redb")), 0o600);
    assert_eq!(mode(&data.path().join("admin.token")), 0o600);
    assert_eq!(mode(&data.path().join("ledger/ledger-signing.key")), 0o600);
    for entry in std::fs::read_dir(data.path().join("ledger")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    // A token file others can read is refused at start, naming the file.
    let token = data.path().join("admin.token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let policies = crate::common::bundled_policies();
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--policies",
        policies.to_str().unwrap(),
    ];
    let error = Server::start_in(data, &serve).err().expect("refused");
    assert!(
        error.contains("admin.token: readable by group or others"),
        "{error}"
    );
    // So is a short one.
    let data = tempfile::tempdir().unwrap();
    let token = data.path().join("admin.token");
    std::fs::write(&token, "short\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let error = Server::start_in(data, &serve).err().expect("refused");
    assert!(error.contains("at least 32"), "{error}");
}

fn put(
    entity_ref: (&str, &str),
    attributes: serde_json::Value,
    parents: &[(&str, &str)],
) -> proto::PutEntityRequest {
    let attributes = crate::common::context(attributes);
    proto::PutEntityRequest {
        entity: Some(proto::EntitySpec {
            entity: entity(entity_ref.0, entity_ref.1),
            attributes,
            parents: parents.iter().map(|(t, i)| entity(t, i).unwrap()).collect(),
            tags: None,
        }),
        requester: entity("Human", "bob"),
        justification: "new quarter's data".to_owned(),
    }
}

#[tokio::test]
async fn resources_and_scopes_are_put_moved_and_removed_live_and_kept_across_a_restart() {
    let server = Server::start(&[]);
    let mut admin = server.admin_client().await;
    let read = |dataset: &str| request("ApiKey::pipeline-etl", "read", dataset, "");
    let scope = serde_json::json!({"kind": "datasets"});
    let answer = decide(&server, read("Dataset::sales-2027")).await;
    assert_eq!(answer.reasons, ["warrant:unknown-resource"]);

    // A new dataset in the key's scope: allowed at once.
    let record = admin
        .put_entity(put(
            ("Dataset", "sales-2027"),
            serde_json::json!({}),
            &[("Scope", "sales-datasets")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.origin, "live");
    assert_eq!(record.requester, entity("Human", "bob"));
    assert_eq!(record.justification, "new quarter's data");
    assert!(record.updated_at.is_some() && record.retired_at.is_none());
    assert!(allowed(&decide(&server, read("Dataset::sales-2027")).await));
    assert!(allowed(&decide(&server, read("Dataset::sales-2027")).await));

    // A scope of its own inside sales, then moved under HR: everything in it moves, and the
    // cached allow is not served again.
    admin
        .put_entity(put(
            ("Scope", "q4"),
            scope.clone(),
            &[("Scope", "sales-datasets")],
        ))
        .await
        .unwrap();
    admin
        .put_entity(put(
            ("Dataset", "q4-report"),
            serde_json::json!({}),
            &[("Scope", "q4")],
        ))
        .await
        .unwrap();
    assert!(allowed(&decide(&server, read("Dataset::q4-report")).await));
    assert!(allowed(&decide(&server, read("Dataset::q4-report")).await));
    admin
        .put_entity(put(
            ("Scope", "q4"),
            scope.clone(),
            &[("Scope", "hr-datasets")],
        ))
        .await
        .unwrap();
    let moved = decide(&server, read("Dataset::q4-report")).await;
    assert!(!allowed(&moved));
    assert!(!moved.provenance.unwrap().answered_from_cache);
    // The other dataset was not touched: its cached allow still answers.
    let untouched = decide(&server, read("Dataset::sales-2027")).await;
    assert!(allowed(&untouched));
    assert!(untouched.provenance.unwrap().answered_from_cache);

    // Refusals name the field.
    let refused = |request: proto::PutEntityRequest| {
        let mut admin = admin.clone();
        async move { admin.put_entity(request).await.unwrap_err() }
    };
    for (request, field) in [
        (
            put(("ServiceAccount", "sneaky"), serde_json::json!({}), &[]),
            "entity.entity.type: ServiceAccount is an identity type",
        ),
        (
            put(("Approval", "a-1"), serde_json::json!({}), &[]),
            "entity.entity.type: approvals are granted",
        ),
        (
            put(("Planet", "mars"), serde_json::json!({}), &[]),
            "entity.entity.type: the schema declares no entity type",
        ),
        (
            put(("Scope", "odd"), serde_json::json!({"kind": 5}), &[]),
            "entity.attributes:",
        ),
        (
            put(
                ("Dataset", "orphan"),
                serde_json::json!({}),
                &[("Scope", "nowhere")],
            ),
            "entity.parents[0]: no Scope::\"nowhere\" is known",
        ),
        (
            put(("Scope", "production"), scope.clone(), &[("Scope", "q4")]),
            "entity.parents[0]: Scope::\"q4\" lies in Scope::\"production\"",
        ),
    ] {
        let status = refused(request).await;
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{}",
            status.message()
        );
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    // Removal: refused while something names it, then the resource is unknown again.
    let named = admin
        .retire_entity(proto::RetireEntityRequest {
            entity: entity("Scope", "q4"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(named.code(), tonic::Code::InvalidArgument);
    assert!(
        named
            .message()
            .contains("Dataset::\"q4-report\" names Scope::\"q4\""),
        "{}",
        named.message()
    );
    let owner = admin
        .retire_entity(proto::RetireEntityRequest {
            entity: entity("Human", "alice"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(owner.code(), tonic::Code::InvalidArgument);
    let retired = admin
        .retire_entity(proto::RetireEntityRequest {
            entity: entity("Dataset", "q4-report"),
            requester: entity("Human", "bob"),
            justification: "report withdrawn".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(retired.retired_at.is_some());
    let answer = decide(&server, read("Dataset::q4-report")).await;
    assert_eq!(answer.reasons, ["warrant:unknown-resource"]);
    let gone = admin
        .get_entity(proto::GetEntityRequest {
            entity: entity("Dataset", "q4-report"),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);

    // Any entity reads back, identities and file entities included.
    let bot = admin
        .get_entity(proto::GetEntityRequest {
            entity: entity("ServiceAccount", "deploy-bot"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bot.origin, "file");
    let attributes = proto_json(bot.entity.unwrap().attributes);
    assert_eq!(attributes["status"], "active");

    // A restart (after a crash) keeps every change.
    drop(admin);
    let data = server.kill();
    let server = Server::restart_in(data);
    assert!(allowed(&decide(&server, read("Dataset::sales-2027")).await));
    assert!(!allowed(&decide(&server, read("Dataset::q4-report")).await));
    let mut admin = server.admin_client().await;
    let q4 = admin
        .get_entity(proto::GetEntityRequest {
            entity: entity("Scope", "q4"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        q4.entity.unwrap().parents,
        [entity("Scope", "hr-datasets").unwrap()]
    );
}

#[tokio::test]
async fn the_shell_puts_shows_and_removes_an_entity() {
    let server = Server::start(&[]);
    let (ok, out, err) = shell(
        &server,
        &[
            "entity",
            "put",
            "Dataset::sales-2027",
            "--parent",
            "Scope::sales-datasets",
            "--requester",
            "Human::bob",
            "--justification",
            "new quarter",
        ],
    );
    assert!(ok, "{err}");
    let put: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(put["parents"][0]["id"], "sales-datasets");
    assert_eq!(put["justification"], "new quarter");
    let read = request("ApiKey::pipeline-etl", "read", "Dataset::sales-2027", "");
    assert!(allowed(&decide(&server, read.clone()).await));

    let (ok, out, err) = shell(&server, &["entity", "get", "Scope::sales-datasets"]);
    assert!(ok, "{err}");
    let scope: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(scope["origin"], "file");
    assert_eq!(scope["attributes"]["kind"], "dataset-family");

    let (ok, _, err) = shell(
        &server,
        &[
            "entity",
            "put",
            "Scope::odd",
            "--attributes",
            "{\"kind\": 5}",
        ],
    );
    assert!(!ok);
    assert!(err.contains("entity.attributes"), "{err}");

    let (ok, out, err) = shell(
        &server,
        &[
            "entity",
            "retire",
            "Dataset::sales-2027",
            "--justification",
            "withdrawn",
        ],
    );
    assert!(ok, "{err}");
    let retired: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(retired["retired_at"].is_string(), "{retired}");
    let answer = decide(&server, read).await;
    assert_eq!(answer.reasons, ["warrant:unknown-resource"]);
}

/// Every entity the server exports, by uid.
async fn exported(admin: &mut Admin) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut stream = admin
        .export_facts(proto::ExportFactsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut text = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        assert_eq!(
            chunk.data.last(),
            Some(&b'\n'),
            "a chunk ends with a whole line"
        );
        text.extend_from_slice(&chunk.data);
    }
    String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|line| {
            let entity: serde_json::Value = serde_json::from_str(line).unwrap();
            (entity["uid"].to_string(), entity)
        })
        .collect()
}

fn dataset(id: &str, scope: &str) -> serde_json::Value {
    serde_json::json!({"uid": {"type": "Dataset", "id": id}, "attrs": {},
        "parents": [{"type": "Scope", "id": scope}]})
}

async fn import_lines(
    admin: &mut Admin,
    lines: &[serde_json::Value],
) -> Result<proto::ImportFactsResponse, tonic::Status> {
    import_lines_as(admin, lines, entity("Human", "bob"), false).await
}

/// `lines` imported for `requester`, with or without the per-change rules.
async fn import_lines_as(
    admin: &mut Admin,
    lines: &[serde_json::Value],
    requester: Option<proto::EntityRef>,
    unchecked: bool,
) -> Result<proto::ImportFactsResponse, tonic::Status> {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    // Split mid-line, as a stream may.
    let (a, b) = text.as_bytes().split_at(text.len() / 2);
    let messages = vec![
        proto::ImportFactsRequest {
            data: a.to_vec(),
            requester,
            justification: "bulk load".into(),
            unchecked,
        },
        proto::ImportFactsRequest {
            data: b.to_vec(),
            ..Default::default()
        },
    ];
    let mut answers = admin
        .import_facts(tokio_stream::iter(messages))
        .await?
        .into_inner();
    // Progress, then the outcome: `done`, or the refusal's status.
    let mut read = 0;
    while let Some(progress) = answers.message().await? {
        assert!(progress.bytes_read >= read && progress.bytes_read <= progress.bytes_total);
        read = progress.bytes_read;
        if let Some(done) = &progress.done {
            assert_eq!(progress.bytes_read, progress.bytes_total, "{progress:?}");
            return Ok(done.clone());
        }
    }
    panic!("the import's answers ended without its outcome");
}

#[tokio::test]
async fn facts_import_all_or_nothing_and_export_round_trips() {
    let server = Server::start(&["--max-import-bytes", "2000000"]);
    let mut admin = server.admin_client().await;
    let before = exported(&mut admin).await;
    let file: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(crate::common::bundled_policies().join("entities.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(before.len(), file.len());

    // One bad line refuses the whole import, naming the line.
    let refused = import_lines(
        &mut admin,
        &[
            dataset("d-1", "sales-datasets"),
            dataset("d-2", "nowhere"),
            dataset("d-3", "sales-datasets"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with("line 2: Dataset::\"d-2\": names Scope::\"nowhere\""),
        "{}",
        refused.message()
    );
    let refused = import_lines(
        &mut admin,
        &[
            dataset("d-1", "sales-datasets"),
            serde_json::json!({"uid": {"type": "Agent", "id": "odd"}, "attrs": {"status": 5,
                "environment": "production", "scopes": []}, "parents": []}),
        ],
    )
    .await
    .unwrap_err();
    assert!(
        refused.message().starts_with("line 2: Agent::\"odd\": "),
        "{}",
        refused.message()
    );
    let read = |id: &str| {
        request(
            "ApiKey::pipeline-etl",
            "read",
            &format!("Dataset::{id}"),
            "",
        )
    };
    assert_eq!(
        decide(&server, read("d-1")).await.reasons,
        ["warrant:unknown-resource"]
    );

    // A good one: in force at once; a scope it creates may come after what it holds.
    let summary = import_lines(
        &mut admin,
        &[
            dataset("d-1", "q9"),
            serde_json::json!({"uid": {"type": "Scope", "id": "q9"}, "attrs": {"kind": "dataset-family"},
                "parents": [{"type": "Scope", "id": "sales-datasets"}]}),
            dataset("salaries", "sales-datasets"),
        ],
    )
    .await
    .unwrap();
    assert_eq!((summary.entities, summary.created), (3, 2));
    assert!(allowed(&decide(&server, read("d-1")).await));
    assert!(
        allowed(&decide(&server, read("salaries")).await),
        "a file entity replaced"
    );

    // Too big for the limit.
    let many: Vec<serde_json::Value> = (0..30_000)
        .map(|i| dataset(&format!("big-{i}"), "q9"))
        .collect();
    let too_big = import_lines(&mut admin, &many).await.unwrap_err();
    assert_eq!(too_big.code(), tonic::Code::ResourceExhausted);
    // Each import was spooled on disk and its file removed when its call ended, refused or not.
    let spooled = |data: &std::path::Path| {
        std::fs::read_dir(data.join("imports"))
            .map(|files| files.count())
            .unwrap_or(0)
    };
    assert_eq!(spooled(server.data.path()), 0);

    // Export, then import everything into a fresh server: the same facts.
    let after = exported(&mut admin).await;
    assert_eq!(after.len(), before.len() + 2);
    let other = Server::start(&[]);
    let mut other_admin = other.admin_client().await;
    let lines: Vec<serde_json::Value> = after.values().cloned().collect();
    import_lines(&mut other_admin, &lines).await.unwrap();
    assert_eq!(exported(&mut other_admin).await, after);
    assert!(allowed(&decide(&other, read("d-1")).await));

    // A restart keeps the import, and clears what a crash left in the spool.
    drop(admin);
    let data = server.kill();
    std::fs::create_dir_all(data.path().join("imports")).unwrap();
    std::fs::write(data.path().join("imports/import-cut.jsonl"), "{\"uid\"").unwrap();
    let server = Server::restart_in(data);
    assert_eq!(spooled(server.data.path()), 0);
    let mut admin = server.admin_client().await;
    assert_eq!(exported(&mut admin).await, after);
}

#[tokio::test]
async fn the_shell_imports_a_cedar_entities_file_and_a_file_broken_half_way_imports_nothing() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // Over one chunk of the stream before the break, so that part of it was sent.
    let mut entities: Vec<serde_json::Value> = (0..4_000)
        .map(|i| dataset(&format!("bulk-{i}"), "sales-datasets"))
        .collect();
    let whole = dir.path().join("entities.json");
    std::fs::write(&whole, serde_json::to_string_pretty(&entities).unwrap()).unwrap();
    entities.truncate(3_999);
    let mut broken = serde_json::to_string(&entities).unwrap();
    broken.truncate(broken.len() - 1);
    broken.push_str(", {\"uid\": ");
    let broken_file = dir.path().join("broken.json");
    std::fs::write(&broken_file, broken).unwrap();
    assert!(std::fs::metadata(&broken_file).unwrap().len() > 300_000);

    let (ok, _, err) = shell(&server, &["facts", "import", broken_file.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("nothing was imported"), "{err}");
    let read = |id: &str| {
        request(
            "ApiKey::pipeline-etl",
            "read",
            &format!("Dataset::{id}"),
            "",
        )
    };
    assert_eq!(
        decide(&server, read("bulk-0")).await.reasons,
        ["warrant:unknown-resource"]
    );

    let (ok, out, err) = shell(
        &server,
        &[
            "facts",
            "import",
            whole.to_str().unwrap(),
            "--requester",
            "Human::bob",
            "--justification",
            "catalogue sync",
        ],
    );
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["entities"], 4_000);
    assert!(allowed(&decide(&server, read("bulk-3999")).await));

    let exported_file = dir.path().join("export.jsonl");
    let (ok, _, err) = shell(
        &server,
        &["facts", "export", "--to", exported_file.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let lines = std::fs::read_to_string(&exported_file).unwrap();
    assert!(lines.lines().any(|l| l.contains("\"bulk-3999\"")));
    // JSON lines go back in as they are.
    let (ok, out, err) = shell(
        &server,
        &["facts", "import", exported_file.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["created"], 0);
}

/// An approval of deploy-bot's production config updates, as an import carries it.
fn imported_approval(id: &str, approver: &str, hours: i64, action: &str) -> serde_json::Value {
    use warrant_domain::clock::Clock as _;
    let now = warrant_domain::clock::SystemClock.now().0;
    let at = |ms: i64| warrant_domain::clock::UnixMillis(ms).to_cedar_datetime();
    serde_json::json!({
        "uid": {"type": "Approval", "id": id},
        "attrs": {
            "ticket": id, "approver": {"type": "Human", "id": approver},
            "actions": [{"type": "Action", "id": action}],
            "scope": {"type": "Scope", "id": "prod-payments-config"},
            "not_before": {"__extn": {"fn": "datetime", "arg": at(now - 60_000)}},
            "expires_at": {"__extn": {"fn": "datetime", "arg": at(now + hours * 3_600_000)}},
            "revoked": false,
        },
        "parents": [{"type": "ServiceAccount", "id": "deploy-bot"}],
    })
}

#[tokio::test]
async fn an_import_is_held_to_the_rules_of_grants_and_identities_unless_marked_unchecked() {
    let server = Server::start(&[]);
    let mut admin = server.admin_client().await;
    let refused = |result: Result<proto::ImportFactsResponse, tonic::Status>| {
        let status = result.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        status.message().to_owned()
    };
    // The red team's approval: by the identity's owner, no requester, until 2099 (here 20 years).
    let forever = imported_approval("sneaky", "alice", 20 * 365 * 24, "update");
    let message =
        refused(import_lines_as(&mut admin, std::slice::from_ref(&forever), None, false).await);
    assert_eq!(message, "line 1: Approval::\"sneaky\": requester: required");
    let message = refused(
        import_lines_as(
            &mut admin,
            std::slice::from_ref(&forever),
            entity("Human", "bob"),
            false,
        )
        .await,
    );
    assert!(
        message.starts_with("line 1: Approval::\"sneaky\": expires_at: the approval would last")
            && message.contains("(setting approval_max_validity_hours)"),
        "{message}"
    );
    let own = imported_approval("own", "bob", 2, "update");
    let message = refused(import_lines(&mut admin, &[own]).await);
    assert_eq!(
        message,
        "line 1: Approval::\"own\": approver: separation of duties: the approver cannot be the \
         requester (Human::\"bob\")"
    );
    let mut by_a_machine = imported_approval("machine", "alice", 2, "update");
    by_a_machine["attrs"]["approver"] =
        serde_json::json!({"type": "ServiceAccount", "id": "reporting"});
    let message = refused(import_lines(&mut admin, &[by_a_machine]).await);
    assert!(
        message.starts_with("line 1: Approval::\"machine\""),
        "{message}"
    );
    let undeclared = imported_approval("undeclared", "alice", 2, "self_destruct");
    let message = refused(import_lines(&mut admin, &[undeclared]).await);
    assert!(
        message.starts_with("line 1: Approval::\"undeclared\"")
            && message.contains("self_destruct"),
        "{message}"
    );
    assert!(!allowed(&decide(&server, deploy("sneaky")).await));

    // An identity replaced whole without its owner.
    let ownerless = serde_json::json!({
        "uid": {"type": "ServiceAccount", "id": "deploy-bot"},
        "attrs": {"status": "active", "environment": "production", "privileged": true,
                  "scopes": [{"type": "Scope", "id": "production"}]},
        "parents": [],
    });
    let message = refused(
        import_lines(
            &mut admin,
            &[
                imported_approval("ok", "alice", 2, "update"),
                ownerless.clone(),
            ],
        )
        .await,
    );
    assert_eq!(
        message,
        "line 2: ServiceAccount::\"deploy-bot\": owner: required: an identity is owned by a Human"
    );
    assert!(
        !allowed(&decide(&server, deploy("ok")).await),
        "nothing of a refused import is in force"
    );

    // Within the rules: in force, and not marked.
    import_lines(&mut admin, &[imported_approval("ok", "alice", 2, "update")])
        .await
        .unwrap();
    assert!(allowed(&decide(&server, deploy("ok")).await));
    let record = admin
        .get_approval(proto::GetApprovalRequest { id: "ok".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!record.unchecked);

    // Unchecked, on purpose: written, and marked on every record it wrote.
    import_lines_as(&mut admin, &[forever, ownerless], None, true)
        .await
        .unwrap();
    let record = admin
        .get_approval(proto::GetApprovalRequest {
            id: "sneaky".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(record.unchecked);
    let identity = admin
        .get_identity(proto::GetIdentityRequest {
            entity: entity("ServiceAccount", "deploy-bot"),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(identity.unchecked);
    let (_, _, err) = shell(
        &server,
        &[
            "facts",
            "import",
            "--unchecked",
            "--requester",
            "Human::bob",
            "/dev/null",
        ],
    );
    assert!(!err.contains("unexpected argument"), "{err}");
}

#[tokio::test]
async fn with_owner_may_approve_off_an_identity_s_owner_approves_for_it_on_no_path() {
    let server = Server::start(&["--owner-may-approve", "false"]);
    let mut admin = server.admin_client().await;
    // alice owns deploy-bot.
    let refused = grant(&mut admin, deploy_grant("own")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "approval.approver: separation of duties: Human::\"alice\" owns the identity it would \
         approve for (setting owner_may_approve)"
    );
    let other = proto::ApprovalSpec {
        approver: entity("Human", "carol"),
        ..deploy_grant("four-eyes")
    };
    grant(&mut admin, other).await.unwrap();
    // An import too.
    let mut imported = imported_approval("imported-own", "alice", 2, "update");
    let message = import_lines(&mut admin, std::slice::from_ref(&imported))
        .await
        .unwrap_err();
    assert!(
        message.message().contains("owns the identity"),
        "{}",
        message.message()
    );
    imported["attrs"]["approver"] = serde_json::json!({"type": "Human", "id": "carol"});
    import_lines(&mut admin, &[imported]).await.unwrap();
}

#[test]
fn an_import_shows_its_progress_on_a_terminal_and_nothing_in_a_pipe() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("datasets.jsonl");
    let lines: Vec<String> = (0..2_000)
        .map(|i| {
            format!(
                r#"{{"uid":{{"type":"Dataset","id":"p-{i}"}},"attrs":{{}},"parents":[{{"type":"Scope","id":"sales-datasets"}}]}}"#
            )
        })
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let warrant = env!("CARGO_BIN_EXE_warrant");
    let import = format!("{warrant} facts import {}", file.display());
    let run = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .env("WARRANT_ADMIN", format!("http://{}", server.admin))
            .env("WARRANT_DATA_DIR", server.data.path())
            .env_remove("WARRANT_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    // In a pipe: the summary on stdout, nothing on stderr.
    let piped = run("sh", &["-c", &import]);
    assert!(piped.status.success(), "{piped:?}");
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(String::from_utf8_lossy(&piped.stdout).contains("\"entities\": 2000"));
    // On a terminal (script(1) gives the command one): the upload's bar is drawn.
    let shown = run("script", &["-qec", &import, "/dev/null"]);
    assert!(shown.status.success(), "{shown:?}");
    let screen = String::from_utf8_lossy(&shown.stdout);
    assert!(screen.contains("sending"), "{screen}");
    assert!(screen.contains("\"entities\": 2000"), "{screen}");
}

#[test]
fn an_unknown_id_is_answered_with_the_ids_it_may_have_meant() {
    let server = Server::start(&[]);
    let (ok, _, err) = shell(
        &server,
        &["identity", "show", "ServiceAccount::deploy-bott"],
    );
    assert!(!ok);
    assert!(
        err.contains(r#"no identity ServiceAccount::"deploy-bott"; did you mean ServiceAccount::"deploy-bot"?"#),
        "{err}"
    );
    let (ok, _, err) = shell(&server, &["entity", "get", "Dataset::sales-2062"]);
    assert!(!ok);
    assert!(
        err.contains(r#"did you mean Dataset::"sales-2026"?"#),
        "{err}"
    );
    // Nothing near: no guess.
    let (ok, _, err) = shell(&server, &["entity", "get", "Dataset::nothing-like-it"]);
    assert!(!ok);
    assert!(!err.contains("did you mean"), "{err}");
    // A ticket where an approval's id belongs names the approval that carries it.
    let (ok, out, err) = shell(
        &server,
        &[
            "approval",
            "grant",
            "--ticket",
            "CHG-2100",
            "--approver",
            "Human::alice",
            "--requester",
            "Human::bob",
            "--subject",
            "ServiceAccount::deploy-bot",
            "--action",
            "update",
            "--scope",
            "Scope::production",
            "--for",
            "2h",
        ],
    );
    assert!(ok, "{err}");
    let granted: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (ok, _, err) = shell(&server, &["approval", "revoke", "CHG-2100"]);
    assert!(!ok);
    let id = granted["id"].as_str().unwrap();
    assert!(
        err.contains(&format!("CHG-2100 is a ticket: approval {id} carries it")),
        "{err}"
    );
}
