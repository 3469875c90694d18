//! The path every API shares once it has turned its wire format into engine requests: decide
//! with the engine, record each decision in the ledger before it is answered (a decision that
//! cannot be recorded is answered as a deny, and health turns NOT_SERVING), and count it.

use std::sync::Arc;

use crate::observability::metrics::{Api, Metrics};
use warrant_domain::{Effect, InvalidRequest};
use warrant_engine::engine::Engine;
use warrant_ledger::{Ledger, Record};

/// The gRPC health names Warrant reports: the server as a whole and the Check services.
pub const HEALTH_NAMES: [&str; 3] = [
    "",
    "warrant.v1.Authorizer",
    "envoy.service.auth.v3.Authorization",
];

/// How many recorded decisions a slow `TailDecisions` caller may fall behind before it misses
/// some.
const TAIL_BUFFER: usize = 1024;

pub struct Decider {
    engine: Arc<Engine>,
    ledger: Option<Arc<Ledger>>,
    health: tonic_health::server::HealthReporter,
    metrics: Arc<Metrics>,
    /// Every recorded decision, for live tails; costs nothing while nobody listens.
    tail: tokio::sync::broadcast::Sender<Arc<Record>>,
    /// One clone per live tail (held by its stream): whether anyone listens is an atomic load,
    /// not the broadcast channel's lock, on every Check.
    listeners: Arc<()>,
    /// Set when health turned NOT_SERVING, so that the reason is logged once.
    not_serving: std::sync::atomic::AtomicBool,
}

