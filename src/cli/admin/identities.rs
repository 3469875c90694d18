//! `warrant identity ...`: service accounts and agents, their owners and status.

use super::*;

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
    Suspend { entity: String },
    /// Retire an identity (status "retired").
    Retire { entity: String },
    /// One identity: its owner, status, attributes, and who changed it last.
    Show { entity: String },
    /// Every identity, in uid order.
    List {
        #[arg(long = "type")]
        type_name: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
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
            output::print_list(
                all,
                &["entity", "owner", "status", "origin", "updated_at"],
                output::Output::Json,
            )?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    print(identity_json(&record.map_err(call_failed)?.into_inner()))
}
