//! A fleet's decisions on one page: every replica announces in the shared database where its
//! admin API and console are (`announce`, every `ANNOUNCE_EVERY`), and a replica's decision log
//! asks each other one heard from within `HEARD_WITHIN` for its newest matching decisions
//! (`DecisionLog/ListDecisions`, newest first, with the admin token a fleet shares; over TLS
//! with the listeners' own certificate and client CA), then merges them with its own by time.
//! A replica that cannot be asked is named on the page with why; its decisions are missing, not
//! invented.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use warrant_control::Control;
use warrant_fleet::Member;
use warrant_ledger::Record;
use warrant_proto as proto;

/// How often a replica announces itself.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(15);
/// Replicas heard from within this long are asked.
const HEARD_WITHIN: Duration = Duration::from_secs(60);
/// How long one replica may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// How this replica reaches the others' admin APIs.
#[derive(Clone)]
pub struct Peers {
    /// The admin token (the fleet's: every replica must accept it).
    pub token: String,
    /// For `https://` peers: the CA their certificates chain to, and this replica's certificate
    /// and key for mutual TLS.
    pub ca: Option<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Where the others reach this replica: its admin API and its console.
    pub admin_url: String,
    pub console_url: String,
}

/// Announces this replica now and every `ANNOUNCE_EVERY`, for as long as the server runs.
pub async fn announce(control: Arc<Control>, peers: Peers) {
    let Some(postgres) = control.replication().map(|r| Arc::clone(&r.postgres)) else {
        return;
    };
    loop {
        let (postgres, admin, console) = (
            Arc::clone(&postgres),
            peers.admin_url.clone(),
            peers.console_url.clone(),
        );
        let announced =
            tokio::task::spawn_blocking(move || postgres.announce(&admin, Some(&console))).await;
        if let Ok(Err(error)) = announced {
            tracing::warn!(%error, "cannot announce this replica to the fleet");
        }
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}

/// The other replicas' newest decisions that match `ask` (a page each), each with the replica
/// that answered; and the replicas that could not be asked, with why.
pub(super) async fn others(
    control: &Control,
    peers: &Peers,
    ask: proto::ListDecisionsRequest,
) -> (Vec<(Record, Member)>, Vec<(String, String)>) {
    let Some(postgres) = control.replication().map(|r| Arc::clone(&r.postgres)) else {
        return (Vec::new(), Vec::new());
    };
    let me = postgres.replica().to_owned();
    let members = tokio::task::spawn_blocking(move || postgres.members(HEARD_WITHIN))
        .await
        .map_err(|error| error.to_string())
        .and_then(|members| members.map_err(|error| error.to_string()));
    let members = match members {
        Ok(members) => members,
        Err(why) => return (Vec::new(), vec![("the fleet".into(), why)]),
    };
    let asks = members
        .into_iter()
        .filter(|member| member.id != me)
        .map(|member| {
            let ask = ask.clone();
            async move {
                let answer = tokio::time::timeout(ASK_TIMEOUT, ask_one(peers, &member, ask))
                    .await
                    .unwrap_or_else(|_| Err("no answer in time".into()));
                (member, answer)
            }
        });
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for (member, answer) in futures_util::future::join_all(asks).await {
        match answer {
            Ok(records) => found.extend(records.into_iter().map(|r| (r, member.clone()))),
            Err(why) => {
                tracing::warn!(
                    replica = member.id,
                    why,
                    "a replica's decisions could not be read"
                );
                failed.push((member.id, why));
            }
        }
    }
    (found, failed)
}

async fn ask_one(
    peers: &Peers,
    member: &Member,
    ask: proto::ListDecisionsRequest,
) -> Result<Vec<Record>, String> {
    let identity = peers
        .identity
        .as_ref()
        .map(|(cert, key)| (cert.as_path(), key.as_path()));
    let channel =
        crate::tls::client_channel(&member.admin_url, peers.ca.as_deref(), identity, None)
            .await
            .map_err(|error| format!("{error:#}"))?;
    let mut client = proto::decision_log_client::DecisionLogClient::new(channel);
    let mut request = tonic::Request::new(ask);
    let bearer = format!("Bearer {}", peers.token)
        .parse()
        .map_err(|_| "the admin token is not a header value".to_owned())?;
    request.metadata_mut().insert("authorization", bearer);
    let page = client
        .list_decisions(request)
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    page.records
        .iter()
        .map(|record| {
            serde_json::from_str::<Record>(&record.record_json)
                .map_err(|error| format!("a record that does not read back: {error}"))
        })
        .collect()
}
