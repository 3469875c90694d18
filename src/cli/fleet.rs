//! The shell's commands for a fleet's shared database, run against the database itself (not a
//! replica): `warrant store migrate` applies the schema migrations this build knows, and
//! `warrant policy push DIR` publishes a policy folder, validated in full, as a bundle every
//! replica loads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use warrant_fleet::{ChangeOp, PolicyBundle, Postgres, StoreSettings};

/// How the shell reaches the shared database.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreConnection {
    /// The shared database: postgres://USER@HOST:PORT/DB; the password comes from
    /// WARRANT_STORE_PASSWORD or --store-password-file.
    #[arg(long, global = true, env = "WARRANT_STORE")]
    pub store: Option<crate::config::StoreUrl>,
    #[arg(long, global = true, env = "WARRANT_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
    /// CA certificates (PEM) the database's certificate must chain to.
    #[arg(long, global = true, env = "WARRANT_STORE_CA")]
    pub store_ca: Option<PathBuf>,
}

impl StoreConnection {
    /// Connects (which applies the migrations this build knows).
    fn connect(&self) -> anyhow::Result<Postgres> {
        let url = self.url()?;
        // The server's own reading of these settings (URL, password from the environment or
        // the file); the shell needs few connections and may wait longer.
        let given = crate::config::Settings {
            store: self.store.clone(),
            store_password: std::env::var("WARRANT_STORE_PASSWORD")
                .ok()
                .map(crate::config::Secret),
            store_password_file: self.store_password_file.clone(),
            store_ca: self.store_ca.clone(),
            ..crate::config::Settings::default()
        };
        let shared = given
            .shared_store()?
            .context("--store (or WARRANT_STORE): the shared database's postgres:// URL")?;
        let settings = StoreSettings {
            pool_size: 2,
            timeout: std::time::Duration::from_secs(10),
            replica: "warrant-shell".to_owned(),
            ..shared.settings
        };
        Postgres::connect(settings)
            .with_context(|| format!("the shared database {}", warrant_fleet::redacted_url(url)))
    }

    fn url(&self) -> anyhow::Result<&str> {
        match &self.store {
            Some(url) if !url.0.is_empty() => Ok(&url.0),
            _ => bail!("--store (or WARRANT_STORE): the shared database's postgres:// URL"),
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Apply the shared database's schema migrations this build knows (replicas also do at
    /// start); refuses a database newer than this build.
    Migrate,
}

pub fn store(connection: &StoreConnection, command: &StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Migrate => {
            let postgres = connection.connect()?;
            println!(
                "the shared database {} is at schema version {} (database {})",
                warrant_fleet::redacted_url(connection.url()?),
                warrant_fleet::SCHEMA_VERSION,
                postgres.database_id()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The files of a policy folder a bundle carries: the schema, the policies, the links and the
/// facts file (what `PolicySnapshot::load` and the facts read), by name.
fn bundle_files(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let listing = std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))?;
    for entry in listing {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let carried = name == warrant_policy::SCHEMA_FILE
            || name == warrant_policy::LINKS_FILE
            || name == warrant_facts::ENTITIES_FILE
            || (name.ends_with(".cedar") && !name.starts_with('.'));
        if carried && path.is_file() {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
            files.insert(name, text);
        }
    }
    Ok(files)
}

/// Validates the policy folder in full (schema, policies, links, facts), stores it as a bundle
/// and publishes it: every replica loads it, all or nothing, from its next catch-up.
pub fn push(connection: &StoreConnection, dir: &Path) -> anyhow::Result<ExitCode> {
    let policies = warrant_policy::PolicySnapshot::load(dir)
        .map_err(|error| anyhow::anyhow!("{}: {error}", dir.display()))?;
    warrant_store::facts::load(dir, policies.schema())
        .map_err(|error| anyhow::anyhow!("{}: {error}", dir.display()))?;
    let files = bundle_files(dir)?;
    // What was read must be what was validated.
    if warrant_policy::PolicySnapshot::load(dir)
        .map(|again| again.version() != policies.version())
        .unwrap_or(true)
    {
        bail!("{} changed while it was pushed: push again", dir.display());
    }
    let bundle = PolicyBundle {
        version: policies.version().to_string(),
        files,
    };
    let postgres = connection.connect()?;
    postgres.put_policy_bundle(&bundle)?;
    let publishing = postgres.begin_publish()?;
    let ops = vec![ChangeOp::Policies {
        version: bundle.version.clone(),
    }];
    let id = postgres.commit_publish(publishing, ops, i64::MAX)?;
    println!(
        "pushed policy version {} ({} files) as change {id}",
        bundle.version,
        bundle.files.len()
    );
    Ok(ExitCode::SUCCESS)
}
