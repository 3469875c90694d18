//! The load generator behind `warrant-bench`. Drives a running server over gRPC with a set number of
//! connections and requests in flight, closed-loop (as fast as answers come) or open-loop at a
//! target rate (latency counted from when each request was due, so a stalled server cannot hide
//! its queue: no coordinated omission), and reports throughput, an HDR latency histogram, errors
//! by status and the decision mix, as text or JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use envoy_types::pb::envoy::service::auth::v3 as envoy;
use warrant::cli::parse_entity;
use warrant_proto as proto;
use warrant_proto::authorizer_client::AuthorizerClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// warrant.v1.Authorizer/Check
    Check,
    /// warrant.v1.Authorizer/BatchCheck with --batch-size items
    Batch,
    /// warrant.v1.Authorizer/Ping: an empty call, the cost of gRPC itself
    Ping,
    /// envoy.service.auth.v3.Authorization/Check, shaped as Envoy sends it: --http-method and
    /// --path, the mTLS peer --peer, the approval in x-approval-id
    ExtAuthz,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The server to drive.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    #[arg(long, value_enum, default_value_t = Method::Check)]
    pub method: Method,
    /// HTTP/2 connections to open.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Requests in flight at once, spread over the connections.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds to measure for (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many measured requests instead of after --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Target requests per second (open loop). Without it, each worker sends as soon as its
    /// previous answer arrives (closed loop, to find saturation).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Fraction of requests that repeat one fixed request (cache hits once warm); the rest carry
    /// a unique value in the context key --unique-key, so each is a miss. 1 = all the same, 0 = all
    /// unique.
    #[arg(long, default_value_t = 1.0)]
    pub hit_ratio: f64,
    /// The context key that makes a request unique (must be a String the action accepts).
    #[arg(long, default_value = "justification")]
    pub unique_key: String,
    /// Each miss names a principal and a resource picked at random among this many: the
    /// number that ends --principal's and --resource's ids is replaced by one below it
    /// (`sa-0` becomes `sa-48213`), so that decisions read facts all over the store, not the
    /// same few. 0 keeps them fixed.
    #[arg(long, default_value_t = 0)]
    pub spread: u64,
    /// Items per BatchCheck.
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    #[arg(long, default_value = "ServiceAccount::deploy-bot")]
    pub principal: String,
    #[arg(long, default_value = "update")]
    pub action: String,
    #[arg(long, default_value = "Config::payments-api")]
    pub resource: String,
    /// The approval to present; empty for none.
    #[arg(long, default_value = "CHG-1042")]
    pub approval: String,
    /// A credential (JWT) every Check carries (the gRPC Check method only).
    #[arg(long, env = "WARRANT_CREDENTIAL", hide_env_values = true)]
    pub credential: Option<String>,
    /// ext-authz: the HTTP method of the request Envoy asks about.
    #[arg(long, default_value = "PUT")]
    pub http_method: String,
    /// ext-authz: its path (the server's route table maps it to action and resource).
    #[arg(long, default_value = "/configs/payments-api")]
    pub path: String,
    /// ext-authz: the mTLS peer's SPIFFE ID.
    #[arg(
        long,
        default_value = "spiffe://prod.example.com/ns/deploy/sa/deploy-bot"
    )]
    pub peer: String,
    /// ext-authz: the header that makes a request unique (the server must pass it to the
    /// context, as examples/envoy/warrant.toml does with x-justification).
    #[arg(long, default_value = "x-justification")]
    pub unique_header: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tls: warrant::cli::ClientTls,
    /// Change the facts at this rate while measuring: each change puts a new entity through the
    /// admin API (PutEntity), to see what changes do to Checks (the cache keeps what they did
    /// not touch) and what one costs.
    #[arg(long)]
    pub churn_per_second: Option<f64>,
    /// The admin API, for --churn-per-second.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub admin: String,
    /// The admin token, for --churn-per-second.
    #[arg(long, env = "WARRANT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// What each change puts, as Type::prefix: `Dataset::churn` puts Dataset::churn-1, -2, ...
    #[arg(long, default_value = "Dataset::churn")]
    pub churn_entity: String,
    /// The parent each put entity gets (none if empty).
    #[arg(long, default_value = "Scope::data")]
    pub churn_parent: String,
    /// Change the policies instead: each change links this template (LinkPolicy) with
    /// --churn-link-principal and the next --churn-entity as its resource, then unlinks it
    /// (UnlinkPolicy); both calls are measured.
    #[arg(long)]
    pub churn_link_template: Option<String>,
    /// The principal of each link made by --churn-link-template, as Type::id.
    #[arg(long, default_value = "ServiceAccount::sa-0")]
    pub churn_link_principal: String,
}

