//! Server settings. Every setting has a built-in default, may be set in one TOML file
//! (`--config`), and may be overridden by a flag or an environment variable: flag or variable
//! first, then the file, then the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::authzen::AnswerContext;
use crate::api::envoy::{ExtAuthz, ExtAuthzSettings};
use crate::listeners::ConnectionLimits;
use warrant_control::Rules;
use warrant_engine::cache::CacheSettings;
use warrant_engine::engine::EngineSettings;
use warrant_engine::limits::RequestLimits;
use warrant_ledger::{LedgerMode, LedgerSettings, Retention};

/// The settings as given, each optional. The same struct reads flags, variables and the file.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the gRPC API listens on [default: 127.0.0.1:50051]
    #[arg(long, env = "WARRANT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory with schema.cedarschema, *.cedar policies and entities.json [default: policies]
    #[arg(long, env = "WARRANT_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Most checks one BatchCheck may carry [default: 100]
    #[arg(long, env = "WARRANT_BATCH_MAX_ITEMS")]
    pub batch_max_items: Option<usize>,
    /// Most results one search page may ask for [default: 1000]
    #[arg(long, env = "WARRANT_SEARCH_MAX_PAGE")]
    pub search_max_page: Option<usize>,
    /// Most candidates one search page evaluates before it answers with a token to go on
    /// [default: 10000]
    #[arg(long, env = "WARRANT_SEARCH_MAX_EXAMINED")]
    pub search_max_examined: Option<usize>,
    /// Most search pages evaluated at once; more wait their turn (a page is CPU work beside the
    /// Checks) [default: 2]
    #[arg(long, env = "WARRANT_SEARCH_MAX_IN_FLIGHT")]
    pub search_max_in_flight: Option<usize>,
    /// Largest request message accepted, in bytes [default: 1048576]
    #[arg(long, env = "WARRANT_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Longest entity type, entity id, action name, approval id or request id, in bytes
    /// [default: 256]
    #[arg(long, env = "WARRANT_MAX_NAME_BYTES")]
    pub max_name_bytes: Option<usize>,
    /// Most bytes a request's context may hold (keys and strings; 8 for other values)
    /// [default: 65536]
    #[arg(long, env = "WARRANT_MAX_CONTEXT_BYTES")]
    pub max_context_bytes: Option<usize>,
    /// How deeply records and sets in a context may nest [default: 8]
    #[arg(long, env = "WARRANT_MAX_CONTEXT_DEPTH")]
    pub max_context_depth: Option<usize>,
    /// Most connections each listener holds open at once; past it, new ones wait to be accepted
    /// [default: 4096]
    #[arg(long, env = "WARRANT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// A connection with no bytes in either direction for this long is closed, in milliseconds
    /// [default: 300000]
    #[arg(long, env = "WARRANT_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// HTTP listeners (AuthZEN, metrics): time to read a request's headers, in milliseconds
    /// [default: 10000]
    #[arg(long, env = "WARRANT_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// HTTP/2 keepalive pings on the HTTP listeners, every this many milliseconds; a ping not
    /// answered within the same time closes the connection [default: 60000]
    #[arg(long, env = "WARRANT_HTTP2_KEEPALIVE_MS")]
    pub http2_keepalive_ms: Option<u64>,
    /// Server-side time limit for one call, in milliseconds; a shorter client deadline wins
    /// [default: 1000]
    #[arg(long, env = "WARRANT_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Longest a caller may rely on an allow (its valid_until, and its life in the cache), in
    /// milliseconds [default: 60000]
    #[arg(long, env = "WARRANT_DECISION_MAX_AGE_MS")]
    pub decision_max_age_ms: Option<u64>,
    /// The same for a deny, in milliseconds [default: 10000]
    #[arg(long, env = "WARRANT_DENY_MAX_AGE_MS")]
    pub deny_max_age_ms: Option<u64>,
    /// Turn the decision cache off [default: false]
    #[arg(long, env = "WARRANT_NO_CACHE", num_args = 0..=1, default_missing_value = "true")]
    pub no_cache: Option<bool>,
    /// Most decisions the cache holds [default: 100000]
    #[arg(long, env = "WARRANT_CACHE_MAX_ENTRIES")]
    pub cache_max_entries: Option<u64>,
    /// Most bytes (estimated) the cache holds [default: 67108864]
    #[arg(long, env = "WARRANT_CACHE_MAX_BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// Address of the Prometheus metrics endpoint (GET /metrics) [default: 127.0.0.1:9464]
    #[arg(long, env = "WARRANT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Folder for Warrant's own data: the ledger and its signing key [default: data]
    #[arg(long, env = "WARRANT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// How decisions are recorded: durable (answered once on disk), async (answered once
    /// queued), off [default: durable]
    #[arg(
        long,
        env = "WARRANT_LEDGER",
        value_parser = ledger_modes()
    )]
    pub ledger: Option<LedgerMode>,
    /// Sign a checkpoint after this many records [default: 1000]
    #[arg(long, env = "WARRANT_LEDGER_CHECKPOINT_RECORDS")]
    pub ledger_checkpoint_records: Option<u64>,
    /// ... or after this many milliseconds with unsigned records [default: 5000]
    #[arg(long, env = "WARRANT_LEDGER_CHECKPOINT_MS")]
    pub ledger_checkpoint_ms: Option<u64>,
    /// Start a new segment file past this size [default: 67108864]
    #[arg(long, env = "WARRANT_LEDGER_SEGMENT_BYTES")]
    pub ledger_segment_bytes: Option<u64>,
    /// The most bytes of the decision log's search index held in memory [default: 268435456]
    #[arg(long, env = "WARRANT_LEDGER_INDEX_CACHE_BYTES")]
    pub ledger_index_cache_bytes: Option<usize>,
    /// The most identities, approvals and policies the ledger's usage summary keeps (what an
    /// access review reads) [default: 10000000]
    #[arg(long, env = "WARRANT_LEDGER_USAGE_MAX_ENTRIES")]
    pub ledger_usage_max_entries: Option<usize>,
    /// Records waiting for the ledger writer, at most; in async mode, the most a crash can lose
    /// [default: 10000]
    #[arg(long, env = "WARRANT_LEDGER_QUEUE")]
    pub ledger_queue: Option<usize>,
    /// Context keys whose values the ledger masks, comma-separated
    /// [default: token,password,secret,authorization,api_key]
    #[arg(long, env = "WARRANT_LEDGER_MASK_KEYS", value_delimiter = ',')]
    pub ledger_mask_keys: Option<Vec<String>>,
    /// Retention: archive sealed ledger segments older than this many hours into
    /// ledger_archive_dir, hourly [default: keep everything]
    #[arg(long, env = "WARRANT_LEDGER_RETAIN_HOURS")]
    pub ledger_retain_hours: Option<u64>,
    /// Retention: archive the oldest sealed ledger segments while the ledger takes more than
    /// this many bytes [default: keep everything]
    #[arg(long, env = "WARRANT_LEDGER_RETAIN_BYTES")]
    pub ledger_retain_bytes: Option<u64>,
    /// Where retention archives go: a new folder per run (each verifies alone and joined)
    #[arg(long, env = "WARRANT_LEDGER_ARCHIVE_DIR")]
    pub ledger_archive_dir: Option<PathBuf>,
    /// The ledger's Ed25519 signing key (hex); created in the data folder when not given
    #[arg(long, env = "WARRANT_LEDGER_SIGNING_KEY")]
    pub ledger_signing_key: Option<PathBuf>,
    /// Address of the admin gRPC API (warrant.v1.Admin, warrant.v1.DecisionLog)
    /// [default: 127.0.0.1:50052]
    #[arg(long, env = "WARRANT_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// The bearer token admin calls must send; when not given, one is created in the data
    /// folder (admin.token, mode 0600). Set it by variable or file, not by flag, so it stays out
    /// of the process list.
    #[arg(skip)]
    pub admin_token: Option<Secret>,
    /// The longest an approval granted through the admin API may last, in hours [default: 720]
    #[arg(long, env = "WARRANT_APPROVAL_MAX_VALIDITY_HOURS")]
    pub approval_max_validity_hours: Option<u64>,
    /// How long an approval request waits for a human's decision before it expires, in
    /// seconds [default: 86400]
    #[arg(long, env = "WARRANT_APPROVAL_REQUEST_TTL_SECONDS")]
    pub approval_request_ttl_seconds: Option<u64>,
    /// The most approval requests one identity may have pending [default: 8]
    #[arg(long, env = "WARRANT_APPROVAL_REQUESTS_MAX_PENDING")]
    pub approval_requests_max_pending: Option<u64>,
    /// Whether an identity's own owner may approve for it (grants, approval requests and
    /// imports alike) [default: true]
    #[arg(long, env = "WARRANT_OWNER_MAY_APPROVE")]
    pub owner_may_approve: Option<bool>,
    /// Refuse a grant or a decision on an approval request whose approver is only named by the
    /// admin caller: the approver must present their own credential (a JWT of a
    /// [credentials] issuer whose principal is a Human) [default: false]
    #[arg(long, env = "WARRANT_REQUIRE_AUTHENTICATED_APPROVER")]
    pub require_authenticated_approver: Option<bool>,
    /// A URL told of every approval request filed and decided (JSON POST, retried): https://,
    /// or http:// to a loopback address (with approval_request_webhook_allow_local); off unless
    /// set
    #[arg(long, env = "WARRANT_APPROVAL_REQUEST_WEBHOOK")]
    pub approval_request_webhook: Option<String>,
    /// Let the webhook reach loopback and link-local addresses (127.0.0.0/8, ::1,
    /// 169.254.0.0/16 with cloud metadata services, fe80::/10), which it refuses otherwise,
    /// however its host name resolves [default: false]
    #[arg(long, env = "WARRANT_APPROVAL_REQUEST_WEBHOOK_ALLOW_LOCAL")]
    pub approval_request_webhook_allow_local: Option<bool>,
    /// CA certificates (PEM) the webhook's server certificate must chain to [default: the
    /// system's]
    #[arg(long, env = "WARRANT_APPROVAL_REQUEST_WEBHOOK_CA")]
    pub approval_request_webhook_ca: Option<PathBuf>,
    /// Most bytes one facts import (`warrant facts import`, ImportFacts) may send; an import is
    /// spooled in the data folder's imports/ while it arrives, not held in memory
    /// [default: 268435456]
    #[arg(long, env = "WARRANT_MAX_IMPORT_BYTES")]
    pub max_import_bytes: Option<u64>,
    /// About how many bytes of parsed entities the facts keep in memory; the rest are read from
    /// the facts store as decisions need them [default: 134217728]
    #[arg(long, env = "WARRANT_FACTS_CACHE_BYTES")]
    pub facts_cache_bytes: Option<u64>,
    /// About how many bytes of the data folder's facts database (`facts.redb`) are kept in memory
    /// [default: 268435456]
    #[arg(long, env = "WARRANT_STORE_CACHE_BYTES")]
    pub store_cache_bytes: Option<u64>,
    /// A candidate policy folder (schema and *.cedar) evaluated beside the active one on every
    /// request: it answers nothing, but what it would have decided is recorded and counted
    #[arg(long, env = "WARRANT_SHADOW_POLICIES")]
    pub shadow_policies: Option<PathBuf>,
    /// Envoy ext_authz: the route table and how requests map to decisions (file only).
    #[arg(skip)]
    pub ext_authz: Option<ExtAuthzSettings>,
    /// Address of the AuthZEN Authorization API (HTTP/1.1 and HTTP/2) [default: 127.0.0.1:8080]
    #[arg(long, env = "WARRANT_AUTHZEN_LISTEN")]
    pub authzen_listen: Option<SocketAddr>,
    /// Address of the web console for people (/console) [default: 127.0.0.1:8090]
    #[arg(long, env = "WARRANT_CONSOLE_LISTEN")]
    pub console_listen: Option<SocketAddr>,
    /// Turn the web console off [default: false]
    #[arg(long, env = "WARRANT_NO_CONSOLE", num_args = 0..=1, default_missing_value = "true")]
    pub no_console: Option<bool>,
    /// The console's sessions and sign-in links (file only: `[console]`).
    #[arg(skip)]
    pub console: Option<crate::api::console::ConsoleSettings>,
    /// Access reviews' periods (file only: `[review]`).
    #[arg(skip)]
    pub review: Option<warrant_review::ReviewSettings>,
    /// The PDP's URL in the AuthZEN metadata, e.g. https://pdp.example.com [default: from the
    /// request's Host header]
    #[arg(long, env = "WARRANT_AUTHZEN_BASE_URL")]
    pub authzen_base_url: Option<String>,
    /// The bearer token AuthZEN callers must send; none required when not set (variable or
    /// file only, like the admin token).
    #[arg(skip)]
    pub authzen_token: Option<Secret>,
    /// What an AuthZEN answer's context holds: full (decision_id and reasons) or decision_only
    /// (none; the ids are in the x-warrant-decision-id header) [default: full]
    #[arg(long, env = "WARRANT_AUTHZEN_ANSWER_CONTEXT", value_enum)]
    pub authzen_answer_context: Option<AnswerContext>,
    /// How long an AuthZEN denial that an approval would lift stays requestable (its
    /// `access_request.expires_at`), in seconds [default: 600]
    #[arg(long, env = "WARRANT_AUTHZEN_ACCESS_REQUEST_WINDOW_SECONDS")]
    pub authzen_access_request_window_seconds: Option<u64>,
    /// TLS on every listener: the server's certificate chain, PEM (with --tls-key)
    #[arg(long, env = "WARRANT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the server's private key, PEM
    #[arg(long, env = "WARRANT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: CA certificates, PEM; every caller must then present a certificate they
    /// issued, and its identity is recorded with each decision
    #[arg(long, env = "WARRANT_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for new contents, in milliseconds [default: 10000]
    #[arg(long, env = "WARRANT_TLS_RELOAD_MS")]
    pub tls_reload_ms: Option<u64>,
    /// Mutual TLS: the caller identities each listener serves (file only; the book's "Zero
    /// trust on the wire").
    #[arg(skip)]
    pub allowed_callers: Option<ListenerCallers>,
    /// Serve plaintext on addresses other than loopback (refused unless set) [default: false]
    #[arg(long, env = "WARRANT_PLAINTEXT_BEYOND_LOOPBACK")]
    pub plaintext_beyond_loopback: Option<bool>,
    /// The issuers whose credentials (JWTs) requests may carry (file only; the book's "Zero
    /// trust on the wire").
    #[arg(skip)]
    pub credentials: Option<crate::credentials::CredentialSettings>,
    /// A shared database for a fleet of replicas: postgres://USER@HOST:PORT/DB (add
    /// ?sslmode=require for TLS); the password comes from WARRANT_STORE_PASSWORD or
    /// store_password_file [default: the embedded store in the data folder]
    #[arg(long, env = "WARRANT_STORE")]
    pub store: Option<StoreUrl>,
    /// A file holding the shared database's password
    #[arg(long, env = "WARRANT_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
    /// The shared database's password (variable only, like the admin token).
    #[arg(skip)]
    pub store_password: Option<Secret>,
    /// CA certificates (PEM) the shared database's certificate must chain to [default: the
    /// system's]
    #[arg(long, env = "WARRANT_STORE_CA")]
    pub store_ca: Option<PathBuf>,
    /// Connections to the shared database each replica keeps at most [default: 8]
    #[arg(long, env = "WARRANT_STORE_POOL_SIZE")]
    pub store_pool_size: Option<usize>,
    /// The longest one call to the shared database may take, in milliseconds [default: 2000]
    #[arg(long, env = "WARRANT_STORE_TIMEOUT_MS")]
    pub store_timeout_ms: Option<u64>,
    /// How often a replica reads the change log when no notification woke it, in milliseconds
    /// [default: 500]
    #[arg(long, env = "WARRANT_STORE_POLL_MS")]
    pub store_poll_ms: Option<u64>,
    /// How long a replica cut off from the shared database keeps deciding from the facts it
    /// holds; past it, every decision is denied (warrant:facts-stale), in milliseconds
    /// [default: 5000]
    #[arg(long, env = "WARRANT_MAX_STALENESS_MS")]
    pub max_staleness_ms: Option<u64>,
    /// The most changes the shared database's change log keeps; a replica further behind takes
    /// the live records whole [default: 1000000]
    #[arg(long, env = "WARRANT_STORE_CHANGE_LOG_KEEP")]
    pub store_change_log_keep: Option<u64>,
    /// This replica's name in the change log, its ledger and its metrics [default: made once
    /// and kept in the data folder's replica-id]
    #[arg(long, env = "WARRANT_REPLICA_ID")]
    pub replica_id: Option<String>,
}

