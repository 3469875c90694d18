//! Metrics for SREs: counters and latency histograms kept with atomics on the hot path, and a
//! Prometheus text-format endpoint (`GET /metrics`) that reads them, with the cache's and the
//! ledger's own counters, at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::scrape::{self, family};
use crate::listeners::ListenerCounters;
use warrant_control::ControlStats;
use warrant_domain::{Effect, Reason};
use warrant_engine::engine::Engine;
use warrant_ledger::Ledger;

/// Upper bounds of the latency buckets, in seconds: from a cached decision's few microseconds
/// to past the longest call a client or `request_timeout_ms` allows.
const BUCKETS: [f64; 19] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram in Prometheus' cumulative form, its sum kept exactly (in nanoseconds).
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Writes the series; `labels` is `key="value",...` or empty.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let (bucket_labels, own_labels) = if labels.is_empty() {
            (String::new(), String::new())
        } else {
            (format!("{labels},"), format!("{{{labels}}}"))
        };
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{bucket_labels}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{bucket_labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{own_labels} {sum}");
        let _ = writeln!(out, "{name}_count{own_labels} {count}");
    }
}

/// The APIs decisions are asked through.
#[derive(Debug, Clone, Copy)]
pub enum Api {
    Check,
    BatchCheck,
    /// Envoy's `envoy.service.auth.v3.Authorization/Check`.
    ExtAuthz,
    /// AuthZEN's evaluation and evaluations endpoints.
    AuthZen,
    /// The console's own questions: may this signed-in person see or do this?
    Console,
}

impl Api {
    const ALL: [Api; 5] = [
        Api::Check,
        Api::BatchCheck,
        Api::ExtAuthz,
        Api::AuthZen,
        Api::Console,
    ];

    fn label(self) -> &'static str {
        match self {
            Api::Check => "check",
            Api::BatchCheck => "batch_check",
            Api::ExtAuthz => "ext_authz",
            Api::AuthZen => "authzen",
            Api::Console => "console",
        }
    }
}

#[derive(Default)]
struct ApiMetrics {
    allow: AtomicU64,
    deny: AtomicU64,
    invalid: AtomicU64,
    latency: Histogram,
    /// Calls started and not yet answered.
    in_flight: std::sync::atomic::AtomicI64,
    /// Calls answered, by gRPC status code (0-16; HTTP APIs count 0 for 200, 3 for 400, 16
    /// for 401).
    codes: [AtomicU64; 17],
}

/// Warrant's reasons for refusing a request before deciding it, each counted per API (created
/// at zero, so a rule sees the series before the first refusal).
const REFUSAL_REASONS: [&str; 14] = [
    Reason::InvalidRequest.as_str(),
    Reason::MalformedRequest.as_str(),
    Reason::TimedOut.as_str(),
    Reason::InternalError.as_str(),
    Reason::Unauthenticated.as_str(),
    Reason::UnknownSpiffeId.as_str(),
    Reason::BadPrincipalHeader.as_str(),
    Reason::NoRoute.as_str(),
    Reason::BadPath.as_str(),
    Reason::MalformedCheck.as_str(),
    Reason::NotDecidable.as_str(),
    Reason::McpMalformed.as_str(),
    Reason::McpMethodNotMapped.as_str(),
    "other",
];

/// The listeners, each with its connection counters.
#[derive(Default)]
pub struct Listeners {
    pub check: Arc<ListenerCounters>,
    pub admin: Arc<ListenerCounters>,
    pub authzen: Arc<ListenerCounters>,
    pub metrics: Arc<ListenerCounters>,
    pub console: Arc<ListenerCounters>,
}

