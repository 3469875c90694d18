//! Template links against the real server: a grant linked through the admin API or the shell
//! is in force for the next Check, invalidates only the cached decisions it could change, is
//! named with its template in the ledger, survives restarts and reloads, and is refused with the
//! field at fault when it does not fit.

use crate::admin::{decide, shell};
use crate::common::{Admin, Server, entity, pipeline_read, request};
use warrant_proto as proto;

fn link(
    id: &str,
    template: &str,
    principal: (&str, &str),
    resource: (&str, &str),
) -> proto::PolicyLinkSpec {
    proto::PolicyLinkSpec {
        link_id: id.into(),
        template_id: template.into(),
        principal: entity(principal.0, principal.1),
        resource: entity(resource.0, resource.1),
    }
}

async fn make(
    admin: &mut Admin,
    spec: proto::PolicyLinkSpec,
) -> Result<proto::PolicyLinkRecord, tonic::Status> {
    admin
        .link_policy(proto::LinkPolicyRequest {
            link: Some(spec),
            requester: entity("Human", "dave"),
            justification: "CHG-3001".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn from_cache(response: &proto::CheckResponse) -> bool {
    response.provenance.as_ref().unwrap().answered_from_cache
}

fn db_admin_read() -> proto::CheckRequest {
    request(
        "ServiceAccount::db-admin",
        "read",
        "Dataset::sales-2026",
        "",
    )
}

#[tokio::test]
async fn a_live_link_grants_at_once_keeps_other_cached_answers_and_survives_a_restart() {
    let server = Server::start(&[]);
    let mut admin = server.admin_client().await;

    // Not granted yet; and another identity's answer is cached.
    let before = decide(&server, db_admin_read()).await;
    assert_eq!(before.reasons, ["warrant:no-permitting-policy"]);
    let other = decide(&server, pipeline_read("Dataset::sales-2026")).await;
    assert_eq!(other.reasons, ["pipeline-etl-reads-sales"]);
    assert!(from_cache(
        &decide(&server, pipeline_read("Dataset::sales-2026")).await
    ));

    let made = make(
        &mut admin,
        link(
            "db-admin-reads-sales",
            "dataset-read-grant",
            ("ServiceAccount", "db-admin"),
            ("Scope", "sales-datasets"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(made.origin, "live");
    assert_eq!(made.requester, entity("Human", "dave"));

    // In force for the next Check, over the cached deny; the other answer stays cached.
    let after = decide(&server, db_admin_read()).await;
    assert_eq!(
        after.decision,
        proto::Decision::Allow as i32,
        "{:?}",
        after.reasons
    );
    assert_eq!(after.reasons, ["db-admin-reads-sales"]);
    assert!(!from_cache(&after));
    let granted_by = &after.provenance.as_ref().unwrap().policy_links;
    assert_eq!(granted_by.len(), 1);
    assert_eq!(
        (
            granted_by[0].link_id.as_str(),
            granted_by[0].template_id.as_str()
        ),
        ("db-admin-reads-sales", "dataset-read-grant")
    );
    assert!(
        after.policy_version.contains("+live-links:1:"),
        "{}",
        after.policy_version
    );
    let other = decide(&server, pipeline_read("Dataset::sales-2026")).await;
    assert!(from_cache(&other));
    assert_eq!(other.policy_version, after.policy_version);

    // The ledger names the link, its template and its slots.
    let record = server.record(&after.decision_id).await;
    assert_eq!(
        record["policy_links"],
        serde_json::json!([{
            "link": "db-admin-reads-sales",
            "principal": {"id": "db-admin", "type": "ServiceAccount"},
            "resource": {"id": "sales-datasets", "type": "Scope"},
            "template": "dataset-read-grant",
        }])
    );

    // The identity's scopes stay the ceiling: a grant beyond them is overruled by the forbid.
    make(
        &mut admin,
        link(
            "pipeline-etl-reads-hr",
            "dataset-read-grant",
            ("ApiKey", "pipeline-etl"),
            ("Scope", "hr-datasets"),
        ),
    )
    .await
    .unwrap();
    let outside = decide(&server, pipeline_read("Dataset::salaries")).await;
    assert_eq!(outside.reasons, ["dataset-outside-identity-scopes"]);
    admin
        .unlink_policy(proto::UnlinkPolicyRequest {
            link_id: "pipeline-etl-reads-hr".into(),
        })
        .await
        .unwrap();

    // What does not fit is refused, naming the field.
    let refused = |spec| {
        let mut admin = admin.clone();
        async move { make(&mut admin, spec).await.unwrap_err() }
    };
    let cases = [
        (
            link(
                "x",
                "no-such-template",
                ("ServiceAccount", "db-admin"),
                ("Scope", "production"),
            ),
            tonic::Code::InvalidArgument,
            "link.template: no template has @id",
        ),
        (
            link(
                "x",
                "dataset-outside-identity-scopes",
                ("ServiceAccount", "db-admin"),
                ("Scope", "production"),
            ),
            tonic::Code::InvalidArgument,
            "link.template: \"dataset-outside-identity-scopes\" is a static policy",
        ),
        (
            proto::PolicyLinkSpec {
                principal: None,
                ..link("x", "dataset-read-grant", ("", ""), ("Scope", "production"))
            },
            tonic::Code::InvalidArgument,
            "link.principal: the template has a ?principal slot",
        ),
        (
            link(
                "x",
                "dataset-read-grant",
                ("Dataset", "sales-2026"),
                ("Scope", "production"),
            ),
            tonic::Code::InvalidArgument,
            "link.principal: does not fit the schema",
        ),
        (
            link(
                "x",
                "dataset-read-grant",
                ("ServiceAccount", "ghost"),
                ("Scope", "production"),
            ),
            tonic::Code::InvalidArgument,
            "link.principal: no ServiceAccount::\"ghost\" is known",
        ),
        (
            link(
                "x",
                "dataset-read-grant",
                ("ServiceAccount", "db-admin"),
                ("Planet", "mars"),
            ),
            tonic::Code::InvalidArgument,
            "link.resource: the schema declares no entity type",
        ),
        (
            link(
                "warrant:no-permitting-policy",
                "dataset-read-grant",
                ("ServiceAccount", "db-admin"),
                ("Scope", "production"),
            ),
            tonic::Code::InvalidArgument,
            "link.id: ids starting with warrant: are Warrant's own reasons",
        ),
        (
            link(
                "dataset-read-grant",
                "dataset-read-grant",
                ("ServiceAccount", "db-admin"),
                ("Scope", "production"),
            ),
            tonic::Code::InvalidArgument,
            "link.id: \"dataset-read-grant\" is the @id of a policy or template",
        ),
        (
            link(
                "db-admin-reads-sales",
                "dataset-read-grant",
                ("ServiceAccount", "db-admin"),
                ("Scope", "production"),
            ),
            tonic::Code::AlreadyExists,
            "a link \"db-admin-reads-sales\" exists already",
        ),
    ];
    for (spec, code, message) in cases {
        let status = refused(spec).await;
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().starts_with(message),
            "{}",
            status.message()
        );
    }

    // An entity a link names cannot be removed from under it.
    admin
        .put_entity(proto::PutEntityRequest {
            entity: Some(proto::EntitySpec {
                entity: entity("Scope", "q3-datasets"),
                attributes: crate::common::context(serde_json::json!({"kind": "dataset-family"})),
                parents: vec![entity("Scope", "sales-datasets").unwrap()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    make(
        &mut admin,
        link(
            "db-admin-reads-q3",
            "dataset-read-grant",
            ("ServiceAccount", "db-admin"),
            ("Scope", "q3-datasets"),
        ),
    )
    .await
    .unwrap();
    let retire = admin
        .retire_entity(proto::RetireEntityRequest {
            entity: entity("Scope", "q3-datasets"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        retire.message().contains("the link \"db-admin-reads-q3\""),
        "{}",
        retire.message()
    );

    // The folder's links are listed but changed in the folder.
    let file_link = admin
        .unlink_policy(proto::UnlinkPolicyRequest {
            link_id: "pipeline-etl-reads-sales".into(),
        })
        .await
        .unwrap_err();
    assert!(
        file_link.message().starts_with(
            "link_id: \"pipeline-etl-reads-sales\" is in the policy folder's links.json"
        ),
        "{}",
        file_link.message()
    );
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_policy_links(proto::ListPolicyLinksRequest {
                template_id: "dataset-read-grant".into(),
                page_size: 2,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.links.len() <= 2);
        listed.extend(
            page.links
                .into_iter()
                .map(|r| (r.link.unwrap().link_id, r.origin)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let live = |id: &str| (id.to_owned(), "live".to_owned());
    let file = |id: &str| (id.to_owned(), "file".to_owned());
    assert_eq!(
        listed,
        [
            live("db-admin-reads-q3"),
            live("db-admin-reads-sales"),
            file("deploy-bot-reads-production-datasets"),
            file("pipeline-etl-reads-sales"),
            file("pipeline-expired-reads-sales"),
        ]
    );

    // Durable: a restart keeps the grant; an unlink ends it at once, cache or not, and for good.
    let server = Server::restart_in(server.terminate());
    let mut admin = server.admin_client().await;
    let again = decide(&server, db_admin_read()).await;
    assert_eq!(again.reasons, ["db-admin-reads-sales"]);
    assert!(from_cache(&decide(&server, db_admin_read()).await));
    for id in ["db-admin-reads-sales", "db-admin-reads-q3"] {
        admin
            .unlink_policy(proto::UnlinkPolicyRequest { link_id: id.into() })
            .await
            .unwrap();
    }
    assert_eq!(
        decide(&server, db_admin_read()).await.reasons,
        ["warrant:no-permitting-policy"]
    );
    let unknown = admin
        .unlink_policy(proto::UnlinkPolicyRequest {
            link_id: "db-admin-reads-sales".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let server = Server::restart_in(server.terminate());
    assert_eq!(
        decide(&server, db_admin_read()).await.reasons,
        ["warrant:no-permitting-policy"]
    );
    let after_restart = decide(&server, db_admin_read()).await;
    assert!(
        !after_restart.policy_version.contains("live-links"),
        "{}",
        after_restart.policy_version
    );
}

#[tokio::test]
async fn the_shell_links_lists_and_unlinks_and_a_reload_keeps_live_links_or_fails_whole() {
    let policies = crate::common::bundled_policies_copy();
    let dir = policies.path().to_str().unwrap();
    let server =
        Server::start_with(&["serve", "--listen", "127.0.0.1:0", "--policies", dir]).unwrap();

    let (ok, out, err) = shell(
        &server,
        &[
            "policy",
            "link",
            "db-admin-reads-sales",
            "--template",
            "dataset-read-grant",
            "--principal",
            "ServiceAccount::db-admin",
            "--resource",
            "Scope::sales-datasets",
            "--requester",
            "Human::dave",
            "--justification",
            "CHG-3002",
        ],
    );
    assert!(ok, "{err}");
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(made["origin"], "live");
    assert_eq!(
        made["principal"],
        serde_json::json!({"type": "ServiceAccount", "id": "db-admin"})
    );
    assert_eq!(
        decide(&server, db_admin_read()).await.reasons,
        ["db-admin-reads-sales"]
    );
    let (ok, out, _) = shell(
        &server,
        &["policy", "links", "--template", "dataset-read-grant"],
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 4, "{out}");
    let (ok, _, err) = shell(
        &server,
        &[
            "policy",
            "link",
            "again",
            "--template",
            "dataset-read-grant",
            "--principal",
            "ServiceAccount::db-admin",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("link.resource: the template has a ?resource slot"),
        "{err}"
    );

    // A reload keeps the live link...
    let mut admin = server.admin_client().await;
    std::fs::write(policies.path().join("extra.cedar"), "@id(\"extra\")\nforbid (principal == ServiceAccount::\"legacy-cron\", action, resource);\n").unwrap();
    admin
        .reload_policies(proto::ReloadPoliciesRequest {})
        .await
        .unwrap();
    assert_eq!(
        decide(&server, db_admin_read()).await.reasons,
        ["db-admin-reads-sales"]
    );
    // ...and refuses a folder without its template, whole.
    let datasets = policies.path().join("datasets.cedar");
    let original = std::fs::read_to_string(&datasets).unwrap();
    std::fs::write(&datasets, "@id(\"no-reads\")\nforbid (principal, action == Action::\"read\", resource) unless { resource in principal.scopes };\n").unwrap();
    std::fs::remove_file(policies.path().join("links.json")).unwrap();
    let failed = admin
        .reload_policies(proto::ReloadPoliciesRequest {})
        .await
        .unwrap_err();
    assert_eq!(failed.code(), tonic::Code::FailedPrecondition);
    assert!(failed.message().contains("live link \"db-admin-reads-sales\": template: no template has @id(\"dataset-read-grant\")"), "{}", failed.message());
    assert_eq!(
        decide(&server, db_admin_read()).await.reasons,
        ["db-admin-reads-sales"]
    );
    std::fs::write(&datasets, original).unwrap();

    let (ok, _, err) = shell(&server, &["policy", "unlink", "db-admin-reads-sales"]);
    assert!(ok, "{err}");
    assert_eq!(
        decide(&server, db_admin_read()).await.reasons,
        ["warrant:no-permitting-policy"]
    );
}