/// A database URL, which may hold a password: never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(pub String);

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(StoreUrl(text.to_owned()))
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&warrant_fleet::redacted_url(&self.0))
    }
}

/// How a replica follows a shared database.
#[derive(Debug, Clone)]
pub struct SharedStore {
    /// Everything but the replica's name, which `server` settles from the data folder.
    pub settings: warrant_fleet::StoreSettings,
    pub poll: Duration,
    pub max_staleness: Duration,
    pub keep_changes: u64,
}

/// For mutual TLS, the callers each listener serves (`tls::AllowedCallers`; empty: any caller
/// the client CA vouches for).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerCallers {
    #[serde(default)]
    pub check: crate::tls::AllowedCallers,
    #[serde(default)]
    pub admin: crate::tls::AllowedCallers,
    #[serde(default)]
    pub authzen: crate::tls::AllowedCallers,
    #[serde(default)]
    pub metrics: crate::tls::AllowedCallers,
    #[serde(default)]
    pub console: crate::tls::AllowedCallers,
}

/// A value that is never printed (the admin token).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The approval request webhook's URL, the CA file its server's certificate must chain to, and
/// whether it may reach loopback and link-local addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: String,
    pub ca: Option<PathBuf>,
    pub allow_local: bool,
}

/// The console's listener and settings.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    pub settings: crate::api::console::ConsoleSettings,
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where approval requests are announced, if anywhere.
    pub approval_request_webhook: Option<WebhookTarget>,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// `None`: use (or create) the token file in the data folder.
    pub admin_token: Option<Secret>,
    pub data_dir: PathBuf,
    /// How much of the data folder's database is kept in memory.
    pub store_cache_bytes: u64,
    pub rules: Rules,
    pub ext_authz: ExtAuthz,
    pub shadow_policies: Option<PathBuf>,
    pub authzen_listen: SocketAddr,
    /// The web console; `None` when it is off.
    pub console: Option<ConsoleConfig>,
    /// Access reviews' periods.
    pub review: warrant_review::ReviewSettings,
    pub authzen_base_url: Option<String>,
    pub authzen_token: Option<Secret>,
    pub authzen_answer_context: AnswerContext,
    /// How long a requestable AuthZEN denial can be submitted as an access request.
    pub authzen_access_request_window: Duration,
    pub metrics_listen: SocketAddr,
    pub policies: PathBuf,
    pub batch_max_items: usize,
    /// What a search page may ask for and cost.
    pub search: crate::api::search::SearchLimits,
    pub max_message_bytes: usize,
    pub request_timeout: Duration,
    pub engine: EngineSettings,
    /// What every listener holds to.
    pub connections: ConnectionLimits,
    /// `None` when the ledger is off.
    pub ledger: Option<LedgerSettings>,
    /// `None`: plaintext (loopback only, unless `plaintext_beyond_loopback`).
    pub tls: Option<crate::tls::TlsFiles>,
    pub tls_reload: Duration,
    pub allowed_callers: ListenerCallers,
    pub credentials: crate::credentials::CredentialSettings,
    /// `None`: the embedded store; the facts are this node's own.
    pub shared_store: Option<SharedStore>,
    /// `None`: made once and kept in the data folder.
    pub replica_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
    #[error(transparent)]
    ExtAuthz(#[from] crate::api::envoy::ExtAuthzError),
}

