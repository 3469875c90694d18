//! `warrant search subjects|resources|actions`: who can do what, asked of a running server
//! (`SearchSubjects`, `SearchResources`, `SearchActions`), every page followed, one JSON line
//! per result.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;

use warrant_proto as proto;
use warrant_proto::authorizer_client::AuthorizerClient;

use super::{ClientTls, parse_entity};

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(subcommand)]
    pub searched: SearchCommand,
    #[command(flatten)]
    pub tls: ClientTls,
    /// The server to ask.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:50051",
        env = "WARRANT_SERVER"
    )]
    pub server: String,
    /// The caller's context as a JSON object, as for `warrant check`
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The id of an approval presented with each candidate's Check
    #[arg(long, global = true)]
    pub approval: Option<String>,
    /// Also list what a valid approval would allow (marked "approvable": true)
    #[arg(long, global = true)]
    pub include_approvable: bool,
    /// Stop after this many results [default: all of them]
    #[arg(long, global = true)]
    pub limit: Option<u64>,
    /// Say on stderr where the candidates came from (what the policies narrowed the search to,
    /// or why every entity of the type was read) and how many each page examined
    #[arg(long, global = true)]
    pub explain: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum SearchCommand {
    /// Who (principals of --type) may take --action on --resource
    Subjects {
        #[arg(long = "type")]
        type_name: String,
        #[arg(long)]
        action: String,
        /// As Type::id
        #[arg(long)]
        resource: String,
    },
    /// What (resources of --type) --principal may take --action on
    Resources {
        /// As Type::id
        #[arg(long)]
        principal: String,
        #[arg(long)]
        action: String,
        #[arg(long = "type")]
        type_name: String,
    },
    /// Which actions --principal may take on --resource
    Actions {
        /// As Type::id
        #[arg(long)]
        principal: String,
        /// As Type::id
        #[arg(long)]
        resource: String,
    },
}

/// Results asked for per page.
const PAGE: u32 = 500;

pub async fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let typed = |type_name: &str| proto::EntityRef {
        r#type: type_name.to_owned(),
        id: String::new(),
    };
    let (principal, action, resource) = match &args.searched {
        SearchCommand::Subjects {
            type_name,
            action,
            resource,
        } => (
            typed(type_name),
            action.clone(),
            parse_entity(resource, "resource")?,
        ),
        SearchCommand::Resources {
            principal,
            action,
            type_name,
        } => (
            parse_entity(principal, "principal")?,
            action.clone(),
            typed(type_name),
        ),
        SearchCommand::Actions {
            principal,
            resource,
        } => (
            parse_entity(principal, "principal")?,
            String::new(),
            parse_entity(resource, "resource")?,
        ),
    };
    let context = super::json_struct(args.context.as_deref(), "context")?;
    let (result_type, by_name) = match &args.searched {
        SearchCommand::Subjects { type_name, .. } | SearchCommand::Resources { type_name, .. } => {
            (type_name.clone(), false)
        }
        SearchCommand::Actions { .. } => (String::new(), true),
    };
    let mut client = AuthorizerClient::new(args.tls.connect(&args.server).await?);
    let mut request = proto::SearchRequest {
        request: Some(proto::CheckRequest {
            principal: Some(principal),
            action,
            resource: Some(resource),
            context,
            approval_id: args.approval.clone().unwrap_or_default(),
            ..proto::CheckRequest::default()
        }),
        include_approvable: args.include_approvable,
        page_size: PAGE,
        page_token: String::new(),
    };
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let answer = match &args.searched {
            SearchCommand::Subjects { .. } => client.search_subjects(request.clone()).await,
            SearchCommand::Resources { .. } => client.search_resources(request.clone()).await,
            SearchCommand::Actions { .. } => client.search_actions(request.clone()).await,
        };
        let page = match answer {
            Ok(page) => page.into_inner(),
            Err(status) => bail!("{:?}: {}", status.code(), status.message()),
        };
        if args.explain {
            eprintln!(
                "candidates: {}; this page examined {} and found {} (search {})",
                page.candidates,
                page.examined,
                page.results.len(),
                page.search_id
            );
        }
        for result in page.results {
            if args.limit.is_some_and(|limit| printed >= limit) {
                return Ok(ExitCode::SUCCESS);
            }
            let line = match super::output::chosen_or(super::output::Output::Json) {
                super::output::Output::Json => {
                    let mut line = if by_name {
                        json!({ "name": result.id })
                    } else {
                        json!({ "type": result_type, "id": result.id })
                    };
                    if result.approvable {
                        line["approvable"] = json!(true);
                    }
                    line.to_string()
                }
                super::output::Output::Table => {
                    let approvable = if result.approvable {
                        "  (approvable)"
                    } else {
                        ""
                    };
                    match by_name {
                        true => format!("{}{approvable}", result.id),
                        false => format!("{result_type}::{}{approvable}", result.id),
                    }
                }
            };
            // A reader that goes away (`| head`) ends the listing, not the process with a panic.
            if writeln!(out, "{line}").is_err() {
                return Ok(ExitCode::SUCCESS);
            }
            printed += 1;
        }
        if page.next_page_token.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        request.page_token = page.next_page_token;
    }
}
