//! `warrant.v1.DecisionLog` on the admin listener: a decision's record by id, a page of records
//! by filter, the signed head, and a live tail of decisions as they are recorded. Reads the
//! ledger; changes nothing.

use std::sync::Arc;

use crate::api::page_token::PageTokens;
use tonic::{Request, Response, Status};

use crate::api::decider::Decider;
use warrant_domain::{Effect, EntityRef};
use warrant_ledger::Ledger;
use warrant_proto as proto;
use warrant_proto::convert::{non_empty, unix_millis};

/// `warrant.v1.DecisionLog`: lookups in the provenance ledger.
pub struct DecisionLogService {
    ledger: Arc<Ledger>,
    decider: Arc<Decider>,
    page_tokens: PageTokens,
}

impl DecisionLogService {
    pub fn new(ledger: Arc<Ledger>, decider: Arc<Decider>, page_tokens: PageTokens) -> Self {
        DecisionLogService {
            ledger,
            decider,
            page_tokens,
        }
    }
}

type DecisionStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<proto::DecisionRecord, Status>> + Send>,
>;

fn decision_record(stored: warrant_ledger::StoredRecord) -> Result<proto::DecisionRecord, Status> {
    let record_json = warrant_ledger::canonical_json(&stored.record)
        .map_err(|e| Status::internal(format!("cannot serialise a record: {e}")))?;
    Ok(proto::DecisionRecord {
        seq: stored.seq,
        decision_id: stored.record.decision_id,
        time: stored.record.time,
        decision: stored.record.decision,
        record_json,
        hash: stored.hash,
    })
}

fn ledger_status(error: warrant_ledger::LedgerError) -> Status {
    tracing::error!(%error, "ledger lookup failed");
    Status::internal(error.to_string())
}

#[tonic::async_trait]
impl proto::decision_log_server::DecisionLog for DecisionLogService {
    type TailDecisionsStream = DecisionStream;

    async fn get_head(
        &self,
        _request: Request<proto::GetHeadRequest>,
    ) -> Result<Response<proto::LedgerHead>, Status> {
        let signed = self
            .ledger
            .head()
            .ok_or_else(|| Status::not_found("the ledger has no signed head yet"))?;
        let c = signed.checkpoint;
        Ok(Response::new(proto::LedgerHead {
            seq: c.seq,
            head: c.head,
            time: c.time,
            key_id: c.key_id,
            signature: signed.signature,
        }))
    }

    async fn tail_decisions(
        &self,
        request: Request<proto::TailDecisionsRequest>,
    ) -> Result<Response<Self::TailDecisionsStream>, Status> {
        use tokio_stream::StreamExt as _;
        let request = request.into_inner();
        let decision = decision_filter(request.decision)?;
        let filter = warrant_ledger::Filter {
            principal: request.principal.map(|p| EntityRef::new(p.r#type, p.id)),
            decision: decision.map(str::to_owned),
            ..warrant_ledger::Filter::default()
        };
        let action = non_empty(request.action);
        let (receiver, listening) = self.decider.subscribe();
        let stream =
            tokio_stream::wrappers::BroadcastStream::new(receiver).filter_map(move |item| {
                // Held as long as the stream: the decider builds tail records while it lives.
                let _listening = &listening;
                match item {
                    Ok(record) => (filter.matches(&record)
                        && action.as_ref().is_none_or(|a| &record.action == a))
                    .then(|| {
                        decision_record(warrant_ledger::StoredRecord {
                            seq: 0,
                            hash: String::new(),
                            record: (*record).clone(),
                        })
                    }),
                    Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(
                        missed,
                    )) => {
                        tracing::warn!(missed, "a decision tail fell behind and missed decisions");
                        None
                    }
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_decision(
        &self,
        request: Request<proto::GetDecisionRequest>,
    ) -> Result<Response<proto::DecisionRecord>, Status> {
        let id = request.into_inner().decision_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("decision_id: required"));
        }
        let ledger = Arc::clone(&self.ledger);
        let lookup = id.clone();
        let found = tokio::task::spawn_blocking(move || ledger.get(&lookup))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(ledger_status)?;
        match found {
            Some(stored) => decision_record(stored).map(Response::new),
            None => Err(Status::not_found(format!(
                "decision_id: no decision {id} in the ledger"
            ))),
        }
    }

    async fn list_decisions(
        &self,
        request: Request<proto::ListDecisionsRequest>,
    ) -> Result<Response<proto::ListDecisionsResponse>, Status> {
        let request = request.into_inner();
        // Each direction has tokens of its own: a token names a sequence number to go on from.
        let list = if request.newest_first {
            "decisions-newest"
        } else {
            "decisions"
        };
        let position = match self.page_tokens.read(list, &request.page_token)? {
            None => None,
            Some(position) => Some(position.parse::<u64>().map_err(|_| {
                Status::invalid_argument("page_token: not a token this server gave")
            })?),
        };
        let limit = match request.page_size {
            0 => 100,
            n if n > 1000 => {
                return Err(Status::invalid_argument("page_size: at most 1000"));
            }
            n => n as usize,
        };
        let filter = warrant_ledger::Filter {
            principal: request.principal.map(|p| EntityRef::new(p.r#type, p.id)),
            action: non_empty(request.action),
            resource: request.resource.map(|r| EntityRef::new(r.r#type, r.id)),
            reason: non_empty(request.reason),
            approval: non_empty(request.approval),
            decision: decision_filter(request.decision)?.map(str::to_owned),
            since: request.since.as_ref().map(unix_millis),
            until: request.until.as_ref().map(unix_millis),
            shadow_disagreed: false,
        };
        let ledger = Arc::clone(&self.ledger);
        let order = if request.newest_first {
            warrant_ledger::Order::NewestFirst { before: position }
        } else {
            warrant_ledger::Order::OldestFirst {
                after: position.unwrap_or(0),
            }
        };
        // One more than a page tells whether another page follows.
        let mut found = tokio::task::spawn_blocking(move || ledger.find(&filter, order, limit + 1))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(ledger_status)?;
        let more = found.len() > limit;
        found.truncate(limit);
        let next_page_token = match (more, found.last()) {
            (true, Some(last)) => self.page_tokens.issue(list, &last.seq.to_string()),
            _ => String::new(),
        };
        let records = found
            .into_iter()
            .map(decision_record)
            .collect::<Result<_, _>>()?;
        Ok(Response::new(proto::ListDecisionsResponse {
            records,
            next_page_token,
        }))
    }
}

/// A filter's `decision` as records spell it; `None` for any.
fn decision_filter(decision: i32) -> Result<Option<&'static str>, Status> {
    match proto::Decision::try_from(decision) {
        Ok(proto::Decision::Allow) => Ok(Some(Effect::Allow.as_str())),
        Ok(proto::Decision::Deny) => Ok(Some(Effect::Deny.as_str())),
        Ok(proto::Decision::Unspecified) => Ok(None),
        Err(_) => Err(Status::invalid_argument("decision: unknown value")),
    }
}