impl Decider {
    pub fn new(
        engine: Arc<Engine>,
        ledger: Option<Arc<Ledger>>,
        health: tonic_health::server::HealthReporter,
        metrics: Arc<Metrics>,
    ) -> Self {
        Decider {
            engine,
            ledger,
            health,
            metrics,
            tail: tokio::sync::broadcast::channel(TAIL_BUFFER).0,
            listeners: Arc::new(()),
            not_serving: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// On a replica of a shared database: health follows the facts' freshness, checked every
    /// `every`: NOT_SERVING while they are stale (every decision is then a deny), SERVING again
    /// once caught up, unless the ledger failed. Runs until the server stops.
    pub async fn follow_freshness(self: Arc<Self>, every: std::time::Duration) {
        if !self.engine.follows_a_fleet() {
            return;
        }
        let mut was_stale = false;
        loop {
            tokio::time::sleep(every).await;
            let stale = self.engine.facts_stale();
            if stale == was_stale {
                continue;
            }
            was_stale = stale;
            let status = match stale || self.not_serving.load(std::sync::atomic::Ordering::Relaxed)
            {
                true => tonic_health::ServingStatus::NotServing,
                false => tonic_health::ServingStatus::Serving,
            };
            match stale {
                true => tracing::error!(
                    "health is NOT_SERVING: the facts are stale (the shared database cannot be \
                     reached), so every decision is a deny (warrant:facts-stale)"
                ),
                false => tracing::info!("the facts are fresh again; health follows the ledger"),
            }
            for name in HEALTH_NAMES {
                self.health.set_service_status(name, status).await;
            }
        }
    }

    /// Decisions as they are recorded from now on.
    /// Keep the returned token as long as the receiver: it says someone listens.
    pub fn subscribe(&self) -> (tokio::sync::broadcast::Receiver<Arc<Record>>, Arc<()>) {
        (self.tail.subscribe(), Arc::clone(&self.listeners))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The ledger decisions (and searches) are recorded in, when it is on.
    pub fn ledger(&self) -> Option<&Arc<Ledger>> {
        self.ledger.as_ref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Decides one request; a malformed one is counted against `api`.
    pub fn decide(
        &self,
        api: Api,
        request: &warrant_domain::CheckRequest,
    ) -> Result<warrant_domain::Decision, InvalidRequest> {
        self.engine
            .check(request)
            .inspect_err(|_| self.metrics.invalid(api))
    }

    /// A refusal of `readable` for `why`, counted and ready to record (alone, or with a
    /// batch's decisions in one append): the request as its record keeps it, and the deny.
    pub fn refusal(
        &self,
        api: Api,
        readable: &warrant_domain::CheckRequest,
        why: &str,
        detail: Option<String>,
    ) -> (warrant_domain::CheckRequest, warrant_domain::Decision) {
        let refusal = self.engine.refusal(readable, why, detail);
        self.metrics.refused(api, why);
        (self.engine.limits().excerpt(readable), refusal)
    }

    /// Refuses `request` before (or instead of) deciding it: the deny is recorded like any
    /// decision (with what could be read of the request, cut to the limits) and counted, and
    /// its id is what the caller is told. `why` is one of Warrant's reasons; `detail` says what
    /// was wrong.
    pub async fn refuse(
        &self,
        api: Api,
        request: &warrant_domain::CheckRequest,
        why: &str,
        detail: Option<String>,
        caller: warrant_domain::Caller,
        trace_id: Option<String>,
    ) -> warrant_domain::Decision {
        let mut refused = [self.refusal(api, request, why, detail)];
        self.record(api, &mut refused, caller, trace_id).await;
        let [(_, decision)] = refused;
        decision
    }

    /// Decides each request (a malformed one is a recorded refusal naming its field), then
    /// records them all in one append: for Warrant's own questions (the console's rights, an
    /// attestation), whose answers are used only once on record.
    pub async fn decide_and_record(
        &self,
        api: Api,
        requests: Vec<warrant_domain::CheckRequest>,
        caller: warrant_domain::Caller,
    ) -> Vec<(warrant_domain::CheckRequest, warrant_domain::Decision)> {
        let mut decided: Vec<_> = requests
            .into_iter()
            .map(|request| match self.decide(api, &request) {
                Ok(decision) => (request, decision),
                Err(invalid) => self.refusal(
                    api,
                    &request,
                    warrant_domain::Reason::InvalidRequest.as_str(),
                    Some(format!("{}: {}", invalid.field, invalid.message)),
                ),
            })
            .collect();
        self.record(api, &mut decided, caller, None).await;
        decided
    }

    /// Records the decisions in the ledger before they are answered, then counts them. If the
    /// ledger cannot take them, they are answered as denies: nothing is allowed that is not on
    /// record.
    pub async fn record(
        &self,
        api: Api,
        decided: &mut [(warrant_domain::CheckRequest, warrant_domain::Decision)],
        caller: warrant_domain::Caller,
        trace_id: Option<String>,
    ) {
        if let Some(ledger) = &self.ledger {
            let records: Vec<Record> = decided
                .iter()
                .map(|(request, decision)| {
                    let mut record =
                        Record::of(decision, request, caller.clone(), ledger.mask_keys());
                    record.replica = ledger.replica().map(str::to_owned);
                    record.trace_id = trace_id.clone();
                    record
                })
                .collect();
            let appending = std::time::Instant::now();
            let appended = ledger.append(&records).await;
            if appended.is_ok() && Arc::strong_count(&self.listeners) > 1 {
                for record in records {
                    // No receiver left is fine: the tail has hung up.
                    let _ = self.tail.send(Arc::new(record));
                }
            }
            self.metrics.ledger_append(appending.elapsed());
            if let Err(error) = appended {
                if !self
                    .not_serving
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::error!(
                        %error,
                        "health is NOT_SERVING: decisions cannot be recorded, so every one is \
                         answered as a deny until the ledger is fixed and Warrant restarted"
                    );
                }
                // An orchestrator should route around a PDP that can only deny.
                for name in HEALTH_NAMES {
                    self.health
                        .set_service_status(name, tonic_health::ServingStatus::NotServing)
                        .await;
                }
                for (_, decision) in decided.iter_mut() {
                    // A use of a limited approval counts only if its decision is on record.
                    self.engine.release_use(decision);
                    decision.effect = Effect::Deny;
                    decision.reasons = vec![
                        warrant_domain::Reason::LedgerUnavailable
                            .as_str()
                            .to_owned(),
                    ];
                    // Not on record, so nothing can be asked on its strength.
                    decision.approval_required = None;
                }
            }
        }
        for (_, decision) in decided.iter() {
            self.metrics.decided(api, decision.effect);
            if decision
                .reasons
                .iter()
                .any(|r| r == warrant_domain::Reason::EvaluationError.as_str())
            {
                self.metrics.evaluation_error();
            }
            if let Some(shadow) = &decision.shadow {
                self.metrics.shadow(shadow.effect == decision.effect);
            }
        }
    }
}
