//! Runs the server: loads and validates policies and facts (with the live changes in the data
//! folder), builds the engine, and serves until shut down: `warrant.v1.Authorizer`, Envoy's
//! `envoy.service.auth.v3.Authorization`, health and reflection on the Check listener; `warrant.v1.Admin` and `warrant.v1.DecisionLog`, behind the
//! admin token, on the admin listener; metrics over HTTP. Watches the policy folder.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;

use crate::api::admin::AdminService;
use crate::api::auth::{BearerToken, admin_token};
use crate::api::authzen::{self, AuthZen};
use crate::api::decider::{Decider, HEALTH_NAMES};
use crate::api::decision_log::DecisionLogService;
use crate::api::edge::Edge;
use crate::api::envoy::ExtAuthzService;
use crate::api::grpc::AuthorizerService;
use crate::config::Config;
use crate::listeners::{self, serve_http};
use crate::observability::metrics::{Metrics, metrics_router};
use warrant_control::Control;
use warrant_domain::clock::SystemClock;
use warrant_engine::engine::Snapshot;
use warrant_ledger::Ledger;
use warrant_policy::PolicySnapshot;
use warrant_proto as proto;
use warrant_store::LiveStore;

/// The addresses the server bound (useful with port 0), and where the admin token is kept.
#[derive(Debug, Clone)]
pub struct Bound {
    pub check: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub authzen: SocketAddr,
    /// The web console's address (`.../console`); `None` when it is off.
    pub console: Option<String>,
    /// `None` when the token was configured rather than kept in the data folder.
    pub admin_token_file: Option<std::path::PathBuf>,
}

/// The file in the data folder that keeps this replica's name when none is configured.
const REPLICA_ID_FILE: &str = "replica-id";

