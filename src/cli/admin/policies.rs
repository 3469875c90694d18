//! `warrant policy ...`: template links made and removed while serving.

use super::*;

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
        store: crate::cli::fleet::StoreConnection,
    },
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

pub async fn policy(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    if let PolicyCommand::Push { dir, store } = args.command {
        return tokio::task::spawn_blocking(move || crate::cli::fleet::push(&store, &dir)).await?;
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
            // JSON lines as the pages come; a table once every row is known, for its widths.
            let table = output::asked(output::Output::Table);
            let mut rows = Vec::new();
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
                    match table {
                        true => rows.push(link_record_json(link)),
                        false => println!("{}", link_record_json(link)),
                    }
                }
                if page.next_page_token.is_empty() {
                    if table {
                        output::print_list(
                            rows,
                            &["link_id", "template_id", "principal", "resource", "origin"],
                            output::Output::Table,
                        )?;
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                page_token = page.next_page_token;
            }
        }
        PolicyCommand::Push { .. } => bail!("pushed above"),
    };
    print(link_record_json(&record.map_err(call_failed)?.into_inner()))
}
