//! The shell's admin client: `warrant approval ...`, `warrant identity ...`,
//! `warrant entity ...`, `warrant facts ...`, `warrant console invite`, `warrant reload`
//! and `warrant status` call a running server's `warrant.v1.Admin` with the admin token and print
//! what it answers as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::cli::{entity_json, output, parse_entity, time_json};
use warrant_domain::clock::{Clock as _, SystemClock, UnixMillis};
use warrant_proto as proto;
use warrant_proto::admin_client::AdminClient;

mod approvals;
mod facts;
mod identities;
mod policies;
mod review;

pub use approvals::{ApprovalArgs, ApprovalCommand, ApproverArgs, approval};
pub use facts::{EntityArgs, EntityCommand, FactsArgs, FactsCommand, entity, facts};
pub use identities::{IdentityArgs, IdentityCommand, identity};
pub use policies::{PolicyArgs, PolicyCommand, policy};
pub use review::{ReviewArgs, ReviewCommand, review};

type Client = AdminClient<InterceptedService<Channel, AddToken>>;

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
    super::output::print(&value, super::output::Output::Json)?;
    Ok(ExitCode::SUCCESS)
}

fn call_failed(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

fn time(text: &str, flag: &str) -> anyhow::Result<prost_types::Timestamp> {
    let at = UnixMillis::parse_rfc3339(text)
        .with_context(|| format!("--{flag}: not an RFC 3339 time: {text:?}"))?;
    Ok(warrant_proto::convert::timestamp(at))
}

/// `90s`, `30m`, `2h`, `1d` in milliseconds (for `--for`).
fn duration_millis(text: &str) -> anyhow::Result<i64> {
    length_millis(text, "for")
}

/// `90s`, `30m`, `2h`, `1d` in milliseconds, for the flag `--flag`.
pub(crate) fn length_millis(text: &str, flag: &str) -> anyhow::Result<i64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .with_context(|| format!("--{flag}: expected e.g. 30m or 2h, got {text:?}"))?;
    let unit = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--{flag}: the unit must be s, m, h or d, got {text:?}"),
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
        warrant_proto::decision_log_client::DecisionLogClient::with_interceptor(channel, token);
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
        let line = if super::output::asked(super::output::Output::Json) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_has_a_number_and_a_unit() {
        assert_eq!(duration_millis("90s").unwrap(), 90_000);
        assert_eq!(duration_millis("30m").unwrap(), 1_800_000);
        assert_eq!(duration_millis("2h").unwrap(), 7_200_000);
        assert_eq!(duration_millis("1d").unwrap(), 86_400_000);
        for bad in ["", "h", "2", "2w", "2 h", "-2h"] {
            let error = duration_millis(bad).unwrap_err().to_string();
            assert!(error.starts_with("--for:"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn attributes_are_a_json_object() {
        assert_eq!(json_object(None, "attributes").unwrap(), None);
        let fields = json_object(Some(r#"{"n": 1}"#), "attributes")
            .unwrap()
            .unwrap();
        assert_eq!(
            Value::Object(proto::struct_to_json(fields)),
            json!({"n": 1})
        );
        for bad in ["[]", "1", "{"] {
            let error = json_object(Some(bad), "attributes")
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("--attributes:"), "{bad}: {error}");
        }
    }
}

/// `warrant console ...`: the web console's sign-in links.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: ConsoleCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConsoleCommand {
    /// Print a one-time link that signs HUMAN in to the console (for a team without an identity
    /// provider). It works once, for `[console] invite_minutes`.
    Invite {
        /// The Human to sign in, e.g. Human::carol.
        human: String,
    },
}

pub async fn console(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connection.connect().await?;
    match args.command {
        ConsoleCommand::Invite { human } => {
            let invite = client
                .create_console_invite(proto::CreateConsoleInviteRequest {
                    human: Some(parse_entity(&human, "human")?),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(json!({
                "url": invite.url,
                "expires_at": time_json(&invite.expires_at),
            }))
        }
    }
}