/// This replica's name: the configured one, or the one made for the data folder the first time
/// it served (`replica-` and 8 random bytes, hex).
pub fn replica_id(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(id) = configured {
        return Ok(id.to_owned());
    }
    let path = data_dir.join(REPLICA_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(anyhow::anyhow!("{}: {error}", path.display())),
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
    let id = format!("replica-{}", hex::encode(bytes));
    warrant_files::private_dir(data_dir)?;
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot keep the replica id in {}", path.display()))?;
    Ok(id)
}

/// How long calls in flight may take to finish once shutdown begins.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Loads the policy directory: schema, policies (strictly validated) and facts.
pub fn load_snapshot(dir: &Path) -> anyhow::Result<Snapshot> {
    let policies = PolicySnapshot::load(dir)?;
    let facts = warrant_store::facts::load(dir, policies.schema())?;
    Ok(Snapshot {
        policies: Arc::new(policies),
        facts: Arc::new(facts),
    })
}

/// The metrics listener's routes, reading the control plane only through its stats.
fn metrics_routes(
    metrics: &Arc<Metrics>,
    control: &Arc<Control>,
    ledger: Option<Arc<Ledger>>,
) -> axum::Router {
    let stats_of = Arc::clone(control);
    metrics_router(
        Arc::clone(metrics),
        Arc::new(move || stats_of.stats()),
        Arc::clone(control.engine()),
        ledger,
    )
}

/// Health for the Check listener's services, SERVING: called once policies, facts and the ledger
/// are loaded (the decider turns it NOT_SERVING if the ledger fails).
async fn serving_health() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in HEALTH_NAMES {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    (health, health_service)
}

/// Binds the listeners and serves until `shutdown` completes. `on_bound` hears what was bound.
pub async fn serve(
    config: Config,
    on_bound: impl FnOnce(Bound),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let replica_id = replica_id(config.replica_id.as_deref(), &config.data_dir)?;
    let (control, credentials) = open_control(&config, &replica_id)?;
    let engine = Arc::clone(control.engine());
    let snapshot = engine.snapshot();
    // Kept alive while serving; dropping it stops the watching.
    let _watcher = match control.watch() {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, "cannot watch the policy folder; reload with ReloadPolicies");
            None
        }
    };
    log_loaded(&config, &control, &snapshot);
    let ledger = open_ledger(&config, &replica_id)?;
    if let Some(ledger) = &ledger {
        control.set_ledger(Arc::clone(ledger));
    }
    let (health, health_service) = serving_health().await;
    let metrics = metrics(&config, &control, &credentials)?;
    let (metrics_listener, metrics_bound) = bind(config.metrics_listen, "for metrics on").await?;
    let metrics_routes = metrics_routes(&metrics, &control, ledger.clone());
    let ledger_at_exit = ledger.clone();
    let decider = Arc::new(Decider::new(
        engine,
        ledger.clone(),
        health,
        Arc::clone(&metrics),
    ));
    tokio::spawn(Arc::clone(&decider).follow_freshness(std::time::Duration::from_millis(100)));
    tokio::spawn(crate::api::review::count_periodically(
        Arc::clone(&decider),
        config.review.clone(),
    ));
    let searcher = Arc::new(crate::api::search::Searcher::new(
        Arc::clone(&decider),
        crate::api::page_token::PageTokens::open(&config.data_dir)?,
        config.search,
    ));
    let (admin_listener, admin_bound) = bind(config.admin_listen, "for admin calls on").await?;
    let console = match &config.console {
        Some(settings) => Some(
            console(
                &config,
                settings,
                &control,
                &decider,
                &searcher,
                admin_bound,
            )
            .await?,
        ),
        None => None,
    };
    let (admin_router, admin_token_file) = admin_router(
        &config,
        &control,
        &credentials,
        &metrics,
        &decider,
        ledger.as_ref(),
        console.as_ref().map(|(_, _, invites)| Arc::clone(invites)),
    )?;
    let authzen = authzen_router(&config, &control, &decider, &searcher, ledger);
    let check_router = check_router(
        &config,
        &control,
        &decider,
        &searcher,
        tonic::transport::Server::builder().add_service(health_service),
    )?;
    tracing::info!(%admin_bound, token_file = ?admin_token_file, "serving warrant.v1.Admin");
    tracing::info!(%metrics_bound, "serving Prometheus metrics at /metrics");
    let (authzen_listener, authzen_bound) = bind(config.authzen_listen, "for AuthZEN on").await?;
    tracing::info!(%authzen_bound, token_required = config.authzen_token.is_some(), "serving the AuthZEN Authorization API");
    let (listener, bound) = bind(config.listen, "on").await?;
    tracing::info!(
        %bound,
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "serving warrant.v1.Authorizer"
    );
    on_bound(Bound {
        check: bound,
        admin: admin_bound,
        metrics: metrics_bound,
        authzen: authzen_bound,
        console: console.as_ref().map(|(_, url, _)| url.clone()),
        admin_token_file,
    });
    let counters = &metrics.listeners;
    let callers = &config.allowed_callers;
    // The HTTP listeners: AuthZEN, metrics and, when it is on, the console.
    let mut http = vec![
        HttpListener(
            "authzen",
            authzen_listener,
            authzen,
            Arc::clone(&counters.authzen),
            callers.authzen.clone(),
        ),
        HttpListener(
            "metrics",
            metrics_listener,
            metrics_routes,
            Arc::clone(&counters.metrics),
            callers.metrics.clone(),
        ),
    ];
    if let Some(((listener, routes), _, _)) = console {
        http.push(HttpListener(
            "console",
            listener,
            routes,
            Arc::clone(&counters.console),
            callers.console.clone(),
        ));
    }
    serve_listeners(
        &config,
        &metrics,
        credentials.as_ref(),
        (admin_listener, admin_router),
        http,
        (listener, check_router),
        shutdown,
    )
    .await?;
    shut_down(ledger_at_exit).await;
    Ok(())
}

/// An HTTP listener: its name, socket, routes, counters and the callers it serves.
struct HttpListener(
    &'static str,
    TcpListener,
    axum::Router,
    Arc<listeners::ListenerCounters>,
    crate::tls::AllowedCallers,
);

