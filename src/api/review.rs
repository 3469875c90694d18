//! Access reviews over the API: running `warrant_review::review` against the live snapshot and
//! the ledger's usage summary (for the admin RPC, the console page and the metrics), and
//! attestations: an owner confirms an identity or an approval granted to it, or revokes it.
//! An attestation is a decision like any other: asked of the policies (`attest_identity`,
//! `attest_approval`, the identity as the resource), recorded in the ledger (where the usage
//! summary keeps the newest of each), and only then acted on: a revoke suspends the identity
//! or revokes the approval.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Read as _, Seek as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use warrant_control::Control;
use warrant_control::identities::IdentityUpdate;
use warrant_domain::clock::UnixMillis;
use warrant_domain::{Caller, CheckRequest, ContextValue, Decision, Effect, EntityRef};
use warrant_ledger::{ATTEST_APPROVAL, ATTEST_IDENTITY};
use warrant_review::{Finding, Inputs, ReviewSettings, Summary};

use crate::api::decider::Decider;
use crate::observability::metrics::Api;
use warrant_proto as proto;

/// Runs a review of the last `window_ms` now, handing each finding to `found`. Blocking: call
/// it off the async threads.
pub fn run(
    decider: &Decider,
    settings: &ReviewSettings,
    window_ms: i64,
    found: &mut dyn FnMut(Finding),
) -> Summary {
    let snapshot = decider.engine().snapshot();
    let now = decider.engine().now();
    let since = UnixMillis(now.0.saturating_sub(window_ms));
    let inputs = |usage: Option<&warrant_ledger::Usage>| -> Summary {
        let inputs = Inputs {
            facts: &snapshot.facts,
            links: snapshot.policies.links(),
            usage,
            now,
            since,
        };
        warrant_review::review(&inputs, settings, found)
    };
    let mut review = Some(inputs);
    let reviewed = decider
        .ledger()
        .and_then(|ledger| {
            ledger.usage(|usage| review.take().map(|mut review| review(Some(usage))))
        })
        .flatten();
    match (reviewed, review) {
        (Some(summary), _) => summary,
        // No ledger (or its summary is still being read at start): what was used is unknown.
        (None, Some(mut review)) => review(None),
        (None, None) => Summary::default(),
    }
}

/// What an attestation says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Confirm,
    Revoke,
}

impl Verdict {
    pub fn parse(text: &str) -> Option<Verdict> {
        match text {
            "confirm" => Some(Verdict::Confirm),
            "revoke" => Some(Verdict::Revoke),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Confirm => "confirm",
            Verdict::Revoke => "revoke",
        }
    }
}

/// What is attested: an identity, or an approval granted to one.
#[derive(Debug, Clone)]
pub enum Attested {
    Identity(EntityRef),
    Approval(String),
}

/// An attestation's outcome: its decision, and what was done.
#[derive(Debug, Clone)]
pub struct Attestation {
    pub decision: Decision,
    /// `confirmed`, `identity suspended`, `approval revoked`, or `refused`.
    pub outcome: &'static str,
}

/// Why an attestation could not be asked at all.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Failed(String),
}