fn invalid(setting: &'static str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.to_owned(),
    }
}

impl Settings {
    /// The shared database's settings, when `store` names one.
    pub fn shared_store(&self) -> Result<Option<SharedStore>, ConfigError> {
        let Some(url) = self.store.as_ref().filter(|url| !url.0.is_empty()) else {
            return Ok(None);
        };
        if !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://")) {
            return Err(invalid(
                "store",
                "a postgres:// URL (the embedded store needs no setting)",
            ));
        }
        if let Err(error) = url.0.parse::<tokio_postgres::Config>() {
            return Err(ConfigError::Invalid {
                setting: "store",
                message: format!("not a database URL: {error}"),
            });
        }
        let password = match (&self.store_password, &self.store_password_file) {
            (Some(password), _) => Some(password.0.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|error| ConfigError::Invalid {
                        setting: "store_password_file",
                        message: format!("{}: {error}", path.display()),
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let poll = Duration::from_millis(self.store_poll_ms.unwrap_or(500));
        let max_staleness = Duration::from_millis(self.max_staleness_ms.unwrap_or(5_000));
        let timeout = Duration::from_millis(self.store_timeout_ms.unwrap_or(2_000));
        if poll >= max_staleness {
            return Err(invalid(
                "store_poll_ms",
                "must be shorter than max_staleness_ms, or an idle replica would go stale",
            ));
        }
        Ok(Some(SharedStore {
            settings: warrant_fleet::StoreSettings {
                url: url.0.clone(),
                password,
                ca: self.store_ca.clone(),
                pool_size: self.store_pool_size.unwrap_or(8),
                timeout,
                replica: String::new(),
            },
            poll,
            max_staleness,
            keep_changes: self.store_change_log_keep.unwrap_or(1_000_000),
        }))
    }

    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
    }

    /// These settings, with `under` filling in whatever these leave unset.
    pub fn over(self, under: Settings) -> Settings {
        Settings {
            listen: self.listen.or(under.listen),
            policies: self.policies.or(under.policies),
            batch_max_items: self.batch_max_items.or(under.batch_max_items),
            search_max_page: self.search_max_page.or(under.search_max_page),
            search_max_examined: self.search_max_examined.or(under.search_max_examined),
            search_max_in_flight: self.search_max_in_flight.or(under.search_max_in_flight),
            max_message_bytes: self.max_message_bytes.or(under.max_message_bytes),
            request_timeout_ms: self.request_timeout_ms.or(under.request_timeout_ms),
            max_name_bytes: self.max_name_bytes.or(under.max_name_bytes),
            max_context_bytes: self.max_context_bytes.or(under.max_context_bytes),
            max_context_depth: self.max_context_depth.or(under.max_context_depth),
            max_connections: self.max_connections.or(under.max_connections),
            idle_timeout_ms: self.idle_timeout_ms.or(under.idle_timeout_ms),
            header_read_timeout_ms: self.header_read_timeout_ms.or(under.header_read_timeout_ms),
            http2_keepalive_ms: self.http2_keepalive_ms.or(under.http2_keepalive_ms),
            decision_max_age_ms: self.decision_max_age_ms.or(under.decision_max_age_ms),
            deny_max_age_ms: self.deny_max_age_ms.or(under.deny_max_age_ms),
            no_cache: self.no_cache.or(under.no_cache),
            cache_max_entries: self.cache_max_entries.or(under.cache_max_entries),
            cache_max_bytes: self.cache_max_bytes.or(under.cache_max_bytes),
            metrics_listen: self.metrics_listen.or(under.metrics_listen),
            data_dir: self.data_dir.or(under.data_dir),
            ledger: self.ledger.or(under.ledger),
            ledger_checkpoint_records: self
                .ledger_checkpoint_records
                .or(under.ledger_checkpoint_records),
            ledger_checkpoint_ms: self.ledger_checkpoint_ms.or(under.ledger_checkpoint_ms),
            ledger_segment_bytes: self.ledger_segment_bytes.or(under.ledger_segment_bytes),
            ledger_index_cache_bytes: self
                .ledger_index_cache_bytes
                .or(under.ledger_index_cache_bytes),
            ledger_usage_max_entries: self
                .ledger_usage_max_entries
                .or(under.ledger_usage_max_entries),
            ledger_queue: self.ledger_queue.or(under.ledger_queue),
            ledger_mask_keys: self.ledger_mask_keys.or(under.ledger_mask_keys),
            ledger_signing_key: self.ledger_signing_key.or(under.ledger_signing_key),
            ledger_retain_hours: self.ledger_retain_hours.or(under.ledger_retain_hours),
            ledger_retain_bytes: self.ledger_retain_bytes.or(under.ledger_retain_bytes),
            ledger_archive_dir: self.ledger_archive_dir.or(under.ledger_archive_dir),
            admin_listen: self.admin_listen.or(under.admin_listen),
            admin_token: self.admin_token.or(under.admin_token),
            approval_max_validity_hours: self
                .approval_max_validity_hours
                .or(under.approval_max_validity_hours),
            approval_request_ttl_seconds: self
                .approval_request_ttl_seconds
                .or(under.approval_request_ttl_seconds),
            approval_requests_max_pending: self
                .approval_requests_max_pending
                .or(under.approval_requests_max_pending),
            owner_may_approve: self.owner_may_approve.or(under.owner_may_approve),
            require_authenticated_approver: self
                .require_authenticated_approver
                .or(under.require_authenticated_approver),
            approval_request_webhook: self
                .approval_request_webhook
                .or(under.approval_request_webhook),
            approval_request_webhook_ca: self
                .approval_request_webhook_ca
                .or(under.approval_request_webhook_ca),
            approval_request_webhook_allow_local: self
                .approval_request_webhook_allow_local
                .or(under.approval_request_webhook_allow_local),
            max_import_bytes: self.max_import_bytes.or(under.max_import_bytes),
            facts_cache_bytes: self.facts_cache_bytes.or(under.facts_cache_bytes),
            store_cache_bytes: self.store_cache_bytes.or(under.store_cache_bytes),
            ext_authz: self.ext_authz.or(under.ext_authz),
            shadow_policies: self.shadow_policies.or(under.shadow_policies),
            authzen_listen: self.authzen_listen.or(under.authzen_listen),
            console_listen: self.console_listen.or(under.console_listen),
            no_console: self.no_console.or(under.no_console),
            console: self.console.or(under.console),
            review: self.review.or(under.review),
            authzen_base_url: self.authzen_base_url.or(under.authzen_base_url),
            authzen_token: self.authzen_token.or(under.authzen_token),
            authzen_answer_context: self.authzen_answer_context.or(under.authzen_answer_context),
            authzen_access_request_window_seconds: self
                .authzen_access_request_window_seconds
                .or(under.authzen_access_request_window_seconds),
            tls_cert: self.tls_cert.or(under.tls_cert),
            tls_key: self.tls_key.or(under.tls_key),
            tls_client_ca: self.tls_client_ca.or(under.tls_client_ca),
            tls_reload_ms: self.tls_reload_ms.or(under.tls_reload_ms),
            allowed_callers: self.allowed_callers.or(under.allowed_callers),
            plaintext_beyond_loopback: self
                .plaintext_beyond_loopback
                .or(under.plaintext_beyond_loopback),
            credentials: self.credentials.or(under.credentials),
            store: self.store.or(under.store),
            store_password_file: self.store_password_file.or(under.store_password_file),
            store_password: self.store_password.or(under.store_password),
            store_ca: self.store_ca.or(under.store_ca),
            store_pool_size: self.store_pool_size.or(under.store_pool_size),
            store_timeout_ms: self.store_timeout_ms.or(under.store_timeout_ms),
            store_poll_ms: self.store_poll_ms.or(under.store_poll_ms),
            max_staleness_ms: self.max_staleness_ms.or(under.max_staleness_ms),
            store_change_log_keep: self.store_change_log_keep.or(under.store_change_log_keep),
            replica_id: self.replica_id.or(under.replica_id),
        }
    }

    /// Fills in the built-in defaults and checks the values.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let engine = self.engine_settings();
        let connections = self.connection_limits();
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data"));
        let ledger = self.ledger_settings(&data_dir)?;
        let max_validity_hours = self.approval_max_validity_hours.unwrap_or(720);
        let (tls, allowed_callers) = self.tls_settings()?;
        let ext_authz = ExtAuthz::new(&self.ext_authz.clone().unwrap_or_default())?;
        let shared_store = self.shared_store()?;
        self.check_replica_id()?;
        let rules = self.rules(max_validity_hours);
        let plaintext_beyond_loopback = self.plaintext_beyond_loopback.unwrap_or(false);
        let config = Config {
            shared_store,
            replica_id: self.replica_id.clone(),
            ledger,
            admin_listen: self
                .admin_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50052))),
            admin_token: self.admin_token.clone().filter(|t| !t.0.is_empty()),
            data_dir,
            store_cache_bytes: self
                .store_cache_bytes
                .unwrap_or(warrant_store::DEFAULT_CACHE_BYTES),
            ext_authz,
            shadow_policies: self.shadow_policies.clone(),
            authzen_listen: self
                .authzen_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            console: (!self.no_console.unwrap_or(false)).then(|| ConsoleConfig {
                listen: self
                    .console_listen
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8090))),
                settings: self.console.clone().unwrap_or_default(),
            }),
            review: self.review.clone().unwrap_or_default(),
            authzen_base_url: self.authzen_base_url.clone(),
            authzen_token: self.authzen_token.clone().filter(|t| !t.0.is_empty()),
            authzen_answer_context: self.authzen_answer_context.unwrap_or_default(),
            authzen_access_request_window: Duration::from_secs(
                self.authzen_access_request_window_seconds.unwrap_or(600),
            ),
            approval_request_webhook: self
                .approval_request_webhook
                .clone()
                .filter(|url| !url.is_empty())
                .map(|url| WebhookTarget {
                    url,
                    ca: self.approval_request_webhook_ca.clone(),
                    allow_local: self.approval_request_webhook_allow_local.unwrap_or(false),
                }),
            rules,
            metrics_listen: self
                .metrics_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9464))),
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051))),
            policies: self.policies.unwrap_or_else(|| PathBuf::from("policies")),
            batch_max_items: self.batch_max_items.unwrap_or(100),
            search: {
                let defaults = crate::api::search::SearchLimits::default();
                crate::api::search::SearchLimits {
                    default_page: defaults.default_page,
                    max_page: self.search_max_page.unwrap_or(defaults.max_page),
                    max_examined: self.search_max_examined.unwrap_or(defaults.max_examined),
                    max_in_flight: self.search_max_in_flight.unwrap_or(defaults.max_in_flight),
                }
            },
            max_message_bytes: self.max_message_bytes.unwrap_or(1024 * 1024),
            request_timeout: Duration::from_millis(self.request_timeout_ms.unwrap_or(1_000)),
            engine,
            connections,
            tls,
            tls_reload: Duration::from_millis(self.tls_reload_ms.unwrap_or(10_000)),
            allowed_callers,
            credentials: self.credentials.clone().unwrap_or_default(),
        };
        if config.tls.is_none() && !plaintext_beyond_loopback {
            check_loopback(&config)?;
        }
        check_positive(&config, max_validity_hours)?;
        Ok(config)
    }

    /// The engine's settings: how long answers hold, the cache, the request limits.
    fn engine_settings(&self) -> EngineSettings {
        let defaults = EngineSettings::default();
        let cache_defaults = CacheSettings::default();
        let limit_defaults = RequestLimits::default();
        let millis = |value: Option<u64>, default: i64| {
            value.map_or(default, |v| v.min(i64::MAX as u64) as i64)
        };
        EngineSettings {
            allow_max_age_ms: millis(self.decision_max_age_ms, defaults.allow_max_age_ms),
            deny_max_age_ms: millis(self.deny_max_age_ms, defaults.deny_max_age_ms),
            cache: (!self.no_cache.unwrap_or(false)).then(|| CacheSettings {
                max_entries: self.cache_max_entries.unwrap_or(cache_defaults.max_entries),
                max_bytes: self.cache_max_bytes.unwrap_or(cache_defaults.max_bytes),
            }),
            limits: RequestLimits {
                max_name_bytes: self.max_name_bytes.unwrap_or(limit_defaults.max_name_bytes),
                max_context_bytes: self
                    .max_context_bytes
                    .unwrap_or(limit_defaults.max_context_bytes),
                max_context_depth: self
                    .max_context_depth
                    .unwrap_or(limit_defaults.max_context_depth),
            },
            approval_max_validity_ms: self
                .approval_max_validity_hours
                .map_or(defaults.approval_max_validity_ms, |hours| {
                    hours.saturating_mul(3_600_000).min(i64::MAX as u64) as i64
                }),
        }
    }

    /// The bounds every listener keeps on its connections.
    fn connection_limits(&self) -> ConnectionLimits {
        let connection_defaults = ConnectionLimits::default();
        let ms =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
        ConnectionLimits {
            max_connections: self
                .max_connections
                .unwrap_or(connection_defaults.max_connections),
            idle_timeout: ms(self.idle_timeout_ms, connection_defaults.idle_timeout),
            header_read_timeout: ms(
                self.header_read_timeout_ms,
                connection_defaults.header_read_timeout,
            ),
            http2_keepalive: ms(self.http2_keepalive_ms, connection_defaults.http2_keepalive),
        }
    }

    /// The ledger's settings (`None` with the ledger off), in `data_dir`.
    fn ledger_settings(&self, data_dir: &Path) -> Result<Option<LedgerSettings>, ConfigError> {
        let mode = self.ledger.unwrap_or(LedgerMode::Durable);
        let limited = self.ledger_retain_hours.is_some() || self.ledger_retain_bytes.is_some();
        let retention = match (&self.ledger_archive_dir, limited) {
            (Some(archive_dir), true) => Some(Retention {
                archive_dir: archive_dir.clone(),
                max_age: self
                    .ledger_retain_hours
                    .map(|hours| Duration::from_secs(hours.saturating_mul(3600))),
                max_bytes: self.ledger_retain_bytes,
            }),
            (None, true) => {
                return Err(ConfigError::Invalid {
                    setting: "ledger_archive_dir",
                    message: "required with ledger_retain_hours or ledger_retain_bytes: \
                              Warrant archives old segments, it never deletes them"
                        .to_owned(),
                });
            }
            (_, false) => None,
        };
        let ledger = (mode != LedgerMode::Off).then(|| LedgerSettings {
            replica: None,
            dir: data_dir.join("ledger"),
            mode,
            checkpoint_records: self.ledger_checkpoint_records.unwrap_or(1_000),
            checkpoint_interval: Duration::from_millis(self.ledger_checkpoint_ms.unwrap_or(5_000)),
            segment_bytes: self.ledger_segment_bytes.unwrap_or(64 * 1024 * 1024),
            index_cache_bytes: self.ledger_index_cache_bytes.unwrap_or(256 * 1024 * 1024),
            usage_max_entries: self.ledger_usage_max_entries.unwrap_or(10_000_000),
            queue: self.ledger_queue.unwrap_or(10_000),
            mask_keys: self.ledger_mask_keys.clone().unwrap_or_else(|| {
                ["token", "password", "secret", "authorization", "api_key"]
                    .map(str::to_owned)
                    .to_vec()
            }),
            signing_key: self.ledger_signing_key.clone(),
            retention,
        });
        Ok(ledger)
    }

    /// The listeners' certificate and key (if any) and the callers they accept.
    fn tls_settings(&self) -> Result<(Option<crate::tls::TlsFiles>, ListenerCallers), ConfigError> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls_key", "required with tls_cert")),
            (None, Some(_)) => return Err(invalid("tls_cert", "required with tls_key")),
        };
        if tls.is_none() && self.tls_client_ca.is_some() {
            return Err(invalid("tls_client_ca", "needs tls_cert and tls_key"));
        }
        let allowed_callers = self.allowed_callers.clone().unwrap_or_default();
        if self.tls_client_ca.is_none() && allowed_callers != ListenerCallers::default() {
            return Err(invalid(
                "allowed_callers",
                "needs tls_client_ca: callers are known by their certificates",
            ));
        }
        Ok((tls, allowed_callers))
    }

    /// A replica id, if set, is 1 to 64 letters, digits, '-', '_' or '.'.
    fn check_replica_id(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.replica_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(invalid(
                "replica_id",
                "1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(())
    }

    /// The control plane's rules for grants, imports and approval requests.
    fn rules(&self, max_validity_hours: u64) -> Rules {
        Rules {
            approval_max_validity_ms: max_validity_hours
                .saturating_mul(3_600_000)
                .min(i64::MAX as u64) as i64,
            max_import_bytes: self
                .max_import_bytes
                .unwrap_or(Rules::default().max_import_bytes),
            approval_request_ttl_ms: self
                .approval_request_ttl_seconds
                .map_or(Rules::default().approval_request_ttl_ms, |seconds| {
                    seconds.saturating_mul(1000).min(i64::MAX as u64) as i64
                }),
            max_pending_requests_per_identity: self
                .approval_requests_max_pending
                .map_or(Rules::default().max_pending_requests_per_identity, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
            owner_may_approve: self
                .owner_may_approve
                .unwrap_or(Rules::default().owner_may_approve),
            require_authenticated_approver: self
                .require_authenticated_approver
                .unwrap_or(Rules::default().require_authenticated_approver),
            facts_cache_bytes: self
                .facts_cache_bytes
                .unwrap_or(Rules::default().facts_cache_bytes),
        }
    }
}

/// Every listener is on a loopback address (what serving without TLS needs).
fn check_loopback(config: &Config) -> Result<(), ConfigError> {
    let listeners = [
        ("listen", config.listen),
        ("admin_listen", config.admin_listen),
        ("authzen_listen", config.authzen_listen),
        ("metrics_listen", config.metrics_listen),
    ]
    .into_iter()
    .chain(
        config
            .console
            .as_ref()
            .map(|console| ("console_listen", console.listen)),
    );
    for (setting, address) in listeners {
        if !address.ip().is_loopback() {
            return Err(invalid(
                setting,
                &format!(
                    "{address} is not a loopback address: serve it with TLS (tls_cert, \
                     tls_key) or set plaintext_beyond_loopback"
                ),
            ));
        }
    }
    Ok(())
}

/// Every count, size and duration is greater than zero.
fn check_positive(config: &Config, max_validity_hours: u64) -> Result<(), ConfigError> {
    let (limits, connections, rules) = (&config.engine.limits, &config.connections, &config.rules);
    let cache = config.engine.cache;
    let positive = [
        ("batch_max_items", config.batch_max_items as u128),
        ("search_max_page", config.search.max_page as u128),
        ("search_max_examined", config.search.max_examined as u128),
        ("search_max_in_flight", config.search.max_in_flight as u128),
        ("max_message_bytes", config.max_message_bytes as u128),
        ("request_timeout_ms", config.request_timeout.as_millis()),
        ("tls_reload_ms", config.tls_reload.as_millis()),
        ("max_name_bytes", limits.max_name_bytes as u128),
        ("max_context_bytes", limits.max_context_bytes as u128),
        ("max_context_depth", limits.max_context_depth as u128),
        ("max_connections", connections.max_connections as u128),
        ("idle_timeout_ms", connections.idle_timeout.as_millis()),
        (
            "header_read_timeout_ms",
            connections.header_read_timeout.as_millis(),
        ),
        (
            "http2_keepalive_ms",
            connections.http2_keepalive.as_millis(),
        ),
        (
            "decision_max_age_ms",
            config.engine.allow_max_age_ms as u128,
        ),
        ("deny_max_age_ms", config.engine.deny_max_age_ms as u128),
        (
            "approval_max_validity_hours",
            u128::from(max_validity_hours),
        ),
        ("max_import_bytes", u128::from(rules.max_import_bytes)),
        ("facts_cache_bytes", u128::from(rules.facts_cache_bytes)),
        ("store_cache_bytes", u128::from(config.store_cache_bytes)),
        (
            "approval_request_ttl_seconds",
            rules.approval_request_ttl_ms as u128,
        ),
        (
            "approval_requests_max_pending",
            rules.max_pending_requests_per_identity as u128,
        ),
        (
            "authzen_access_request_window_seconds",
            config.authzen_access_request_window.as_secs() as u128,
        ),
        (
            "cache_max_entries",
            cache.map_or(1, |c| c.max_entries) as u128,
        ),
        ("cache_max_bytes", cache.map_or(1, |c| c.max_bytes) as u128),
        (
            "ledger_usage_max_entries",
            config.ledger.as_ref().map_or(1, |l| l.usage_max_entries) as u128,
        ),
    ];
    for (setting, value) in positive {
        if value == 0 {
            return Err(ConfigError::Invalid {
                setting,
                message: "must be greater than zero".to_owned(),
            });
        }
    }
    Ok(())
}

/// `--ledger`: the ledger's modes, each with what it promises.
fn ledger_modes() -> impl clap::builder::TypedValueParser<Value = LedgerMode> {
    use clap::builder::{PossibleValue, TypedValueParser as _};
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("durable").help(
            "A Check returns only once its record is on disk (fsync, shared by concurrent Checks)",
        ),
        PossibleValue::new("async").help(
            "A Check returns once its record is queued; a crash can lose the queue and the batch \
             being written (at most `ledger_queue` records)",
        ),
        PossibleValue::new("off").help("No ledger at all"),
    ])
    .try_map(|mode: String| mode.parse::<LedgerMode>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: Settings = toml::from_str(
            "listen = \"127.0.0.1:7000\"\nbatch_max_items = 5\npolicies = \"/etc/warrant\"\n",
        )
        .unwrap();
        let flags = Settings {
            batch_max_items: Some(9),
            ..Settings::default()
        };
        let config = flags.over(file).resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.batch_max_items, 9);
        assert_eq!(config.policies, PathBuf::from("/etc/warrant"));
        assert_eq!(config.max_message_bytes, 1024 * 1024);
        assert!(config.engine.cache.is_some());
        let no_cache: Settings = toml::from_str("no_cache = true").unwrap();
        assert!(no_cache.resolve().unwrap().engine.cache.is_none());
    }

    /// Every default as `resolve` puts it in force, written as the book and `--help` state it.
    fn defaults_in_force() -> Vec<(&'static str, String)> {
        use clap::ValueEnum as _;
        let config = Settings::default().resolve().unwrap();
        let ledger = config.ledger.clone().unwrap();
        let cache = config.engine.cache.unwrap();
        let limits = &config.engine.limits;
        let connections = &config.connections;
        let ms = |d: Duration| d.as_millis().to_string();
        let fleet = Settings {
            store: Some(StoreUrl("postgres://warrant@db.example/warrant".to_owned())),
            ..Settings::default()
        }
        .resolve()
        .unwrap()
        .shared_store
        .unwrap();
        vec![
            ("store_pool_size", fleet.settings.pool_size.to_string()),
            ("store_timeout_ms", ms(fleet.settings.timeout)),
            ("store_poll_ms", ms(fleet.poll)),
            ("max_staleness_ms", ms(fleet.max_staleness)),
            ("store_change_log_keep", fleet.keep_changes.to_string()),
            ("listen", config.listen.to_string()),
            ("policies", config.policies.display().to_string()),
            ("batch_max_items", config.batch_max_items.to_string()),
            ("search_max_page", config.search.max_page.to_string()),
            (
                "search_max_examined",
                config.search.max_examined.to_string(),
            ),
            (
                "search_max_in_flight",
                config.search.max_in_flight.to_string(),
            ),
            ("max_message_bytes", config.max_message_bytes.to_string()),
            ("request_timeout_ms", ms(config.request_timeout)),
            ("max_name_bytes", limits.max_name_bytes.to_string()),
            ("max_context_bytes", limits.max_context_bytes.to_string()),
            ("max_context_depth", limits.max_context_depth.to_string()),
            ("max_connections", connections.max_connections.to_string()),
            ("idle_timeout_ms", ms(connections.idle_timeout)),
            (
                "header_read_timeout_ms",
                ms(connections.header_read_timeout),
            ),
            ("http2_keepalive_ms", ms(connections.http2_keepalive)),
            ("tls_reload_ms", ms(config.tls_reload)),
            ("plaintext_beyond_loopback", false.to_string()),
            (
                "decision_max_age_ms",
                config.engine.allow_max_age_ms.to_string(),
            ),
            ("deny_max_age_ms", config.engine.deny_max_age_ms.to_string()),
            ("no_cache", false.to_string()),
            ("cache_max_entries", cache.max_entries.to_string()),
            ("cache_max_bytes", cache.max_bytes.to_string()),
            ("metrics_listen", config.metrics_listen.to_string()),
            ("data_dir", config.data_dir.display().to_string()),
            ("admin_listen", config.admin_listen.to_string()),
            ("authzen_listen", config.authzen_listen.to_string()),
            (
                "console_listen",
                config.console.as_ref().unwrap().listen.to_string(),
            ),
            ("no_console", false.to_string()),
            (
                "authzen_answer_context",
                config
                    .authzen_answer_context
                    .to_possible_value()
                    .unwrap()
                    .get_name()
                    .to_owned(),
            ),
            (
                "approval_max_validity_hours",
                (config.rules.approval_max_validity_ms / 3_600_000).to_string(),
            ),
            (
                "max_import_bytes",
                config.rules.max_import_bytes.to_string(),
            ),
            (
                "facts_cache_bytes",
                config.rules.facts_cache_bytes.to_string(),
            ),
            ("store_cache_bytes", config.store_cache_bytes.to_string()),
            (
                "approval_request_ttl_seconds",
                (config.rules.approval_request_ttl_ms / 1000).to_string(),
            ),
            (
                "approval_requests_max_pending",
                config.rules.max_pending_requests_per_identity.to_string(),
            ),
            (
                "authzen_access_request_window_seconds",
                config.authzen_access_request_window.as_secs().to_string(),
            ),
            (
                "owner_may_approve",
                config.rules.owner_may_approve.to_string(),
            ),
            (
                "require_authenticated_approver",
                config.rules.require_authenticated_approver.to_string(),
            ),
            ("ledger", ledger.mode.as_str().to_owned()),
            (
                "ledger_checkpoint_records",
                ledger.checkpoint_records.to_string(),
            ),
            ("ledger_checkpoint_ms", ms(ledger.checkpoint_interval)),
            ("ledger_segment_bytes", ledger.segment_bytes.to_string()),
            (
                "ledger_index_cache_bytes",
                ledger.index_cache_bytes.to_string(),
            ),
            (
                "ledger_usage_max_entries",
                ledger.usage_max_entries.to_string(),
            ),
            ("ledger_queue", ledger.queue.to_string()),
            ("ledger_mask_keys", ledger.mask_keys.join(",")),
        ]
    }

    #[test]
    fn the_book_and_help_state_the_defaults_in_force() {
        use clap::CommandFactory as _;
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            settings: Settings,
        }
        let command = Serve::command();
        // The book's settings table, generated from --help (tests/it/docs_reference.rs).
        let book = include_str!("../docs/book/src/configuration.md");
        for (setting, value) in defaults_in_force() {
            let row = book
                .lines()
                .find(|line| line.starts_with(&format!("| `{setting}` |")))
                .unwrap_or_else(|| panic!("the book's settings table has no row for {setting}"));
            assert!(
                row.contains(&format!("[default: {value}")),
                "the book says of {setting}: {row:?}; its default is {value}"
            );
            let help = command
                .get_arguments()
                .find(|arg| arg.get_id() == setting)
                .and_then(|arg| arg.get_help())
                .unwrap_or_else(|| panic!("--help has nothing for {setting}"))
                .to_string();
            assert!(
                help.contains(&format!("[default: {value}]")),
                "--help says of {setting}: {help:?}; its default is {value}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_zero_values_are_refused() {
        assert!(toml::from_str::<Settings>("listen_on = \"x\"").is_err());
        let zero = Settings {
            batch_max_items: Some(0),
            ..Settings::default()
        };
        assert!(
            zero.resolve()
                .unwrap_err()
                .to_string()
                .contains("batch_max_items")
        );
    }
}