/// Serves every listener until `shutdown` completes, then gives calls in flight
/// `SHUTDOWN_GRACE` to finish.
async fn serve_listeners(
    config: &Config,
    metrics: &Arc<Metrics>,
    credentials: Option<&Arc<crate::credentials::Credentials>>,
    (admin_listener, admin_router): (TcpListener, tonic::transport::server::Router),
    http: Vec<HttpListener>,
    (listener, check_router): (TcpListener, tonic::transport::server::Router),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // On shutdown, calls in flight get `SHUTDOWN_GRACE` to finish; connections a client keeps
    // open (gateways do) do not hold the process past it. One token stops every listener.
    let stop = tokio_util::sync::CancellationToken::new();
    let on_shutdown = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_shutdown.cancel();
    });
    let limits = config.connections;
    let counters = &metrics.listeners;
    if let Some(credentials) = credentials {
        credentials.watch_files(
            std::time::Duration::from_millis(config.credentials.jwks_file_poll_ms),
            stop.clone(),
        );
    }
    let tls = server_tls(config, metrics, &stop)?;
    let security =
        |listener: &'static str, allowed: &crate::tls::AllowedCallers| listeners::Security {
            listener,
            tls: tls.clone(),
            allowed: allowed.clone(),
        };
    let callers = &config.allowed_callers;
    let mut tasks = vec![tokio::spawn(serve_admin(
        admin_router,
        listeners::incoming(listeners::accept(
            admin_listener,
            limits,
            Arc::clone(&counters.admin),
            security("admin", &callers.admin),
            stop.clone(),
        )),
        stop.clone(),
    ))];
    for HttpListener(name, listener, routes, counted, allowed) in http {
        tasks.push(tokio::spawn(serve_http(
            listener,
            routes,
            limits,
            counted,
            security(name, &allowed),
            stop.clone(),
            SHUTDOWN_GRACE,
        )));
    }
    // The server's time limit for a call is applied by `Edge` around each decision service,
    // which answers (and records) a time-out as Warrant's own refusal.
    let serving = check_router.serve_with_incoming_shutdown(
        listeners::incoming(listeners::accept(
            listener,
            limits,
            Arc::clone(&counters.check),
            security("check", &callers.check),
            stop.clone(),
        )),
        stop.clone().cancelled_owned(),
    );
    tokio::select! {
        served = serving => served.context("gRPC server failed")?,
        () = async { stop.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
    stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, task).await;
    }
    Ok(())
}

/// A listener on `address` and the address it bound; `what` says what for should it fail.
async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen {what} {address}"))?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Seals the ledger once the listeners have stopped.
async fn shut_down(ledger: Option<Arc<Ledger>>) {
    if let Some(ledger) = ledger {
        match ledger.seal().await {
            Ok(()) => tracing::info!("ledger sealed"),
            Err(error) => tracing::error!(%error, "could not seal the ledger at shutdown"),
        }
        // Saved now, the next start reads no record again to bring it up to date.
        let _ = tokio::task::spawn_blocking(move || ledger.save_usage()).await;
    }
    tracing::info!("shut down");
}