/// `human` attests `attested` with `verdict`: asked, recorded, then acted on if allowed.
pub async fn attest(
    decider: &Decider,
    control: &Arc<Control>,
    human: EntityRef,
    attested: Attested,
    verdict: Verdict,
    note: Option<String>,
    caller: Caller,
) -> Result<Attestation, AttestError> {
    let facts = Arc::clone(&decider.engine().snapshot().facts);
    let mut context = BTreeMap::from([(
        "verdict".to_owned(),
        ContextValue::String(verdict.as_str().to_owned()),
    )]);
    if let Some(note) = note.filter(|n| !n.is_empty()) {
        context.insert("note".to_owned(), ContextValue::String(note));
    }
    let (action, identity) = match &attested {
        Attested::Identity(identity) => {
            if facts.identity_named(identity).is_none() {
                return Err(AttestError::Invalid {
                    field: "identity",
                    message: format!("{identity} is not an identity the facts hold"),
                });
            }
            (ATTEST_IDENTITY, identity.clone())
        }
        Attested::Approval(id) => {
            let Some(approval) = facts.approval(id) else {
                return Err(AttestError::Invalid {
                    field: "approval_id",
                    message: format!("no approval has the id {id:?}"),
                });
            };
            context.insert("approval_id".to_owned(), ContextValue::String(id.clone()));
            (ATTEST_APPROVAL, EntityRef::from_uid(&approval.subject))
        }
    };
    let request = CheckRequest {
        principal: human,
        action: action.to_owned(),
        resource: identity.clone(),
        context,
        ..CheckRequest::default()
    };
    let Some((request, decision)) = decider
        .decide_and_record(Api::Console, vec![request], caller)
        .await
        .pop()
    else {
        return Err(AttestError::Failed("no decision was made".into()));
    };
    if decision.effect != Effect::Allow {
        return Ok(Attestation {
            decision,
            outcome: "refused",
        });
    }
    let outcome = match (verdict, attested) {
        (Verdict::Confirm, _) => "confirmed",
        (Verdict::Revoke, Attested::Identity(identity)) => {
            let control = Arc::clone(control);
            tokio::task::spawn_blocking(move || {
                control.update_identity(
                    &identity,
                    IdentityUpdate {
                        status: Some("suspended".into()),
                        ..IdentityUpdate::default()
                    },
                )
            })
            .await
            .map_err(|e| AttestError::Failed(e.to_string()))?
            .map_err(|e| AttestError::Failed(e.to_string()))?;
            "identity suspended"
        }
        (Verdict::Revoke, Attested::Approval(id)) => {
            let control = Arc::clone(control);
            let reason = format!("revoked in an access review by {}", request.principal);
            tokio::task::spawn_blocking(move || control.revoke_approval(&id, &reason))
                .await
                .map_err(|e| AttestError::Failed(e.to_string()))?
                .map_err(|e| AttestError::Failed(e.to_string()))?;
            "approval revoked"
        }
    };
    tracing::info!(by = %request.principal, identity = %identity, action, outcome, decision_id = %decision.decision_id, "attested");
    Ok(Attestation { decision, outcome })
}

/// Counts the findings every `settings.interval()` for the metrics (`warrant_review_findings`).
pub async fn count_periodically(decider: Arc<Decider>, settings: ReviewSettings) {
    // The first count is made as soon as the usage summary is read, so that the gauges exist
    // from the start; then one every interval.
    let mut ticks = tokio::time::interval(settings.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Asked without its lock (a review may hold it for a while, and this is an async
        // thread): the summary is read at start, usually within seconds.
        while !decider.ledger().is_none_or(|ledger| ledger.usage_ready()) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let decider = Arc::clone(&decider);
        let settings = settings.clone();
        let counted = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let window = settings.dormant_ms();
            let summary = run(&decider, &settings, window, &mut |_| {});
            decider.metrics().review_counted(
                &summary.counts,
                started.elapsed(),
                decider.engine().now(),
            );
        })
        .await;
        if let Err(error) = counted {
            tracing::error!(%error, "the access review's count failed");
        }
    }
}

/// A review's JSON lines, streamed as they are found.
pub type ReviewStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<proto::ReviewChunk, tonic::Status>> + Send>,
>;

/// Chunks of a review stream are cut past this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// What the admin API's `Review` and `Attest` need.
pub struct Reviews {
    pub decider: Arc<Decider>,
    pub control: Arc<Control>,
    pub settings: ReviewSettings,
}

