//! Starts the real `warrant` binary on 127.0.0.1 with an ephemeral port and connects to it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use warrant::cli::admin::AddToken;
use warrant_proto as proto;
use warrant_proto::admin_client::AdminClient;
use warrant_proto::authorizer_client::AuthorizerClient;
use warrant_proto::decision_log_client::DecisionLogClient;

pub type Admin = AdminClient<InterceptedService<Channel, AddToken>>;

pub fn bundled_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A copy of the bundled policy folder, to edit.
pub fn bundled_policies_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_bundled_policies(dir.path());
    dir
}

/// Copies the bundled policy folder's files into `to`.
pub fn copy_bundled_policies(to: &Path) {
    for entry in std::fs::read_dir(bundled_policies()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// A running server process, killed when dropped, with a data folder of its own.
pub struct Server {
    child: Child,
    pub addr: String,
    /// The metrics endpoint's URL.
    pub metrics: String,
    /// The admin API's address.
    pub admin: String,
    /// The AuthZEN API's base URL.
    pub authzen: String,
    /// The console's URL (`.../console`).
    pub console: String,
    pub data: tempfile::TempDir,
}

impl Server {
    /// Starts `warrant serve` on the bundled policies with extra flags.
    pub fn start(extra: &[&str]) -> Server {
        let policies = bundled_policies();
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--policies"];
        args.push(policies.to_str().unwrap());
        args.extend_from_slice(extra);
        Self::start_with(&args).unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
    }

    /// Starts the binary with these arguments (and a fresh `--data-dir`); `Err` has its stderr
    /// if it did not start.
    pub fn start_with(args: &[&str]) -> Result<Server, String> {
        Self::start_in(tempfile::tempdir().unwrap(), args)
    }

    /// Starts the binary on an existing data folder (to restart a server on its ledger).
    pub fn start_in(data: tempfile::TempDir, args: &[&str]) -> Result<Server, String> {
        Self::start_in_with_env(data, args, &[])
    }

    /// Starts `warrant serve` on the bundled policies again, on an existing data folder.
    pub fn restart_in(data: tempfile::TempDir) -> Server {
        let policies = bundled_policies();
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policies",
            policies.to_str().unwrap(),
        ];
        Self::start_in(data, &args)
            .unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"))
    }

    /// Starts the binary with these arguments and environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Server, String> {
        Self::start_in_with_env(tempfile::tempdir().unwrap(), args, env)
    }

    fn start_in_with_env(
        data: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warrant"))
            .envs(env.iter().copied())
            .args(args)
            .args(["--data-dir", data.path().to_str().unwrap()])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--authzen-listen", "127.0.0.1:0"])
            .args(["--console-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warrant");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut metrics = String::new();
            let mut admin = String::new();
            let mut authzen = String::new();
            let mut console = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("warrant console on ") {
                    console = rest.split(' ').next().unwrap_or_default().to_owned();
                }
                if let Some(url) = line.strip_prefix("warrant metrics on ") {
                    metrics = url.to_owned();
                }
                if let Some(rest) = line.strip_prefix("warrant admin on ") {
                    admin = rest.split(' ').next().unwrap_or_default().to_owned();
                }
                if let Some(url) = line.strip_prefix("warrant authzen on ") {
                    authzen = url.to_owned();
                }
                if let Some(addr) = line.strip_prefix("warrant listening on ") {
                    let _ = sender.send((
                        addr.to_owned(),
                        metrics.clone(),
                        admin.clone(),
                        authzen.clone(),
                        console.clone(),
                    ));
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((addr, metrics, admin, authzen, console)) =
                receiver.recv_timeout(Duration::from_millis(50))
            {
                return Ok(Server {
                    child,
                    addr,
                    metrics,
                    admin,
                    authzen,
                    console,
                    data,
                });
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let mut stderr = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                return Err(stderr);
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Check listener's socket address.
    pub fn check_addr(&self) -> std::net::SocketAddr {
        self.addr.parse().expect("the Check listener's address")
    }

    /// The AuthZEN listener's socket address.
    pub fn authzen_addr(&self) -> std::net::SocketAddr {
        self.authzen
            .trim_start_matches("http://")
            .parse()
            .expect("the AuthZEN listener's address")
    }

    pub async fn client(&self) -> AuthorizerClient<tonic::transport::Channel> {
        AuthorizerClient::connect(self.url())
            .await
            .expect("connect")
    }

    /// The token the server created in its data folder.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.path().join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_owned()
    }

    async fn admin_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.admin))
            .unwrap()
            .connect()
            .await
            .expect("connect to the admin API")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An admin client that sends the server's token.
    pub async fn admin_client(&self) -> Admin {
        AdminClient::with_interceptor(
            self.admin_channel().await,
            AddToken::bearer(&self.admin_token()).unwrap(),
        )
    }

    /// The ledger's record of a decision, as JSON, through `DecisionLog/GetDecision`.
    pub async fn record(&self, decision_id: &str) -> serde_json::Value {
        let record = self
            .decision_log_client()
            .await
            .get_decision(proto::GetDecisionRequest {
                decision_id: decision_id.to_owned(),
            })
            .await
            .unwrap_or_else(|status| panic!("no record {decision_id}: {status:?}"))
            .into_inner();
        serde_json::from_str(&record.record_json).unwrap()
    }

    /// A DecisionLog client (on the admin listener) that sends the server's token.
    pub async fn decision_log_client(
        &self,
    ) -> DecisionLogClient<InterceptedService<Channel, AddToken>> {
        DecisionLogClient::with_interceptor(
            self.admin_channel().await,
            AddToken::bearer(&self.admin_token()).unwrap(),
        )
    }
}

impl Server {
    /// Kills the process at once (SIGKILL) and hands back its data folder.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }

    /// Sends the process a signal (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Asks the process to stop (SIGTERM), waits for it and hands back its data folder.
    pub fn terminate(mut self) -> tempfile::TempDir {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "warrant exited with {exit}");
        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }

    pub fn ledger_dir(&self) -> PathBuf {
        self.data.path().to_path_buf()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn entity(type_name: &str, id: &str) -> Option<proto::EntityRef> {
    Some(proto::EntityRef {
        r#type: type_name.to_owned(),
        id: id.to_owned(),
    })
}

/// A request from `Type::id` strings.
pub fn request(
    principal: &str,
    action: &str,
    resource: &str,
    approval: &str,
) -> proto::CheckRequest {
    let split = |text: &str| {
        let (t, i) = text.rsplit_once("::").unwrap();
        entity(t, i)
    };
    proto::CheckRequest {
        principal: split(principal),
        action: action.to_owned(),
        resource: split(resource),
        context: None,
        approval_id: approval.to_owned(),
        ..proto::CheckRequest::default()
    }
}

/// The bundled pipeline key reading a dataset, with no approval.
pub fn pipeline_read(dataset: &str) -> proto::CheckRequest {
    request("ApiKey::pipeline-etl", "read", dataset, "")
}

/// The bundled deployment agent updating the payments config, presenting `approval`.
pub fn deploy(approval: &str) -> proto::CheckRequest {
    request(
        "ServiceAccount::deploy-bot",
        "update",
        "Config::payments-api",
        approval,
    )
}

pub fn context(json: serde_json::Value) -> Option<prost_types::Struct> {
    match warrant_proto::json_to_value(json).kind {
        Some(prost_types::value::Kind::StructValue(s)) => Some(s),
        _ => panic!("context must be an object"),
    }
}

/// Scrapes the server's metrics endpoint and parses it with a Prometheus text-format parser.
pub async fn scrape(server: &Server) -> prometheus_parse::Scrape {
    let (status, body) = http_get(&server.metrics).await;
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// GET a URL of the server's plain-HTTP endpoints: (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<hyper::body::Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    use http_body_util::BodyExt as _;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The base URL (scheme and authority) of the metrics endpoint, for /healthz and /readyz.
pub fn metrics_base(server: &Server) -> String {
    server.metrics.trim_end_matches("/metrics").to_owned()
}

pub fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?}"));
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(buckets) => buckets.last().unwrap().count,
        other => panic!("{other:?}"),
    }
}
