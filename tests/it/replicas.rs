//! A fleet: three replicas of the real server sharing one real PostgreSQL (the Debian
//! `postgresql` package's server, run by `PgCluster` in a temporary folder on an ephemeral
//! port, as an unprivileged user when the tests run as root). Grants and revocations made on
//! one replica are in force on the others, a `max_uses` approval used through all three gives
//! exactly `max_uses` allows, a replica cut off from the database denies with
//! `warrant:facts-stale` and turns NOT_SERVING, and one killed and restarted catches up.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Admin, Server, bundled_policies, deploy, entity};
use warrant_proto as proto;

/// A PostgreSQL server of its own, stopped and removed when dropped.
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// Who runs the server: `None` for the current user (not root).
    user: Option<String>,
}

impl PgCluster {
    /// Makes a cluster with `initdb` and starts it on a free port of 127.0.0.1.
    pub fn start() -> PgCluster {
        Self::start_with(None)
    }

    /// The same, taking connections over TLS only, with this certificate and key (PEM).
    pub fn start_tls(cert: &str, key: &str) -> PgCluster {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> PgCluster {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        let user = is_root().then(|| "nobody".to_owned());
        if user.is_some() {
            // The server refuses to run as root: the folder belongs to the user that runs it.
            let uid = id_of("-u");
            let gid = id_of("-g");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PgCluster {
            bin,
            dir,
            port,
            user,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        if let Some((cert, key)) = tls {
            let owned = |name: &str, text: &str| {
                let path = data.join(name);
                std::fs::write(&path, text).unwrap();
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .unwrap();
                if cluster.user.is_some() {
                    std::os::unix::fs::chown(&path, Some(id_of("-u")), Some(id_of("-g"))).unwrap();
                }
            };
            owned("server.crt", cert);
            owned("server.key", key);
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push_str("\nssl = on\n");
            std::fs::write(&conf, text).unwrap();
            // TCP connections over TLS only.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
        }
        cluster.up();
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server's programs as the cluster's user.
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let output = match &self.user {
            Some(user) => Command::new("runuser")
                .args(["-u", user, "--", path.to_str().unwrap()])
                .args(args)
                .current_dir(self.dir.path())
                .output(),
            None => Command::new(&path).args(args).output(),
        }
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", path.display()));
        assert!(
            output.status.success(),
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts (or starts again) the server, waiting until it takes connections.
    pub fn up(&self) {
        let data = self.data_dir();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once (connections are cut).
    pub fn down(&self) {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// A database of this cluster, made on first use: its URL.
    pub fn database(&self, name: &str) -> String {
        let socket_dir = self.dir.path().to_str().unwrap().to_owned();
        self.run(
            "createdb",
            &[
                "-h",
                &socket_dir,
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ],
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let path = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = match &self.user {
            Some(user) => Command::new("runuser")
                .args(["-u", user, "--", path.to_str().unwrap()])
                .args(args)
                .output(),
            None => Command::new(&path).args(args).output(),
        };
    }
}

/// Where the PostgreSQL server's programs are: `WARRANT_PG_BIN`, else the newest Debian
/// `postgresql` installed (`scripts/test` installs it when missing).
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("WARRANT_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|dir| dir.path().join("bin"))
                .filter(|bin| bin.join("pg_ctl").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server: install Debian's postgresql (scripts/test does) or set \
             WARRANT_PG_BIN to its bin folder"
        )
    })
}

fn is_root() -> bool {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        == "0"
}

fn id_of(which: &str) -> u32 {
    String::from_utf8(
        Command::new("id")
            .args([which, "nobody"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// `warrant serve` as a replica of the fleet at `url`, on the bundled policies, with `extra`.
fn replica_args(url: &str, extra: &[&str]) -> Vec<String> {
    let policies = bundled_policies();
    let mut args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--policies"]
        .map(str::to_owned)
        .into();
    args.extend([policies.to_str().unwrap(), "--store", url].map(str::to_owned));
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args
}

/// Starts a replica on `data`: the server, or its stderr if it did not start.
fn start_replica(data: tempfile::TempDir, url: &str, extra: &[&str]) -> Result<Server, String> {
    let args = replica_args(url, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_in(data, &args)
}

/// A replica of the fleet at `url` named `name`, with a data folder of its own.
pub fn replica(url: &str, name: &str, extra: &[&str]) -> Server {
    let mut extra = extra.to_vec();
    extra.extend(["--replica-id", name]);
    start_replica(tempfile::tempdir().unwrap(), url, &extra)
        .unwrap_or_else(|stderr| panic!("replica did not start:\n{stderr}"))
}

/// Why a replica on `data` (a new folder if `None`) refused to start.
fn refusal(data: Option<tempfile::TempDir>, url: &str, extra: &[&str]) -> String {
    let data = data.unwrap_or_else(|| tempfile::tempdir().unwrap());
    match start_replica(data, url, extra) {
        Ok(_) => panic!("the replica started"),
        Err(stderr) => stderr,
    }
}

fn in_hours(hours: i64) -> Option<prost_types::Timestamp> {
    use warrant_domain::clock::Clock as _;
    let now = warrant_domain::clock::SystemClock.now();
    Some(prost_types::Timestamp {
        seconds: now.0 / 1000 + hours * 3600,
        nanos: 0,
    })
}

/// A one-hour approval for the bundled deploy agent to update production configs.
pub fn deploy_grant(id: &str) -> proto::ApprovalSpec {
    proto::ApprovalSpec {
        id: id.to_owned(),
        ticket: format!("CHG-{id}"),
        approver: entity("Human", "alice"),
        requester: entity("Human", "bob"),
        subject: entity("ServiceAccount", "deploy-bot"),
        actions: vec!["update".to_owned()],
        scope: entity("Scope", "production"),
        expires_at: in_hours(1),
        justification: "fleet test".to_owned(),
        ..proto::ApprovalSpec::default()
    }
}

pub async fn grant(admin: &mut Admin, spec: proto::ApprovalSpec) {
    admin
        .grant_approval(proto::GrantApprovalRequest {
            approval: Some(spec),
            ..Default::default()
        })
        .await
        .unwrap();
}

pub async fn revoke(admin: &mut Admin, id: &str) {
    admin
        .revoke_approval(proto::RevokeApprovalRequest {
            id: id.to_owned(),
            reason: "fleet test".to_owned(),
        })
        .await
        .unwrap();
}

pub async fn check(server: &Server, request: proto::CheckRequest) -> proto::CheckResponse {
    server
        .client()
        .await
        .check(request)
        .await
        .unwrap()
        .into_inner()
}

fn allowed(answer: &proto::CheckResponse) -> bool {
    answer.decision == proto::Decision::Allow as i32
}

/// Asks until the answer is `allow` (or the deadline passes, which fails): how long it took.
pub async fn until(server: &Server, request: &proto::CheckRequest, allow: bool) -> Duration {
    let started = Instant::now();
    loop {
        let answer = check(server, request.clone()).await;
        if allowed(&answer) == allow {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {} after 20 s: {:?}",
            if allow { "allow" } else { "deny" },
            answer.reasons
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn serving(server: &Server) -> i32 {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "warrant.v1.Authorizer".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_shares_grants_revocations_and_exact_uses() {
    let cluster = PgCluster::start();
    let url = cluster.database("fleet");
    let replicas = [
        replica(&url, "a", &[]),
        replica(&url, "b", &[]),
        replica(&url, "c", &[]),
    ];
    let mut admin = replicas[0].admin_client().await;

    // Unknown everywhere, then granted on A: allowed on B and C.
    for replica in &replicas {
        let answer = check(replica, deploy("fleet-1")).await;
        assert_eq!(answer.reasons, ["warrant:unknown-approval"]);
    }
    grant(&mut admin, deploy_grant("fleet-1")).await;
    until(&replicas[1], &deploy("fleet-1"), true).await;
    until(&replicas[2], &deploy("fleet-1"), true).await;
    // (Each replica's cache now holds the allow: the revocation must beat it.)
    assert!(allowed(&check(&replicas[1], deploy("fleet-1")).await));

    // Revoked on A: denied on B and C.
    revoke(&mut admin, "fleet-1").await;
    assert!(!allowed(&check(&replicas[0], deploy("fleet-1")).await));
    until(&replicas[1], &deploy("fleet-1"), false).await;
    until(&replicas[2], &deploy("fleet-1"), false).await;
    let answer = check(&replicas[1], deploy("fleet-1")).await;
    assert!(answer.provenance.unwrap().approval.unwrap().revoked);

    // Granted on C this time, with three uses: 200 Checks at once, spread over the three
    // replicas, give exactly three allows.
    let mut on_c = replicas[2].admin_client().await;
    let mut limited = deploy_grant("three-uses");
    limited.max_uses = 3;
    grant(&mut on_c, limited).await;
    until(&replicas[0], &deploy("fleet-1"), false).await;
    for replica in &replicas {
        // Known everywhere before the race (a use is taken only by an allow).
        let started = Instant::now();
        loop {
            let answer = check(replica, deploy("no-such-approval")).await;
            assert!(!allowed(&answer));
            let probe = proto::ListApprovalsRequest::default();
            let listed = replica
                .admin_client()
                .await
                .list_approvals(probe)
                .await
                .unwrap()
                .into_inner();
            if listed
                .approvals
                .iter()
                .any(|a| a.approval.as_ref().map(|s| s.id.as_str()) == Some("three-uses"))
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut tasks = Vec::new();
    for n in 0..200 {
        let mut client = replicas[n % 3].client().await;
        tasks.push(tokio::spawn(async move {
            client
                .check(deploy("three-uses"))
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut uses = Vec::new();
    let mut exhausted = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        if allowed(&answer) {
            uses.push(answer.provenance.unwrap().approval.unwrap().use_number);
        } else {
            assert_eq!(answer.reasons, ["warrant:approval-uses-exhausted"]);
            exhausted += 1;
        }
    }
    uses.sort_unstable();
    assert_eq!((uses, exhausted), (vec![1, 2, 3], 197));

    // Every replica says which change it stands at, and all agree on the policy version.
    let mut versions = Vec::new();
    for replica in &replicas {
        let scrape = crate::common::scrape(replica).await;
        let behind = crate::common::value(&scrape, "warrant_replication_changes_behind", &[]);
        assert_eq!(behind, 0.0);
        let info = scrape
            .samples
            .iter()
            .find(|s| s.metric == "warrant_policy_info")
            .unwrap();
        versions.push(info.labels.get("policy_version").unwrap().to_owned());
    }
    versions.dedup();
    assert_eq!(versions.len(), 1);
    // Status says where each replica stands.
    for (replica, name) in replicas.iter().zip(["a", "b", "c"]) {
        let status = replica
            .admin_client()
            .await
            .status(proto::StatusRequest::default())
            .await
            .unwrap()
            .into_inner()
            .replica
            .unwrap();
        assert_eq!(status.id, name);
        assert!(!status.stale);
        assert_eq!(status.applied_change, status.head_change);
        assert!(status.applied_change >= 3, "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_from_the_database_fails_closed_and_recovers() {
    let cluster = PgCluster::start();
    let url = cluster.database("cutoff");
    let staleness = ["--max-staleness-ms", "1500", "--store-poll-ms", "200"];
    let a = replica(&url, "a", &staleness);
    let b = replica(&url, "b", &staleness);
    let mut admin = a.admin_client().await;
    grant(&mut admin, deploy_grant("before-the-cut")).await;
    let mut limited = deploy_grant("one-use");
    limited.max_uses = 1;
    grant(&mut admin, limited).await;
    until(&b, &deploy("before-the-cut"), true).await;
    assert_eq!(serving(&b).await, 1);

    cluster.down();
    // A use-limited approval cannot be counted: denied at once.
    let answer = check(&b, deploy("one-use")).await;
    assert!(!allowed(&answer));
    assert_eq!(answer.reasons, ["warrant:approval-use-not-recorded"]);
    // Past max_staleness, everything is denied, and health says so.
    let started = Instant::now();
    let stale = loop {
        let answer = check(&b, deploy("before-the-cut")).await;
        if !allowed(&answer) {
            break answer;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(stale.reasons, ["warrant:facts-stale"]);
    let started = Instant::now();
    while serving(&b).await != 2 {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) =
        crate::common::http_get(&format!("{}/readyz", crate::common::metrics_base(&b))).await;
    assert_eq!(status, 503);
    // A change cannot be acknowledged without the database.
    let refused = admin
        .grant_approval(proto::GrantApprovalRequest {
            approval: Some(deploy_grant("during-the-cut")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    // The database back: serving again by itself, nothing lost.
    cluster.up();
    until(&b, &deploy("before-the-cut"), true).await;
    let started = Instant::now();
    while serving(&b).await != 1 {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    grant(&mut admin, deploy_grant("after-the-cut")).await;
    until(&b, &deploy("after-the-cut"), true).await;
    assert!(allowed(&check(&a, deploy("one-use")).await));
    assert!(!allowed(&check(&b, deploy("one-use")).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_and_restarted_catches_up_from_the_change_log() {
    let cluster = PgCluster::start();
    let url = cluster.database("restart");
    let a = replica(&url, "a", &[]);
    let c = replica(&url, "c", &[]);
    let mut admin = a.admin_client().await;
    grant(&mut admin, deploy_grant("kept")).await;
    until(&c, &deploy("kept"), true).await;

    let data = c.kill();
    grant(&mut admin, deploy_grant("while-down")).await;
    revoke(&mut admin, "kept").await;
    let c = start_replica(data, &url, &["--replica-id", "c"]).unwrap();
    // Caught up before it listened: no waiting.
    assert!(allowed(&check(&c, deploy("while-down")).await));
    let answer = check(&c, deploy("kept")).await;
    assert!(answer.provenance.unwrap().approval.unwrap().revoked);

    // A replica paused while the log moves on past what it keeps takes the live records whole
    // when it wakes, and serves them.
    let short = cluster.database("short-log");
    let keep = ["--store-change-log-keep", "2"];
    let (e, f) = (replica(&short, "e", &keep), replica(&short, "f", &keep));
    let mut on_e = e.admin_client().await;
    grant(&mut on_e, deploy_grant("before-the-pause")).await;
    until(&f, &deploy("before-the-pause"), true).await;
    f.signal("STOP");
    for n in 0..3 {
        grant(&mut on_e, deploy_grant(&format!("during-the-pause-{n}"))).await;
    }
    revoke(&mut on_e, "before-the-pause").await;
    f.signal("CONT");
    until(&f, &deploy("before-the-pause"), false).await;
    for n in 0..3 {
        until(&f, &deploy(&format!("during-the-pause-{n}")), true).await;
    }
    let f_data = f.terminate();
    let f = start_replica(f_data, &short, &["--replica-id", "f"]).unwrap();
    assert!(allowed(&check(&f, deploy("during-the-pause-2")).await));

    // A new replica on an empty data folder takes the live records whole.
    let d = replica(&url, "d", &[]);
    assert!(allowed(&check(&d, deploy("while-down")).await));
    assert!(!allowed(&check(&d, deploy("kept")).await));

    // A data folder that followed this database cannot follow another.
    let other = cluster.database("other");
    let data = d.kill();
    let refused = refusal(Some(data), &other, &[]);
    assert!(
        refused.contains("follows another shared database"),
        "{refused}"
    );

    // A database migrated by a newer Warrant is refused by this one, by the shell too.
    let newer = cluster.database("newer");
    let (code, said) = warrant(&["store", "migrate", "--store", &newer]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("schema version"), "{said}");
    let (client, connection) = tokio_postgres::connect(&newer, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute("INSERT INTO warrant_migrations (version) VALUES (999)", &[])
        .await
        .unwrap();
    let refused = refusal(None, &newer, &[]);
    assert!(
        refused.contains("newer than this Warrant knows"),
        "{refused}"
    );
    let (code, said) = warrant(&["store", "migrate", "--store", &newer]);
    assert_ne!(code, 0);
    assert!(said.contains("newer than this Warrant knows"), "{said}");
}

/// `warrant ARGS`, to its end: exit code and stdout (stderr appended).
fn warrant(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

async fn policy_version(server: &Server) -> String {
    let scrape = crate::common::scrape(server).await;
    let info = scrape
        .samples
        .iter()
        .find(|s| s.metric == "warrant_policy_info")
        .unwrap();
    info.labels.get("policy_version").unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pushed_policy_bundle_is_loaded_by_every_replica_and_their_ledgers_merge() {
    let cluster = PgCluster::start();
    let url = cluster.database("bundles");
    let a = replica(&url, "a", &[]);
    let b = replica(&url, "b", &[]);
    let mut admin = a.admin_client().await;
    grant(&mut admin, deploy_grant("before-the-freeze")).await;
    until(&b, &deploy("before-the-freeze"), true).await;
    let first_version = policy_version(&a).await;

    // A folder that does not validate is refused whole; nothing is published.
    let broken = crate::common::bundled_policies_copy();
    std::fs::write(
        broken.path().join("broken.cedar"),
        "permit (principal, action, resource",
    )
    .unwrap();
    let (code, said) = warrant(&[
        "policy",
        "push",
        broken.path().to_str().unwrap(),
        "--store",
        &url,
    ]);
    assert_ne!(code, 0, "{said}");
    assert!(said.contains("broken.cedar"), "{said}");

    // A change freeze, pushed to the database: both replicas load it.
    let frozen = crate::common::bundled_policies_copy();
    std::fs::write(
        frozen.path().join("freeze.cedar"),
        "@id(\"change-freeze\")\nforbid (principal, action == Action::\"update\", resource);\n",
    )
    .unwrap();
    let (code, said) = warrant(&[
        "policy",
        "push",
        frozen.path().to_str().unwrap(),
        "--store",
        &url,
    ]);
    assert_eq!(code, 0, "{said}");
    until(&a, &deploy("before-the-freeze"), false).await;
    until(&b, &deploy("before-the-freeze"), false).await;
    let denied = check(&b, deploy("before-the-freeze")).await;
    assert_eq!(denied.reasons, ["change-freeze"]);
    let version = policy_version(&a).await;
    assert_ne!(version, first_version);
    assert!(said.contains(&version), "{said} does not name {version}");
    assert_eq!(policy_version(&b).await, version);

    // A replica started later loads the bundle, not its own folder.
    let c = replica(&url, "c", &[]);
    assert_eq!(policy_version(&c).await, version);
    let denied = check(&c, deploy("before-the-freeze")).await;
    assert_eq!(denied.reasons, ["change-freeze"]);
    let on_c = denied.decision_id.clone();

    // The freeze lifted by pushing the folder as it was: the first version again, and one
    // unpacked bundle kept.
    let thawed = crate::common::bundled_policies_copy();
    let (code, said) = warrant(&[
        "policy",
        "push",
        thawed.path().to_str().unwrap(),
        "--store",
        &url,
    ]);
    assert_eq!(code, 0, "{said}");
    for replica in [&a, &b, &c] {
        until(replica, &deploy("before-the-freeze"), true).await;
    }
    assert_eq!(policy_version(&b).await, first_version);
    let bundles = std::fs::read_dir(a.data.path().join("policy-bundles"))
        .unwrap()
        .count();
    assert_eq!(bundles, 1);

    // Each replica's ledger is its own chain, its name in every record; the shell checks them
    // all and merges them by time.
    assert_eq!(c.record(&on_c).await["replica"], "c");
    let (a, b, c) = (a.terminate(), b.terminate(), c.terminate());
    let dirs = [a.path(), b.path(), c.path()].map(|p| p.to_str().unwrap().to_owned());
    let mut verify = vec!["log", "verify"];
    for dir in &dirs {
        verify.extend(["--data-dir", dir.as_str()]);
    }
    let (code, said) = warrant(&verify);
    assert_eq!(code, 3, "unpinned keys: {said}");
    for name in ["replica a", "replica b", "replica c"] {
        assert!(said.contains(name), "{said}");
    }
    assert_eq!(said.matches("ok: ").count(), 3, "{said}");
    let mut search = vec!["log", "search", "--output", "json"];
    for dir in &dirs {
        search.extend(["--data-dir", dir.as_str()]);
    }
    let (code, said) = warrant(&search);
    assert_eq!(code, 0, "{said}");
    let records: Vec<serde_json::Value> = serde_json::from_str(&said).unwrap();
    let replicas: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["replica"].as_str())
        .collect();
    assert_eq!(replicas.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    let times: Vec<i64> = records
        .iter()
        .map(|r| {
            warrant_domain::clock::UnixMillis::parse_rfc3339(r["time"].as_str().unwrap())
                .unwrap()
                .0
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "merged by time");
    let (code, said) = warrant(&[
        "log",
        "show",
        &on_c,
        "--data-dir",
        &dirs[0],
        "--data-dir",
        &dirs[2],
    ]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("change-freeze"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_reach_the_database_over_tls_checked_against_its_ca() {
    let ca = crate::tls::Authority::new("database CA");
    let (cert, key) = ca.server("postgres");
    let cluster = PgCluster::start_tls(&cert, &key);
    let url = format!("{}?sslmode=require", cluster.database("tls"));
    let files = tempfile::tempdir().unwrap();
    let ca_file = crate::tls::write(files.path(), "db-ca.pem", &ca.pem);
    let a = replica(&url, "a", &["--store-ca", ca_file.to_str().unwrap()]);
    let b = replica(&url, "b", &["--store-ca", ca_file.to_str().unwrap()]);
    grant(&mut a.admin_client().await, deploy_grant("over-tls")).await;
    until(&b, &deploy("over-tls"), true).await;

    // A database whose certificate another CA signed is refused.
    let other = crate::tls::Authority::new("another CA");
    let other_file = crate::tls::write(files.path(), "other-ca.pem", &other.pem);
    let refused = refusal(None, &url, &["--store-ca", other_file.to_str().unwrap()]);
    assert!(
        refused.contains("cannot use the shared database"),
        "{refused}"
    );
    // And so is plaintext: the server takes TCP connections over TLS only.
    let plain = url.replace("sslmode=require", "sslmode=disable");
    let refused = refusal(None, &plain, &[]);
    assert!(
        refused.contains("cannot use the shared database"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_made_at_once_on_several_replicas_are_all_made_once() {
    let cluster = PgCluster::start();
    let url = cluster.database("contended");
    let replicas = [
        replica(&url, "a", &[]),
        replica(&url, "b", &[]),
        replica(&url, "c", &[]),
    ];
    // 30 grants at once through the three replicas: every one is made, none refused.
    let mut tasks = Vec::new();
    for n in 0..30 {
        let mut admin = replicas[n % 3].admin_client().await;
        tasks.push(tokio::spawn(async move {
            admin
                .grant_approval(proto::GrantApprovalRequest {
                    approval: Some(deploy_grant(&format!("many-{n}"))),
                    ..Default::default()
                })
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // The same approval id granted through every replica at once: exactly one is made.
    let mut tasks = Vec::new();
    for replica in &replicas {
        let mut admin = replica.admin_client().await;
        tasks.push(tokio::spawn(async move {
            admin
                .grant_approval(proto::GrantApprovalRequest {
                    approval: Some(deploy_grant("only-once")),
                    ..Default::default()
                })
                .await
        }));
    }
    let mut made = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => made += 1,
            Err(status) => assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}"),
        }
    }
    assert_eq!(made, 1);
    for replica in &replicas {
        for n in 0..30 {
            until(replica, &deploy(&format!("many-{n}")), true).await;
        }
        until(replica, &deploy("only-once"), true).await;
    }
}

/// An HTTP exchange with a console: (status, the session cookie it set, body).
async fn console_http(
    method: &str,
    url: &str,
    form: Option<String>,
    cookie: Option<&str>,
) -> (u16, Option<String>, String) {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if form.is_some() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let request = request
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            form.unwrap_or_default(),
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let set_cookie = response.headers().get("set-cookie").map(|value| {
        value
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    });
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        set_cookie,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn a_replicas_console_shows_the_fleets_decisions_and_names_a_replica_it_cannot_ask() {
    let cluster = PgCluster::start();
    let url = cluster.database("console");
    // A fleet shares its admin token: a replica's console reads the others' decision logs.
    let token = "a-fleet-wide-admin-token-for-every-replica";
    let start = |name: &str| {
        let args = replica_args(&url, &["--replica-id", name]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_with_env(&args, &[("WARRANT_ADMIN_TOKEN", token)])
            .unwrap_or_else(|stderr| panic!("replica did not start:\n{stderr}"))
    };
    let a = start("a");
    let b = start("b");
    let on_a = check(&a, deploy("")).await;
    let on_b = check(
        &b,
        crate::common::request("ApiKey::pipeline-etl", "read", "Dataset::sales-2026", ""),
    )
    .await;

    let invite = Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(["console", "invite", "Human::alice", "--admin"])
        .arg(format!("http://{}", a.admin))
        .env("WARRANT_ADMIN_TOKEN", token)
        .output()
        .unwrap();
    assert!(invite.status.success(), "{invite:?}");
    let invite: serde_json::Value = serde_json::from_slice(&invite.stdout).unwrap();
    let link = invite["url"].as_str().unwrap();
    let secret = link.rsplit('/').next().unwrap();
    let (status, cookie, _) = console_http(
        "POST",
        &format!("{}/invite", a.console),
        Some(format!("token={secret}")),
        None,
    )
    .await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");

    // Each replica announces itself at start: a's log soon holds b's decision too.
    let short = |id: &str| id[id.len() - 8..].to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (status, _, page) = console_http(
            "GET",
            &format!("{}/decisions", a.console),
            None,
            Some(&cookie),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        if page.contains(&short(&on_b.decision_id)) || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(page.contains(&short(&on_a.decision_id)), "{page}");
    assert!(page.contains(&short(&on_b.decision_id)), "{page}");
    // b's decision links to b's own console, where its proof is; each row names its replica.
    assert!(
        page.contains(&format!("{}/decisions/{}", b.console, on_b.decision_id)),
        "{page}"
    );
    assert!(page.contains("<td><code>b</code></td>"), "{page}");
    assert!(!page.contains("could not be asked"), "{page}");

    // A replica that stops answering is named, its decisions missing rather than invented.
    drop(b.kill());
    let (_, _, page) = console_http(
        "GET",
        &format!("{}/decisions", a.console),
        None,
        Some(&cookie),
    )
    .await;
    assert!(
        page.contains("Replica <code>b</code> could not be asked"),
        "{page}"
    );
    assert!(!page.contains(&short(&on_b.decision_id)), "{page}");
    assert!(page.contains(&short(&on_a.decision_id)), "{page}");
}

#[tokio::test]
async fn the_fleet_examples_settings_start_a_replica_that_decides_for_envoy() {
    // examples/replicas/warrant.toml as the compose file gives it to each replica; only what
    // points at that compose network (the database, the listeners) is replaced here.
    let cluster = PgCluster::start();
    let url = cluster.database("example");
    let settings =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/replicas/warrant.toml");
    let mut args = replica_args(&url, &["--config", settings.to_str().unwrap()]);
    args.extend(["--replica-id".to_owned(), "warrant-a".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The password file the compose secret would mount: the test database takes any password.
    let server = Server::start_with_env(&args, &[("WARRANT_STORE_PASSWORD", "unused")])
        .unwrap_or_else(|stderr| panic!("the example's settings did not start:\n{stderr}"));
    assert_eq!(serving(&server).await, 1);
    // Its route table decides Envoy's requests, the principal in the header the example names.
    let mut admin = server.admin_client().await;
    grant(&mut admin, deploy_grant("CHG-7")).await;
    let request = crate::envoy::envoy_check(
        "PUT",
        "/configs/payments-api",
        "",
        &[
            ("x-warrant-principal", "ServiceAccount::deploy-bot"),
            ("x-approval-id", "CHG-7"),
        ],
    );
    let answer = crate::envoy::ask(&server, request).await;
    assert_eq!(
        crate::envoy::grpc_code(&answer),
        tonic::Code::Ok,
        "{answer:?}"
    );
}