impl Reviews {
    /// `Review`: the findings of the last `since_seconds` (90 days for 0), then the summary.
    /// The review writes its lines to an unlinked temporary file, and they are sent from there
    /// once it is done: the usage summary is held only while the review computes, never while
    /// a slow caller reads, and a million findings take disk, not memory.
    pub fn stream(&self, since_seconds: u64) -> ReviewStream {
        let window_ms = match since_seconds {
            0 => 90 * 86_400_000,
            seconds => i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        let decider = Arc::clone(&self.decider);
        let settings = self.settings.clone();
        tokio::task::spawn_blocking(move || {
            let lines = match review_to_file(&decider, &settings, window_ms) {
                Ok(lines) => lines,
                Err(error) => {
                    tracing::error!(%error, "cannot write a review's findings to a temporary file");
                    let status = tonic::Status::internal(format!("the review failed: {error}"));
                    let _ = sender.blocking_send(Err(status));
                    return;
                }
            };
            let mut reader = std::io::BufReader::with_capacity(CHUNK_BYTES, lines);
            loop {
                let mut data = Vec::with_capacity(CHUNK_BYTES + 4096);
                // Whole lines: up to the chunk's size, then to the end of the line.
                let read = (&mut reader)
                    .take(CHUNK_BYTES as u64)
                    .read_to_end(&mut data)
                    .and_then(|_| reader.read_until(b'\n', &mut data));
                match read {
                    Ok(_) if data.is_empty() => return,
                    Ok(_) => {
                        // The caller hung up: nothing more is sent.
                        if sender
                            .blocking_send(Ok(proto::ReviewChunk { data }))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(error) => {
                        let status = tonic::Status::internal(format!("the review failed: {error}"));
                        let _ = sender.blocking_send(Err(status));
                        return;
                    }
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }

    /// `Attest`.
    pub async fn attest_call(
        &self,
        request: proto::AttestRequest,
    ) -> Result<proto::AttestResponse, tonic::Status> {
        let invalid = |field: &str, message: &str| {
            tonic::Status::invalid_argument(format!("{field}: {message}"))
        };
        let human = request
            .human
            .map(|h| EntityRef::new(h.r#type, h.id))
            .filter(|h| !h.id.is_empty())
            .ok_or_else(|| invalid("human", "required (a Human, as type and id)"))?;
        let verdict = Verdict::parse(&request.verdict)
            .ok_or_else(|| invalid("verdict", "must be \"confirm\" or \"revoke\""))?;
        if request.note.len() > 1024 {
            return Err(invalid("note", "at most 1024 bytes"));
        }
        let attested = match (request.identity, request.approval_id.is_empty()) {
            (Some(identity), true) => {
                Attested::Identity(EntityRef::new(identity.r#type, identity.id))
            }
            (None, false) => Attested::Approval(request.approval_id),
            _ => {
                return Err(invalid(
                    "identity",
                    "name either an identity or an approval_id, not both or neither",
                ));
            }
        };
        let caller = Caller {
            address: Some("admin API".into()),
            identity: None,
            identity_from: None,
        };
        let attestation = attest(
            &self.decider,
            &self.control,
            human,
            attested,
            verdict,
            Some(request.note),
            caller,
        )
        .await
        .map_err(|error| match error {
            AttestError::Invalid { .. } => tonic::Status::invalid_argument(error.to_string()),
            AttestError::Failed(_) => tonic::Status::internal(error.to_string()),
        })?;
        Ok(proto::AttestResponse {
            decision: attestation.decision.effect.as_str().to_owned(),
            decision_id: attestation.decision.decision_id.to_string(),
            reasons: attestation.decision.reasons.clone(),
            outcome: attestation.outcome.to_owned(),
        })
    }
}

/// Runs a review into an unlinked temporary file of JSON lines (the findings, then the
/// summary), rewound for reading.
fn review_to_file(
    decider: &Decider,
    settings: &ReviewSettings,
    window_ms: i64,
) -> std::io::Result<std::fs::File> {
    let mut file = std::io::BufWriter::with_capacity(CHUNK_BYTES, tempfile::tempfile()?);
    let mut line = Vec::with_capacity(1024);
    let mut failed = None;
    let summary = run(decider, settings, window_ms, &mut |finding| {
        line.clear();
        json_line(&mut line, "finding", &finding);
        if failed.is_none()
            && let Err(error) = file.write_all(&line)
        {
            failed = Some(error);
        }
    });
    if let Some(error) = failed {
        return Err(error);
    }
    line.clear();
    json_line(&mut line, "summary", &summary);
    file.write_all(&line)?;
    let mut file = file.into_inner().map_err(|e| e.into_error())?;
    file.seek(std::io::SeekFrom::Start(0))?;
    Ok(file)
}

/// Appends `{"<key>": value}` and a newline.
fn json_line(out: &mut Vec<u8>, key: &str, value: &impl serde::Serialize) {
    let Ok(value) = serde_json::to_value(value) else {
        return;
    };
    let line = serde_json::Map::from_iter([(key.to_owned(), value)]);
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}