impl Listeners {
    fn all(&self) -> [(&'static str, &ListenerCounters); 5] {
        [
            ("check", &self.check),
            ("admin", &self.admin),
            ("authzen", &self.authzen),
            ("metrics", &self.metrics),
            ("console", &self.console),
        ]
    }
}

/// The access review's last count (`api::review::count_periodically`).
struct ReviewCount {
    findings: BTreeMap<warrant_review::Kind, u64>,
    took: Duration,
    at_unix_seconds: u64,
}

/// Everything the api layer counts.
#[derive(Default)]
pub struct Metrics {
    /// Connections, by listener.
    pub listeners: Listeners,
    apis: [ApiMetrics; Api::ALL.len()],
    /// Refusals by API and reason (`REFUSAL_REASONS`).
    refusals: [[AtomicU64; REFUSAL_REASONS.len()]; Api::ALL.len()],
    /// Admin calls by method and gRPC status code (admin calls are rare: a lock is fine).
    admin_calls: Mutex<BTreeMap<(&'static str, i32), u64>>,
    admin_unauthenticated: AtomicU64,
    /// AuthZEN access request calls, by endpoint and HTTP status.
    access_request_calls: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Searches answered, by what they searched, transport and outcome.
    searches: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    search_latency: Histogram,
    /// Candidates searches examined, and the results they answered.
    search_examined: AtomicU64,
    search_results: AtomicU64,
    /// Search pages waiting for their turn to be evaluated (`search_max_in_flight`).
    searches_waiting: std::sync::atomic::AtomicI64,
    /// Time to get a batch of records accepted by the ledger (durable: on disk).
    ledger_append: Histogram,
    /// Decisions in which a policy failed to evaluate (each a deny).
    evaluation_errors: AtomicU64,
    /// Decisions the shadow policies agreed and disagreed with.
    shadow_agreed: AtomicU64,
    shadow_disagreed: AtomicU64,
    /// People signed in to the console now (sessions held, live or not yet swept).
    console_sessions: AtomicU64,
    /// The last count of the access review's findings: by kind, how long it took, and when.
    review: Mutex<Option<ReviewCount>>,
    /// The TLS configuration, when the listeners serve TLS: its reloads are counted there.
    tls: std::sync::OnceLock<Arc<crate::tls::ServerTls>>,
    /// The approval request webhook, when one is configured: its deliveries are counted there.
    webhook: std::sync::OnceLock<Arc<crate::webhook::Webhook>>,
    /// The issuers, when requests' credentials are verified: their key sets' reads are counted
    /// there.
    credentials: std::sync::OnceLock<Arc<crate::credentials::Credentials>>,
}

impl Metrics {
    /// Reports the deliveries of `webhook` from now on.
    pub fn set_webhook(&self, webhook: Arc<crate::webhook::Webhook>) {
        let _ = self.webhook.set(webhook);
    }

    /// Reports the key set reads of `credentials` from now on.
    pub fn set_credentials(&self, credentials: Arc<crate::credentials::Credentials>) {
        let _ = self.credentials.set(credentials);
    }

    /// Reports the reloads of `tls` from now on.
    pub fn set_tls(&self, tls: Arc<crate::tls::ServerTls>) {
        let _ = self.tls.set(tls);
    }

    fn api(&self, api: Api) -> &ApiMetrics {
        &self.apis[api as usize]
    }