/// The admin listener's services: Admin and, with a ledger, DecisionLog, behind the admin token
/// (and where its file is, if Warrant made it). Keepalive pings: a `TailDecisions` stream on a
/// quiet server sends nothing for minutes, and must not be closed as idle.
fn admin_router(
    config: &Config,
    control: &Arc<Control>,
    credentials: &Issuers,
    metrics: &Arc<Metrics>,
    decider: &Arc<Decider>,
    ledger: Option<&Arc<Ledger>>,
    invites: Option<Arc<crate::api::console::Invites>>,
) -> anyhow::Result<(tonic::transport::server::Router, Option<std::path::PathBuf>)> {
    let (token, admin_token_file) = admin_token(
        config.admin_token.as_ref().map(|t| t.0.as_str()),
        &config.data_dir,
    )?;
    let bearer = BearerToken::new(token, Arc::clone(metrics));
    let page_tokens = crate::api::page_token::PageTokens::open(&config.data_dir)?;
    // Imports a crash cut short left their spool files behind.
    crate::api::import_spool::ImportSpool::clean(&config.data_dir)?;
    let admin = proto::admin_server::AdminServer::with_interceptor(
        AdminService::new(
            Arc::clone(control),
            credentials.clone(),
            Arc::clone(metrics),
            page_tokens.clone(),
            invites,
            Arc::new(crate::api::review::Reviews {
                decider: Arc::clone(decider),
                control: Arc::clone(control),
                settings: config.review.clone(),
            }),
            config.data_dir.clone(),
        ),
        bearer.clone(),
    );
    let decision_log = ledger.map(|ledger| {
        proto::decision_log_server::DecisionLogServer::with_interceptor(
            DecisionLogService::new(Arc::clone(ledger), Arc::clone(decider), page_tokens),
            bearer,
        )
    });
    let limits = config.connections;
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.http2_keepalive))
        .http2_keepalive_timeout(Some(limits.http2_keepalive))
        .add_service(admin)
        .add_optional_service(decision_log);
    Ok((router, admin_token_file))
}

/// The console's listener, bound (its address is in its sign-in links), its routes, and what
/// makes its sign-in links.
async fn console(
    config: &Config,
    settings: &crate::config::ConsoleConfig,
    control: &Arc<Control>,
    decider: &Arc<Decider>,
    searcher: &Arc<crate::api::search::Searcher>,
    admin_bound: SocketAddr,
) -> anyhow::Result<(
    (TcpListener, axum::Router),
    String,
    Arc<crate::api::console::Invites>,
)> {
    let (listener, bound) = bind(settings.listen, "for the console on").await?;
    let tls = config.tls.is_some();
    let scheme = if tls { "https" } else { "http" };
    let url = settings
        .settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{bound}/console"));
    let peers = match control.replication() {
        Some(_) => {
            let peers = fleet_peers(
                config,
                settings,
                url.clone(),
                format!("{scheme}://{admin_bound}"),
            )?;
            tokio::spawn(crate::api::console::fleet::announce(
                Arc::clone(control),
                peers.clone(),
            ));
            Some(peers)
        }
        None => None,
    };
    let (console, invites) = crate::api::console::Console::new(
        Arc::clone(control),
        Arc::clone(decider),
        Arc::clone(searcher),
        crate::api::console::Setup {
            settings: settings.settings.clone(),
            url: url.clone(),
            // Browsers keep `Secure` cookies over plaintext only on loopback, which is where
            // plaintext listeners are (or `plaintext_beyond_loopback` said otherwise).
            secure_cookies: tls || bound.ip().is_loopback(),
            peers,
            credentials: config.credentials.clone(),
            review: config.review.clone(),
        },
    )
    .map_err(|error| anyhow::anyhow!(error))?;
    tracing::info!(%bound, %url, "serving the web console; sign in with `warrant console invite Human::<you>`");
    Ok((
        (listener, crate::api::console::router(console)),
        url,
        invites,
    ))
}

/// In a fleet, how the console reads the other replicas' decisions: from their admin APIs, with
/// the admin token (which the fleet shares) and the listeners' own certificate.
fn fleet_peers(
    config: &Config,
    settings: &crate::config::ConsoleConfig,
    console_url: String,
    admin_url: String,
) -> anyhow::Result<crate::api::console::fleet::Peers> {
    let (token, _) = admin_token(
        config.admin_token.as_ref().map(|t| t.0.as_str()),
        &config.data_dir,
    )?;
    Ok(crate::api::console::fleet::Peers {
        token,
        ca: config.tls.as_ref().and_then(|tls| tls.client_ca.clone()),
        identity: config
            .tls
            .as_ref()
            .map(|tls| (tls.cert.clone(), tls.key.clone())),
        admin_url: settings.settings.admin_url.clone().unwrap_or(admin_url),
        console_url,
    })
}