/// The facts changes applied during the measurement (--churn-per-second).
#[derive(Debug, Serialize)]
pub struct ChurnReport {
    pub changes: u64,
    pub changes_per_second: f64,
    /// Each PutEntity call, from sending it to its answer (durable and in force by then).
    pub latency_us: Latency,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub method: Method,
    /// The load generator's own runtime threads (it shares the machine with the server).
    pub worker_threads: usize,
    pub connections: usize,
    pub concurrency: usize,
    pub target_rate: Option<f64>,
    pub hit_ratio: f64,
    pub batch_size: Option<usize>,
    pub seconds: f64,
    /// Calls answered without error.
    pub requests: u64,
    pub requests_per_second: f64,
    /// Checks decided (BatchCheck counts each item).
    pub decisions_per_second: f64,
    pub latency_us: Latency,
    pub errors: BTreeMap<String, u64>,
    pub decisions: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnReport>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        Latency {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
        }
    }
}

/// What one worker saw.
struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    decisions: BTreeMap<String, u64>,
}

impl Tally {
    #[expect(clippy::expect_used, reason = "constant bounds the crate accepts")]
    fn new() -> Self {
        Tally {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
            decisions: BTreeMap::new(),
        }
    }

    #[expect(clippy::expect_used, reason = "every tally has the same bounds")]
    fn merge(&mut self, other: Tally) {
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.decisions {
            *self.decisions.entry(k).or_default() += v;
        }
    }
}

/// Shared by the workers: the schedule and the stop condition.
struct Plan {
    started: Instant,
    measure_from: Instant,
    stop_at: Instant,
    /// Requests handed out so far (warm-up included): the schedule index in open loop.
    issued: AtomicU64,
    /// Measured requests handed out, against --requests.
    measured: AtomicU64,
    max_measured: Option<u64>,
    interval: Option<Duration>,
    unique: AtomicU64,
}

impl Plan {
    /// The next request's due time, or `None` when the run is over.
    fn next(&self) -> Option<Instant> {
        let index = self.issued.fetch_add(1, Ordering::Relaxed);
        let due = match self.interval {
            Some(interval) => self.started + interval.mul_f64(index as f64),
            None => Instant::now(),
        };
        if due >= self.stop_at {
            return None;
        }
        if due >= self.measure_from
            && let Some(max) = self.max_measured
            && self.measured.fetch_add(1, Ordering::Relaxed) >= max
        {
            return None;
        }
        Some(due)
    }
}

/// Whether the next request is to be a cache miss.
fn is_miss(args: &BenchArgs, rng: &mut u64) -> bool {
    // xorshift: cheap, and good enough to pick hits and misses.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng % 1_000_000) as f64 / 1_000_000.0 >= args.hit_ratio
}

/// The fixed request, or (for a miss) the same with a unique value in the context.
fn check_request(
    args: &BenchArgs,
    base: &proto::CheckRequest,
    plan: &Plan,
    rng: &mut u64,
) -> proto::CheckRequest {
    let mut request = base.clone();
    if is_miss(args, rng) {
        let n = plan.unique.fetch_add(1, Ordering::Relaxed);
        let value = prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(format!("bench-{n}"))),
        };
        request.context = Some(prost_types::Struct {
            fields: [(args.unique_key.clone(), value)].into_iter().collect(),
        });
        if args.spread > 0 {
            for entity in [&mut request.principal, &mut request.resource]
                .into_iter()
                .flatten()
            {
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                let stem = entity.id.trim_end_matches(|c: char| c.is_ascii_digit());
                entity.id = format!("{stem}{}", *rng % args.spread);
            }
        }
    }
    request
}