    pub fn decided(&self, api: Api, effect: Effect) {
        let counter = match effect {
            Effect::Allow => &self.api(api).allow,
            Effect::Deny => &self.api(api).deny,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A call started (paired with `call_ended`): the in-flight gauge.
    pub fn call_started(&self, api: Api) {
        self.api(api).in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn call_ended(&self, api: Api) {
        self.api(api).in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// One call answered with `code`.
    pub fn answered(&self, api: Api, code: tonic::Code) {
        if let Some(counter) = self.api(api).codes.get(code as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn ledger_append(&self, elapsed: Duration) {
        self.ledger_append.observe(elapsed);
    }

    /// How many console sessions are held (after a sign-in or sign-out).
    pub fn console_sessions(&self, held: usize) {
        self.console_sessions
            .store(u64::try_from(held).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The access review's findings as just counted, and how long counting took.
    pub fn review_counted(
        &self,
        findings: &BTreeMap<warrant_review::Kind, u64>,
        took: Duration,
        at: warrant_domain::clock::UnixMillis,
    ) {
        let at_unix_seconds = u64::try_from(at.0 / 1000).unwrap_or(0);
        *self.review.lock().unwrap_or_else(|e| e.into_inner()) = Some(ReviewCount {
            findings: findings.clone(),
            took,
            at_unix_seconds,
        });
    }

    fn write_review(&self, out: &mut String) {
        let held = self.review.lock().unwrap_or_else(|e| e.into_inner());
        let Some(count) = held.as_ref() else { return };
        family(
            out,
            "warrant_review_findings",
            "gauge",
            "Access review findings by kind, as last counted (every [review] interval_seconds).",
        );
        for (kind, found) in &count.findings {
            let _ = writeln!(
                out,
                "warrant_review_findings{{kind=\"{}\"}} {found}",
                kind.as_str()
            );
        }
        family(
            out,
            "warrant_review_duration_seconds",
            "gauge",
            "How long the last count of the access review's findings took.",
        );
        let _ = writeln!(
            out,
            "warrant_review_duration_seconds {}",
            count.took.as_secs_f64()
        );
        family(
            out,
            "warrant_review_last_run_timestamp_seconds",
            "gauge",
            "When the access review's findings were last counted (Unix seconds).",
        );
        let _ = writeln!(
            out,
            "warrant_review_last_run_timestamp_seconds {}",
            count.at_unix_seconds
        );
    }

    /// Decisions the shadow policies agreed and disagreed with, since start.
    pub fn shadow_counts(&self) -> (u64, u64) {
        (
            self.shadow_agreed.load(Ordering::Relaxed),
            self.shadow_disagreed.load(Ordering::Relaxed),
        )
    }

    /// One decision that the shadow policies also judged.
    pub fn shadow(&self, agreed: bool) {
        let counter = if agreed {
            &self.shadow_agreed
        } else {
            &self.shadow_disagreed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One request refused before it was decided, for `why` (one of Warrant's reasons).
    pub fn refused(&self, api: Api, why: &str) {
        let index = REFUSAL_REASONS
            .iter()
            .position(|known| *known == why)
            .unwrap_or(REFUSAL_REASONS.len() - 1);
        self.refusals[api as usize][index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn evaluation_error(&self) {
        self.evaluation_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn invalid(&self, api: Api) {
        self.api(api).invalid.fetch_add(1, Ordering::Relaxed);
    }

    /// One call's time, from request to answer (a batch counts once).
    pub fn latency(&self, api: Api, elapsed: Duration) {
        self.api(api).latency.observe(elapsed);
    }

    pub fn admin_call(&self, method: &'static str, code: tonic::Code) {
        let mut calls = self
            .admin_calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *calls.entry((method, code as i32)).or_default() += 1;
    }

    pub fn access_request_call(&self, endpoint: &'static str, status: u16) {
        let mut calls = self
            .access_request_calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *calls.entry((endpoint, status)).or_default() += 1;
    }

    /// A search answered (`ok`) or refused (`invalid`, `unavailable`).
    pub fn searched(
        &self,
        kind: &'static str,
        transport: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.search_latency.observe(elapsed);
        let mut searches = self
            .searches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *searches.entry((kind, transport, outcome)).or_default() += 1;
    }

    /// A search page starts (`1`) or stops (`-1`) waiting for its turn.
    pub fn search_waiting(&self, change: i64) {
        self.searches_waiting.fetch_add(change, Ordering::Relaxed);
    }

    /// What an answered search page cost and gave.
    pub fn search_examined(&self, examined: usize, results: usize) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.search_examined
            .fetch_add(count(examined), Ordering::Relaxed);
        self.search_results
            .fetch_add(count(results), Ordering::Relaxed);
    }

    fn write_searches(&self, out: &mut String) {
        family(
            out,
            "warrant_searches_total",
            "counter",
            "Search pages asked for, by what was searched (subject, resource, action), transport \
             and outcome (ok, invalid, unavailable).",
        );
        let mut searches = self
            .searches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for kind in ["subject", "resource", "action"] {
            searches.entry((kind, "authzen", "ok")).or_default();
        }
        for ((kind, transport, outcome), count) in &searches {
            let _ = writeln!(
                out,
                "warrant_searches_total{{kind=\"{kind}\",transport=\"{transport}\",outcome=\"{outcome}\"}} {count}"
            );
        }
        family(
            out,
            "warrant_search_duration_seconds",
            "histogram",
            "Time to answer a search page, refusals included.",
        );
        self.search_latency
            .render(out, "warrant_search_duration_seconds", "");
        for (name, kind, help, value) in [
            (
                "warrant_search_candidates_examined_total",
                "counter",
                "Candidates search pages evaluated (each one a Check's evaluation, taking nothing).",
                self.search_examined.load(Ordering::Relaxed).to_string(),
            ),
            (
                "warrant_searches_waiting",
                "gauge",
                "Search pages waiting for their turn (at most search_max_in_flight are evaluated at once).",
                self.searches_waiting.load(Ordering::Relaxed).to_string(),
            ),
            (
                "warrant_search_results_total",
                "counter",
                "Results search pages answered.",
                self.search_results.load(Ordering::Relaxed).to_string(),
            ),
        ] {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }

    pub fn admin_unauthenticated(&self) {
        self.admin_unauthenticated.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of these metrics and of the engine's, the control
    /// plane's and the ledger's.
    pub fn render(
        &self,
        control: &ControlStats,
        engine: &Engine,
        ledger: Option<&Ledger>,
    ) -> String {
        let mut out = String::new();
        self.write_calls_answered(&mut out);
        scrape::write_cache(engine, &mut out);
        scrape::write_snapshot(engine, &mut out);
        scrape::write_fleet(control, &mut out);
        scrape::write_control(control, &mut out);
        self.write_admin(&mut out);
        self.write_searches(&mut out);
        self.write_listeners(&mut out);
        self.write_review(&mut out);
        if let Some(credentials) = self.credentials.get() {
            scrape::write_credentials(credentials, &mut out);
        }
        if let Some(ledger) = ledger {
            self.write_ledger(ledger, &mut out);
        }
        family(
            &mut out,
            "warrant_build_info",
            "gauge",
            "The running build: its version and the commit it was built from.",
        );
        let _ = writeln!(
            out,
            "warrant_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("WARRANT_COMMIT")
        );
        scrape::process_metrics(&mut out);
        out
    }

    /// Decisions, refusals and responses by API, and their latency.
    fn write_calls_answered(&self, out: &mut String) {
        family(
            out,
            "warrant_decisions_total",
            "counter",
            "Decisions given, by API and decision.",
        );
        for api in Api::ALL {
            let m = self.api(api);
            for (effect, counter) in [(Effect::Allow, &m.allow), (Effect::Deny, &m.deny)] {
                let _ = writeln!(
                    out,
                    "warrant_decisions_total{{api=\"{}\",decision=\"{}\"}} {}",
                    api.label(),
                    effect.label(),
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        family(
            out,
            "warrant_invalid_requests_total",
            "counter",
            "Requests refused as malformed (INVALID_ARGUMENT).",
        );
        for api in Api::ALL {
            let _ = writeln!(
                out,
                "warrant_invalid_requests_total{{api=\"{}\"}} {}",
                api.label(),
                self.api(api).invalid.load(Ordering::Relaxed)
            );
        }
        family(
            out,
            "warrant_refusals_total",
            "counter",
            "Requests refused before they could be decided (each recorded as a deny), by API and Warrant's reason.",
        );
        for api in Api::ALL {
            for (why, counter) in REFUSAL_REASONS.iter().zip(&self.refusals[api as usize]) {
                let _ = writeln!(
                    out,
                    "warrant_refusals_total{{api=\"{}\",reason=\"{why}\"}} {}",
                    api.label(),
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        family(
            out,
            "warrant_grpc_responses_total",
            "counter",
            "Calls answered, by API and gRPC status code (HTTP APIs: OK for 200, InvalidArgument for 400, Unauthenticated for 401).",
        );
        // Every code, zeros included: a rule sees a series before its first increment.
        for api in Api::ALL {
            for (code, counter) in self.api(api).codes.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "warrant_grpc_responses_total{{api=\"{}\",code=\"{:?}\"}} {}",
                    api.label(),
                    tonic::Code::from_i32(i32::try_from(code).unwrap_or(i32::MAX)),
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        family(
            out,
            "warrant_in_flight_calls",
            "gauge",
            "Calls started and not yet answered, by API.",
        );
        for api in Api::ALL {
            let _ = writeln!(
                out,
                "warrant_in_flight_calls{{api=\"{}\"}} {}",
                api.label(),
                self.api(api).in_flight.load(Ordering::Relaxed).max(0)
            );
        }
        family(
            out,
            "warrant_evaluation_errors_total",
            "counter",
            "Decisions in which a policy failed to evaluate (each answered as a deny).",
        );
        let _ = writeln!(
            out,
            "warrant_evaluation_errors_total {}",
            self.evaluation_errors.load(Ordering::Relaxed)
        );
        family(
            out,
            "warrant_shadow_decisions_total",
            "counter",
            "Decisions the shadow (candidate) policies also judged, by whether they agreed with the answer.",
        );
        let _ = writeln!(
            out,
            "warrant_shadow_decisions_total{{agreement=\"agree\"}} {}\nwarrant_shadow_decisions_total{{agreement=\"disagree\"}} {}",
            self.shadow_agreed.load(Ordering::Relaxed),
            self.shadow_disagreed.load(Ordering::Relaxed)
        );
        family(
            out,
            "warrant_console_sessions",
            "gauge",
            "Console sessions held (at most [console] max_sessions).",
        );
        let _ = writeln!(
            out,
            "warrant_console_sessions {}",
            self.console_sessions.load(Ordering::Relaxed)
        );
        family(
            out,
            "warrant_request_duration_seconds",
            "histogram",
            "Time from request to answer, by API.",
        );
        for api in Api::ALL {
            self.api(api).latency.render(
                out,
                "warrant_request_duration_seconds",
                &format!("api=\"{}\"", api.label()),
            );
        }
    }

    /// Admin and access-request calls.
    fn write_admin(&self, out: &mut String) {
        family(
            out,
            "warrant_admin_calls_total",
            "counter",
            "Authenticated admin calls, by method and gRPC status code.",
        );
        // Every method's OK and INVALID_ARGUMENT series exist from the start.
        let mut calls = self
            .admin_calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for method in warrant_proto::ADMIN_METHODS {
            for code in [tonic::Code::Ok, tonic::Code::InvalidArgument] {
                calls.entry((method, code as i32)).or_default();
            }
        }
        for ((method, code), count) in &calls {
            let _ = writeln!(
                out,
                "warrant_admin_calls_total{{method=\"{method}\",code=\"{:?}\"}} {count}",
                tonic::Code::from_i32(*code)
            );
        }
        family(
            out,
            "warrant_access_request_calls_total",
            "counter",
            "AuthZEN access request calls (submit, status), by HTTP status.",
        );
        let mut calls = self
            .access_request_calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for series in [("submit", 202), ("status", 200)] {
            calls.entry(series).or_default();
        }
        for ((endpoint, status), count) in &calls {
            let _ = writeln!(
                out,
                "warrant_access_request_calls_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {count}"
            );
        }
        family(
            out,
            "warrant_admin_unauthenticated_total",
            "counter",
            "Admin calls refused for a missing or wrong token.",
        );
        let _ = writeln!(
            out,
            "warrant_admin_unauthenticated_total {}",
            self.admin_unauthenticated.load(Ordering::Relaxed)
        );
    }

    /// Connections by listener, TLS and the webhook.
    fn write_listeners(&self, out: &mut String) {
        family(
            out,
            "warrant_connections_open",
            "gauge",
            "Connections open now, by listener (each listener holds at most max_connections).",
        );
        for (name, counters) in self.listeners.all() {
            let _ = writeln!(
                out,
                "warrant_connections_open{{listener=\"{name}\"}} {}",
                counters.open()
            );
        }
        for (metric, help, read) in [
            (
                "warrant_connections_accepted_total",
                "Connections accepted, by listener.",
                (|c: &ListenerCounters| c.accepted.load(Ordering::Relaxed))
                    as fn(&ListenerCounters) -> u64,
            ),
            (
                "warrant_connections_idle_closed_total",
                "Connections closed for being idle past the idle timeout, by listener.",
                |c| c.idle_closed.load(Ordering::Relaxed),
            ),
            (
                "warrant_connection_accept_errors_total",
                "Failed accepts (out of file descriptors, ...), each followed by a backoff, by listener.",
                |c| c.accept_errors.load(Ordering::Relaxed),
            ),
            (
                "warrant_connections_at_limit_total",
                "Times a listener held max_connections and stopped accepting until one closed.",
                |c| c.at_limit.load(Ordering::Relaxed),
            ),
            (
                "warrant_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out (no certificate, one the client CA did not issue, plaintext), by listener.",
                |c| c.tls_handshake_failures.load(Ordering::Relaxed),
            ),
            (
                "warrant_tls_callers_refused_total",
                "Callers with a valid certificate whose identity the listener's allow-list does not hold, by listener.",
                |c| c.callers_refused.load(Ordering::Relaxed),
            ),
        ] {
            family(out, metric, "counter", help);
            for (name, counters) in self.listeners.all() {
                let _ = writeln!(out, "{metric}{{listener=\"{name}\"}} {}", read(counters));
            }
        }
        if let Some(tls) = self.tls.get() {
            family(
                out,
                "warrant_tls_reloads_total",
                "counter",
                "Times the TLS files changed and were loaded (success) or could not be (failure; the last good ones keep serving).",
            );
            for (result, count) in [("success", &tls.reloads), ("failure", &tls.reload_failures)] {
                let _ = writeln!(
                    out,
                    "warrant_tls_reloads_total{{result=\"{result}\"}} {}",
                    count.load(Ordering::Relaxed)
                );
            }
        }
        if let Some(webhook) = self.webhook.get() {
            family(
                out,
                "warrant_webhook_notifications_total",
                "counter",
                "Approval request notifications to the webhook: delivered, failed after every retry, or dropped because the queue was full.",
            );
            for (result, count) in [
                ("delivered", &webhook.delivered),
                ("failed", &webhook.failed),
                ("dropped", &webhook.dropped),
            ] {
                let _ = writeln!(
                    out,
                    "warrant_webhook_notifications_total{{result=\"{result}\"}} {}",
                    count.load(Ordering::Relaxed)
                );
            }
        }
    }

    /// The ledger.
    fn write_ledger(&self, ledger: &Ledger, out: &mut String) {
        let stats = ledger.stats();
        family(
            out,
            "warrant_ledger_records_total",
            "counter",
            "Records written to the ledger.",
        );
        let _ = writeln!(out, "warrant_ledger_records_total {}", stats.written);
        family(
            out,
            "warrant_ledger_pending_records",
            "gauge",
            "Records accepted but not yet written: in async mode, what a crash now would lose.",
        );
        let _ = writeln!(out, "warrant_ledger_pending_records {}", stats.pending);
        family(
            out,
            "warrant_ledger_failed",
            "gauge",
            "1 once a ledger write has failed (every later Check is denied).",
        );
        let _ = writeln!(out, "warrant_ledger_failed {}", u8::from(stats.failed));
        family(
            out,
            "warrant_ledger_index_cache_bytes",
            "gauge",
            "Bytes of the decision log's search index held in memory (ledger_index_cache_bytes).",
        );
        let _ = writeln!(
            out,
            "warrant_ledger_index_cache_bytes {}",
            stats.index_cache_bytes
        );
        family(
            out,
            "warrant_ledger_usage_entries",
            "gauge",
            "Identities, approvals and policies the ledger's usage summary holds (at most ledger_usage_max_entries).",
        );
        let _ = writeln!(out, "warrant_ledger_usage_entries {}", stats.usage_entries);
        family(
            out,
            "warrant_ledger_usage_dropped_total",
            "counter",
            "Identities, approvals and policies the usage summary did not keep: past ledger_usage_max_entries.",
        );
        let _ = writeln!(
            out,
            "warrant_ledger_usage_dropped_total {}",
            stats.usage_dropped
        );
        family(
            out,
            "warrant_ledger_append_duration_seconds",
            "histogram",
            "Time for the ledger to accept a call's records (in durable mode: until on disk).",
        );
        self.ledger_append
            .render(out, "warrant_ledger_append_duration_seconds", "");
        family(
            out,
            "warrant_ledger_archived_segments_total",
            "counter",
            "Ledger segments moved to archive folders by retention since start.",
        );
        let _ = writeln!(
            out,
            "warrant_ledger_archived_segments_total {}",
            stats.archived_segments
        );
        let (used, free) = ledger.disk_usage();
        family(
            out,
            "warrant_ledger_bytes",
            "gauge",
            "Bytes the ledger's files take on disk.",
        );
        let _ = writeln!(out, "warrant_ledger_bytes {used}");
        if let Some(free) = free {
            family(
                out,
                "warrant_ledger_disk_free_bytes",
                "gauge",
                "Bytes free (for Warrant's user) on the file system that holds the ledger.",
            );
            let _ = writeln!(out, "warrant_ledger_disk_free_bytes {free}");
        }
    }
}

/// What the control plane shows at scrape time: a value made when Prometheus asks.
pub type ControlStatsSource = Arc<dyn Fn() -> ControlStats + Send + Sync>;

/// The metrics listener's routes: `GET /metrics`, `/healthz` and `/readyz`. The control plane is
/// read only through `control_stats`, the engine only for its own counters.
pub fn metrics_router(
    metrics: Arc<Metrics>,
    control_stats: ControlStatsSource,
    engine: Arc<Engine>,
    ledger: Option<Arc<Ledger>>,
) -> axum::Router {
    let ready_ledger = ledger.clone();
    let ready_engine = Arc::clone(&engine);
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics.render(&control_stats(), &engine, ledger.as_deref());
                async move { ([("content-type", "text/plain; version=0.0.4")], text) }
            }),
        )
        // Liveness: the process answers.
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        // Readiness: as the gRPC health service says. Policies are loaded (or the server would
        // not have started); the ledger must still be writable.
        .route(
            "/readyz",
            axum::routing::get(move || {
                let failed = ready_ledger.as_ref().is_some_and(|l| l.stats().failed);
                let stale = ready_engine.facts_stale();
                async move {
                    if failed {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: the ledger cannot be written, so every Check is denied\n",
                        )
                    } else if stale {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: the facts are stale (the shared database cannot be \
                             reached), so every Check is denied\n",
                        )
                    } else {
                        (axum::http::StatusCode::OK, "ready\n")
                    }
                }
            }),
        )
}