/// The AuthZEN listener's routes. Its access request endpoints resolve denials in the ledger:
/// none without it.
fn authzen_router(
    config: &Config,
    control: &Arc<Control>,
    decider: &Arc<Decider>,
    searcher: &Arc<crate::api::search::Searcher>,
    ledger: Option<Arc<Ledger>>,
) -> axum::Router {
    let access_requests = ledger.map(|ledger| {
        authzen::access_request::AccessRequests::new(
            Arc::clone(control),
            ledger,
            config.authzen_access_request_window,
        )
    });
    authzen::router(
        Arc::new(AuthZen::new(
            Arc::clone(decider),
            Arc::clone(searcher),
            config.authzen_token.as_ref().map(|t| t.0.clone()),
            config.authzen_base_url.clone(),
            config.batch_max_items,
            config.authzen_answer_context,
            access_requests,
        )),
        config.max_message_bytes,
    )
}

/// The Check listener's services after health (in `router`): Authorizer and Envoy's
/// Authorization, each inside `Edge` (which applies the time limit and answers, and records, a
/// time-out as Warrant's own refusal), and reflection listing exactly those.
fn check_router(
    config: &Config,
    control: &Arc<Control>,
    decider: &Arc<Decider>,
    searcher: &Arc<crate::api::search::Searcher>,
    router: tonic::transport::server::Router,
) -> anyhow::Result<tonic::transport::server::Router> {
    let authorizer = Edge::authorizer(
        proto::authorizer_server::AuthorizerServer::new(AuthorizerService::new(
            Arc::clone(decider),
            Arc::clone(searcher),
            Arc::clone(control),
            config.batch_max_items,
        ))
        .max_decoding_message_size(config.max_message_bytes),
        Arc::clone(decider),
        config.request_timeout,
    );
    match config.ext_authz.route_count() {
        0 => tracing::info!(
            "ext_authz has no routes: every ext_authz Check is denied (warrant:no-route); \
             routes are set in the configuration file"
        ),
        routes => tracing::info!(routes, "serving envoy.service.auth.v3.Authorization"),
    }
    let ext_authz = Edge::ext_authz(
        AuthorizationServer::new(ExtAuthzService::new(
            Arc::clone(decider),
            Arc::new(config.ext_authz.clone()),
        ))
        .max_decoding_message_size(config.max_message_bytes),
        Arc::clone(decider),
        config.request_timeout,
    );
    let (reflection_v1, reflection_v1alpha) = reflection()?;

    Ok(router
        .add_service(authorizer)
        .add_service(ext_authz)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

/// The live store, a fleet's shared database if one is configured, the issuers, and the control
/// plane on them (caught up with the fleet and following it).
/// The issuers come back too: the server watches their files and reports their reads.
fn open_control(config: &Config, replica_id: &str) -> anyhow::Result<(Arc<Control>, Issuers)> {
    let store = Arc::new(LiveStore::open_with_cache(
        &config.data_dir,
        config.store_cache_bytes,
    )?);
    let replication = replication(config, replica_id)?;
    let credentials = credentials(config, replication.as_ref(), &store)?;
    let live = store.entity_count().unwrap_or(0);
    let mut control = Control::open(
        &config.policies,
        Arc::clone(&store),
        Arc::new(SystemClock),
        config.engine,
        config.rules,
        replication,
        credentials
            .clone()
            .map(|credentials| credentials as Arc<dyn warrant_domain::ports::CredentialVerifier>),
    )
    .map_err(|error| {
        // Facts that do not fit these policies, where the data folder holds live changes: those
        // were made under other policies (another example's, say).
        let unfit = error
            .chain()
            .any(|cause| cause.is::<warrant_facts::FactsError>());
        if live == 0 || !unfit {
            return error;
        }
        error.context(format!(
            "{} holds {live} live change(s) that these policies' schema must also fit; to \
             serve {} apart from them, give it a data folder of its own (--data-dir, or \
             data_dir in the settings file)",
            config.data_dir.display(),
            config.policies.display()
        ))
    })?;
    if let Some(dir) = &config.shadow_policies {
        control = control.with_shadow(dir)?;
    }
    let control = Arc::new(control);
    if control.replication().is_some() {
        let caught_up = control.catch_up()?;
        tracing::info!(
            changes = caught_up,
            "caught up with the shared database's change log"
        );
        control.follow();
    }
    Ok((control, credentials))
}

/// The issuers whose credentials requests may carry, if any are configured.
type Issuers = Option<Arc<crate::credentials::Credentials>>;

/// A replica's connection to the fleet's shared database, if one is configured.
fn replication(
    config: &Config,
    replica_id: &str,
) -> anyhow::Result<Option<warrant_control::replica::Replication>> {
    Ok(match &config.shared_store {
        Some(shared) => {
            let mut settings = shared.settings.clone();
            settings.replica = replica_id.to_owned();
            let postgres = warrant_fleet::Postgres::connect(settings).with_context(|| {
                format!(
                    "cannot use the shared database {}",
                    warrant_fleet::redacted_url(&shared.settings.url)
                )
            })?;
            tracing::info!(
                store = %warrant_fleet::redacted_url(&shared.settings.url),
                replica = %replica_id,
                database = postgres.database_id(),
                "a replica of the shared database"
            );
            Some(warrant_control::replica::Replication {
                postgres: Arc::new(postgres),
                freshness: Arc::new(warrant_fleet::Freshness::new(
                    i64::try_from(shared.max_staleness.as_millis()).unwrap_or(i64::MAX),
                )),
                poll: shared.poll,
                keep_changes: i64::try_from(shared.keep_changes).unwrap_or(i64::MAX),
                data_dir: config.data_dir.clone(),
                stats: Default::default(),
            })
        }
        None => None,
    })
}

/// The issuers whose credentials requests may carry, if any are configured. A fleet remembers
/// single-use tokens in the shared database: a replay through another replica is one too.
fn credentials(
    config: &Config,
    replication: Option<&warrant_control::replica::Replication>,
    store: &Arc<LiveStore>,
) -> anyhow::Result<Option<Arc<crate::credentials::Credentials>>> {
    if config.credentials.issuers.is_empty() && config.credentials.required_for.is_empty() {
        return Ok(None);
    }
    let credentials = crate::credentials::Credentials::new(&config.credentials)?;
    let seen: Arc<dyn warrant_domain::ports::SeenTokens> = match replication {
        Some(replication) => Arc::clone(&replication.postgres) as _,
        None => Arc::clone(store) as _,
    };
    credentials.remember_in(seen);
    tracing::info!(
        issuers = config.credentials.issuers.len(),
        required_for = ?config.credentials.required_for,
        "requests' credentials are verified"
    );
    Ok(Some(Arc::new(credentials)))
}

/// Says what was loaded, how long decisions hold and whether they are cached.
fn log_loaded(config: &Config, control: &Control, snapshot: &Snapshot) {
    tracing::info!(
        policies = snapshot.policies.policy_count(),
        policy_version = %snapshot.policies.version(),
        entities = snapshot.facts.entity_count(),
        approvals = snapshot.facts.approval_count(),
        facts_version = %snapshot.facts.version(),
        live_changes = control.status().live_changes,
        "policies and facts loaded from {}",
        config.policies.display()
    );
    if snapshot.policies.time_use().arithmetic {
        tracing::warn!(
            "a policy does arithmetic on datetimes (offset, toTime, ...): its decisions can change \
             at any moment, so none is cached and each is valid for one millisecond"
        );
    }
    match &config.engine.cache {
        Some(cache) => tracing::info!(
            max_entries = cache.max_entries,
            max_bytes = cache.max_bytes,
            allow_max_age_ms = config.engine.allow_max_age_ms,
            deny_max_age_ms = config.engine.deny_max_age_ms,
            "decision cache on"
        ),
        None => tracing::info!("decision cache off"),
    }
}

/// The ledger, unless it is off.
fn open_ledger(config: &Config, replica_id: &str) -> anyhow::Result<Option<Arc<Ledger>>> {
    Ok(match &config.ledger {
        Some(settings) => {
            let settings = warrant_ledger::LedgerSettings {
                replica: Some(replica_id.to_owned()),
                ..settings.clone()
            };
            Some(Arc::new(Ledger::open(&settings)?))
        }
        None => {
            tracing::warn!("the ledger is off: decisions leave no provenance record");
            None
        }
    })
}

/// The server's metrics, reporting the issuers' key sets and the approval request webhook
/// (started here, if one is configured).
fn metrics(
    config: &Config,
    control: &Control,
    credentials: &Issuers,
) -> anyhow::Result<Arc<Metrics>> {
    let metrics = Arc::new(Metrics::default());
    if let Some(credentials) = credentials {
        metrics.set_credentials(Arc::clone(credentials));
    }
    if let Some(target) = &config.approval_request_webhook {
        let webhook = start_webhook(target)?;
        control.set_webhook(Arc::clone(&webhook) as _);
        metrics.set_webhook(webhook);
    }
    Ok(metrics)
}

/// The webhook approval requests are announced to.
fn start_webhook(
    target: &crate::config::WebhookTarget,
) -> anyhow::Result<Arc<crate::webhook::Webhook>> {
    let mut url = crate::outbound::Url::new(&target.url, target.ca.as_deref())
        .map_err(|error| anyhow::anyhow!("approval_request_webhook: {error}"))?;
    if !target.allow_local {
        url = url.refusing_local().map_err(|error| {
            anyhow::anyhow!(
                "approval_request_webhook: {error} (approval_request_webhook_allow_local \
                 lets it)"
            )
        })?;
    }
    tracing::info!(
        url = url.as_str(),
        "approval requests are announced to a webhook"
    );
    Ok(crate::webhook::Webhook::start(url)?)
}

/// The listeners' TLS, watched for new files until `stop`, if TLS is configured.
fn server_tls(
    config: &Config,
    metrics: &Metrics,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<Arc<crate::tls::ServerTls>>> {
    Ok(match &config.tls {
        Some(files) => {
            let tls = crate::tls::ServerTls::load(files.clone())?;
            tls.watch(config.tls_reload, stop.clone());
            tracing::info!(cert = %files.cert.display(), mutual = tls.mutual(), "every listener serves TLS");
            metrics.set_tls(Arc::clone(&tls));
            Some(tls)
        }
        None => {
            tracing::warn!(
                "every listener serves plaintext: callers are not authenticated and requests are readable on the way"
            );
            None
        }
    })
}

/// Serves the admin listener's `router` on `incoming` until `stop`.
async fn serve_admin(
    router: tonic::transport::server::Router,
    incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<listeners::Stream>>,
    stop: tokio_util::sync::CancellationToken,
) {
    if let Err(error) = router
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await
    {
        tracing::error!(%error, "the admin listener failed");
    }
}

/// Reflection (v1, and v1alpha for the clients that still ask it) listing exactly what the
/// Check listener serves: Authorizer, Envoy's Authorization, health and reflection itself.
fn reflection() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .with_service_name("warrant.v1.Authorizer")
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        // Empty when the build could not find envoy-types' protos (it warned then).
        if proto::ENVOY_FILE_DESCRIPTOR_SET.is_empty() {
            builder
        } else {
            builder
                .register_encoded_file_descriptor_set(proto::ENVOY_FILE_DESCRIPTOR_SET)
                .with_service_name("envoy.service.auth.v3.Authorization")
        }
    };
    Ok((
        builder()
            .build_v1()
            .context("building the reflection service")?,
        builder()
            .build_v1alpha()
            .context("building the reflection service")?,
    ))
}