/// The fixed ext_authz request, or (for a miss) the same with a unique header value.
fn ext_authz_request(
    args: &BenchArgs,
    base: &envoy::CheckRequest,
    plan: &Plan,
    rng: &mut u64,
) -> envoy::CheckRequest {
    let mut request = base.clone();
    if is_miss(args, rng)
        && let Some(http) = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
    {
        let n = plan.unique.fetch_add(1, Ordering::Relaxed);
        http.headers
            .insert(args.unique_header.clone(), format!("bench-{n}"));
    }
    request
}

fn ext_authz_base(args: &BenchArgs) -> envoy::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    let mut headers: std::collections::HashMap<String, String> = [
        (":authority", "bench.internal"),
        (":method", args.http_method.as_str()),
        (":path", args.path.as_str()),
        (":scheme", "https"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if !args.approval.is_empty() {
        headers.insert("x-approval-id".to_owned(), args.approval.clone());
    }
    envoy::CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: args.peer.clone(),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: args.http_method.clone(),
                    path: args.path.clone(),
                    host: "bench.internal".to_owned(),
                    headers,
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

fn decision_name(decision: i32) -> String {
    proto::Decision::try_from(decision)
        .map(|d| d.as_str_name().trim_start_matches("DECISION_").to_owned())
        .unwrap_or_else(|_| format!("unknown({decision})"))
}

/// One request in flight at a time. Closed loop: the next as soon as the last is answered. Open
/// loop: when the pacer says the next of this worker's requests is due.
async fn worker(
    args: Arc<BenchArgs>,
    base: Arc<proto::CheckRequest>,
    plan: Arc<Plan>,
    mut paced: Option<mpsc::UnboundedReceiver<Instant>>,
    channel: Channel,
    seed: u64,
) -> anyhow::Result<Tally> {
    let mut client = AuthorizerClient::new(channel.clone());
    let mut gateway = envoy::authorization_client::AuthorizationClient::new(channel);
    let envoy_base = ext_authz_base(&args);
    let mut tally = Tally::new();
    let mut rng = seed | 1;
    loop {
        let due = match &mut paced {
            None => plan.next(),
            Some(schedule) => schedule.recv().await,
        };
        let Some(due) = due else { break };
        let outcome = match args.method {
            Method::Ping => client.ping(proto::PingRequest {}).await.map(|_| Vec::new()),
            Method::ExtAuthz => gateway
                .check(ext_authz_request(&args, &envoy_base, &plan, &mut rng))
                .await
                .map(|r| {
                    // Envoy's reading: OK allows; anything else denies.
                    let allowed = r.into_inner().status.is_some_and(|s| s.code == 0);
                    vec![if allowed {
                        proto::Decision::Allow as i32
                    } else {
                        proto::Decision::Deny as i32
                    }]
                }),
            Method::Check => client
                .check(check_request(&args, &base, &plan, &mut rng))
                .await
                .map(|r| vec![r.into_inner().decision]),
            Method::Batch => {
                let checks = (0..args.batch_size)
                    .map(|_| check_request(&args, &base, &plan, &mut rng))
                    .collect();
                client
                    .batch_check(proto::BatchCheckRequest { checks })
                    .await
                    .map(|r| {
                        r.into_inner()
                            .results
                            .into_iter()
                            .map(|item| match item.result {
                                Some(proto::batch_check_result::Result::Response(r)) => r.decision,
                                _ => -1,
                            })
                            .collect()
                    })
            }
        };
        if due < plan.measure_from {
            continue;
        }
        // From when the request was due: a worker held up by slow answers charges the wait to
        // the server (no coordinated omission).
        let micros = due.elapsed().as_micros().clamp(1, 60_000_000) as u64;
        match outcome {
            Ok(decisions) => {
                tally.ok += 1;
                tally.latency.saturating_record(micros);
                for decision in decisions {
                    *tally.decisions.entry(decision_name(decision)).or_default() += 1;
                }
            }
            Err(status) => {
                *tally
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1
            }
        }
    }
    Ok(tally)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    if args.connections == 0 || args.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.hit_ratio) {
        bail!("--hit-ratio must be between 0 and 1");
    }
    if args.rate.is_some_and(|rate| rate <= 0.0) {
        bail!("--rate must be positive");
    }
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        // One endpoint per channel: each is its own HTTP/2 connection.
        let channel = args.tls.connect(&args.server).await?;
        channels.push(channel);
    }
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(args.warmup);
    let stop_at = match args.requests {
        Some(_) => measure_from + Duration::from_secs(3600),
        None => measure_from + Duration::from_secs_f64(args.duration),
    };
    let plan = Arc::new(Plan {
        started,
        measure_from,
        stop_at,
        issued: AtomicU64::new(0),
        measured: AtomicU64::new(0),
        max_measured: args.requests,
        interval: args.rate.map(|rate| Duration::from_secs_f64(1.0 / rate)),
        unique: AtomicU64::new(0),
    });
    let base = Arc::new(proto::CheckRequest {
        principal: Some(parse_entity(&args.principal, "principal")?),
        action: args.action.clone(),
        resource: Some(parse_entity(&args.resource, "resource")?),
        context: None,
        approval_id: args.approval.clone(),
        credential: args.credential.clone().unwrap_or_default(),
        ..proto::CheckRequest::default()
    });
    let args = Arc::new(args);
    // Open loop: a thread of its own releases each request at its due time, round robin over
    // the workers. (Tokio's timer ticks in milliseconds, which would send requests in bursts; a
    // thread's sleep is precise to tens of microseconds.)
    let mut schedules: Vec<Option<mpsc::UnboundedReceiver<Instant>>> = Vec::new();
    if plan.interval.is_some() {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..args.concurrency)
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        schedules.extend(receivers.into_iter().map(Some));
        let plan = Arc::clone(&plan);
        std::thread::spawn(move || {
            let mut index = 0usize;
            while let Some(due) = plan.next() {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if senders[index % senders.len()].send(due).is_err() {
                    break;
                }
                index += 1;
            }
        });
    } else {
        schedules.resize_with(args.concurrency, || None);
    }
    let workers: Vec<_> = schedules
        .into_iter()
        .enumerate()
        .map(|(i, paced)| {
            let channel = channels[i % channels.len()].clone();
            let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1);
            tokio::spawn(worker(
                Arc::clone(&args),
                Arc::clone(&base),
                Arc::clone(&plan),
                paced,
                channel,
                seed,
            ))
        })
        .collect();
    let churn = args
        .churn_per_second
        .map(|rate| tokio::spawn(churn(Arc::clone(&args), Arc::clone(&plan), rate)));
    let mut total = Tally::new();
    for handle in workers {
        total.merge(handle.await.context("a load worker failed")??);
    }
    let seconds = plan
        .measure_from
        .elapsed()
        .as_secs_f64()
        .min(match args.requests {
            Some(_) => f64::MAX,
            None => args.duration,
        });
    let decided: u64 = total.decisions.values().sum();
    let latency = &total.latency;
    Ok(Report {
        method: args.method,
        worker_threads: tokio::runtime::Handle::current().metrics().num_workers(),
        connections: args.connections,
        concurrency: args.concurrency,
        target_rate: args.rate,
        hit_ratio: args.hit_ratio,
        batch_size: (args.method == Method::Batch).then_some(args.batch_size),
        seconds,
        requests: total.ok,
        requests_per_second: total.ok as f64 / seconds,
        decisions_per_second: decided as f64 / seconds,
        latency_us: Latency::of(latency),
        errors: total.errors,
        decisions: total.decisions,
        churn: match churn {
            Some(handle) => Some(handle.await.context("the churn task failed")??),
            None => None,
        },
    })
}

/// The admin API at `url`, every call carrying `token`.
pub async fn admin_client(
    url: &str,
    token: &str,
) -> anyhow::Result<
    proto::admin_client::AdminClient<
        tonic::service::interceptor::InterceptedService<
            Channel,
            impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + use<>,
        >,
    >,
> {
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let channel = Channel::from_shared(url.to_owned())?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    Ok(proto::admin_client::AdminClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    ))
}

/// Puts a new entity (or, with --churn-link-template, links a template and unlinks it) through
/// the admin API every 1/rate seconds until the measurement ends.
async fn churn(args: Arc<BenchArgs>, plan: Arc<Plan>, rate: f64) -> anyhow::Result<ChurnReport> {
    if rate <= 0.0 {
        bail!("--churn-per-second must be positive");
    }
    let token = args
        .admin_token
        .clone()
        .context("--churn-per-second needs --admin-token (or WARRANT_ADMIN_TOKEN)")?;
    let mut admin = admin_client(&args.admin, &token).await?;
    let (type_name, prefix) = args
        .churn_entity
        .rsplit_once("::")
        .context("--churn-entity must be Type::prefix")?;
    let parents = if args.churn_parent.is_empty() {
        Vec::new()
    } else {
        vec![parse_entity(&args.churn_parent, "churn-parent")?]
    };
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = BTreeMap::new();
    let mut next = Instant::now();
    let mut number = 0u64;
    while Instant::now() < plan.stop_at {
        next += interval;
        number += 1;
        let request = proto::PutEntityRequest {
            entity: Some(proto::EntitySpec {
                entity: Some(proto::EntityRef {
                    r#type: type_name.to_owned(),
                    id: format!("{prefix}-{number}"),
                }),
                parents: parents.clone(),
                ..proto::EntitySpec::default()
            }),
            justification: "warrant-bench churn".to_owned(),
            ..proto::PutEntityRequest::default()
        };
        let mut outcomes = Vec::new();
        match &args.churn_link_template {
            None => {
                let sent = Instant::now();
                let answer = admin.put_entity(request).await.map(|_| ());
                outcomes.push((sent, sent.elapsed(), answer));
            }
            Some(template) => {
                let link_id = format!("churn-link-{number}");
                let link = proto::LinkPolicyRequest {
                    link: Some(proto::PolicyLinkSpec {
                        link_id: link_id.clone(),
                        template_id: template.clone(),
                        principal: Some(parse_entity(
                            &args.churn_link_principal,
                            "churn-link-principal",
                        )?),
                        resource: request.entity.and_then(|spec| spec.entity),
                    }),
                    justification: "warrant-bench churn".to_owned(),
                    ..proto::LinkPolicyRequest::default()
                };
                let sent = Instant::now();
                let answer = admin.link_policy(link).await.map(|_| ());
                outcomes.push((sent, sent.elapsed(), answer));
                let sent = Instant::now();
                let answer = admin
                    .unlink_policy(proto::UnlinkPolicyRequest { link_id })
                    .await
                    .map(|_| ());
                outcomes.push((sent, sent.elapsed(), answer));
            }
        }
        for (sent, took, answer) in outcomes {
            if sent < plan.measure_from {
                continue;
            }
            match answer {
                Ok(()) => latency.record(took.as_micros().clamp(1, 60_000_000) as u64)?,
                Err(status) => *errors.entry(format!("{:?}", status.code())).or_insert(0) += 1,
            }
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let seconds = args.duration;
    Ok(ChurnReport {
        changes: latency.len(),
        changes_per_second: latency.len() as f64 / seconds,
        latency_us: Latency::of(&latency),
        errors,
    })
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{:?} x {} connections, {} in flight, {} worker threads, {}, hit ratio {}{}\n",
            self.method,
            self.connections,
            self.concurrency,
            self.worker_threads,
            self.target_rate
                .map_or("closed loop".to_owned(), |rate| format!(
                    "open loop at {rate} req/s"
                )),
            self.hit_ratio,
            self.batch_size
                .map_or(String::new(), |n| format!(", {n} per batch")),
        );
        text.push_str(&format!(
            "  {} requests in {:.2} s: {:.0} req/s, {:.0} decisions/s\n",
            self.requests, self.seconds, self.requests_per_second, self.decisions_per_second
        ));
        let l = &self.latency_us;
        text.push_str(&format!(
            "  latency us: p50 {} p90 {} p99 {} p99.9 {} max {} mean {:.1}\n",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        ));
        text.push_str(&format!(
            "  decisions: {:?}\n  errors: {:?}\n",
            self.decisions, self.errors
        ));
        if let Some(churn) = &self.churn {
            let l = &churn.latency_us;
            text.push_str(&format!(
                "  admin changes: {} ({:.0}/s), latency us p50 {} p99 {} max {}, errors {:?}\n",
                churn.changes, churn.changes_per_second, l.p50, l.p99, l.max, churn.errors
            ));
        }
        text
    }
}
