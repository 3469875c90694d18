//! The `warrant` command: `serve` runs the decision point; `check`, `approval`, `identity`,
//! `reload` and `status` talk to a running one; `log` reads the ledger; `completions` and `man`
//! print what shells and man read. The load generator is `warrant-bench`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use warrant::observability::traces::LogFormat;

use warrant::cli::admin::{
    AdminConnection, ApprovalArgs, EntityArgs, FactsArgs, IdentityArgs, PolicyArgs,
};
use warrant::cli::{CheckArgs, LogArgs};
use warrant::config::Settings;

// glibc's allocator showed as a fifth of the server's time under load; mimalloc halves that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use warrant::cli::exit;

#[derive(Parser)]
#[command(
    name = "warrant",
    version,
    about = "A zero-trust policy decision point for non-human identities",
    after_help = exit::HELP
)]
struct Cli {
    /// How logs are written to stderr (the level comes from RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WARRANT_LOG_FORMAT")]
    log_format: LogFormat,
    /// How lists and records are printed: `table` for people, `json` for scripts [default:
    /// JSON, but tables for `log show`, `log search` and `log tail`]
    #[arg(long, global = true, value_enum, env = "WARRANT_OUTPUT")]
    output: Option<warrant::cli::output::Output>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the biggest variant does not matter.
#[derive(Subcommand)]
enum SchemaCommand {
    /// Print Cedar declarations for an MCP server's tools (a tools/list result, as JSON): one
    /// action per tool with its arguments typed as `context.input`, and `list_tool`.
    FromMcp {
        /// The tools/list result (or its JSON-RPC answer, or the bare list of tools).
        tools: std::path::PathBuf,
        /// The principal types the actions apply to.
        #[arg(long = "principal", default_value = "Agent", value_delimiter = ',')]
        principal_types: Vec<String>,
        /// The resource types the actions apply to.
        #[arg(long = "resource", default_value = "Tool", value_delimiter = ',')]
        resource_types: Vec<String>,
        /// The action group every tool action is in.
        #[arg(long, default_value = "call_tool")]
        group: String,
        /// The action that decides whether a tool is listed.
        #[arg(long, default_value = "list_tool")]
        list_action: String,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve decisions over gRPC (warrant.v1.Authorizer) from the policies in a directory.
    Serve {
        /// TOML configuration file; flags and environment variables override it.
        #[arg(long, env = "WARRANT_CONFIG")]
        config: Option<std::path::PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Ask a running Warrant for one decision and print it as JSON.
    Check(CheckArgs),
    /// Who can do what: the principals, resources or actions a Check would allow now.
    Search(warrant::cli::SearchArgs),
    /// Verify, show and search the provenance ledger.
    Log(LogArgs),
    /// Grant, revoke and look up approvals on a running Warrant.
    Approval(ApprovalArgs),
    /// Create, update, suspend, retire and look up identities on a running Warrant.
    Identity(IdentityArgs),
    /// Put, show and remove any other entity (resources, scopes, humans) on a running Warrant.
    Entity(EntityArgs),
    /// The web console: `console invite Human::carol` prints a one-time sign-in link.
    Console(warrant::cli::admin::ConsoleArgs),
    /// An access review: the ownerless, the dormant and the over-granted, as an HTML report
    /// and findings (`--out DIR`); `review attest` records an owner's attestation.
    Review(warrant::cli::admin::ReviewArgs),
    /// Link a template to the entities of a grant, unlink it, and list the links, on a running
    /// Warrant.
    Policy(PolicyArgs),
    /// Import many entities at once (all or nothing) into, or export every entity from, a
    /// running Warrant.
    Facts(FactsArgs),
    /// Check a policy folder (schema, policies, facts) and print every problem with its file,
    /// line and column; exit status 1 on any error.
    Validate {
        #[arg(default_value = "policies")]
        dir: std::path::PathBuf,
    },
    /// Run the policy test files in DIR/tests/ (*.toml) and report failures.
    Test {
        #[arg(default_value = "policies")]
        dir: std::path::PathBuf,
    },
    /// Format the *.cedar files of a policy folder in place (Cedar's formatter).
    Fmt {
        #[arg(default_value = "policies")]
        dir: std::path::PathBuf,
        /// Change nothing; exit status 1 if a file is not formatted.
        #[arg(long)]
        check: bool,
    },
    /// Write schema declarations: `schema from-mcp TOOLS.json` for an MCP server's tools.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Whether a running Warrant is ready to decide: the standard gRPC health check on its Check
    /// port (a readiness probe; `--live` for a liveness one).
    Health(warrant::cli::HealthArgs),
    /// Reload the policy folder of a running Warrant now (all or nothing).
    Reload(AdminConnection),
    /// What a running Warrant is serving: versions, counts, the last reload error.
    Status(AdminConnection),
    /// Print the completion script for a shell, e.g. `warrant completions bash >
    /// /etc/bash_completion.d/warrant`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages: warrant.1, and one for each command (warrant-log-verify.1, ...).
    Man {
        /// The folder to write them to (made if missing), e.g. /usr/local/share/man/man1.
        dir: std::path::PathBuf,
    },
    /// A fleet's shared database: `store migrate`.
    Store {
        #[command(flatten)]
        connection: warrant::cli::fleet::StoreConnection,
        #[command(subcommand)]
        command: warrant::cli::fleet::StoreCommand,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are "errors" that go to stdout and succeed.
        Err(error) => {
            let _ = error.print();
            return match error.use_stderr() {
                true => ExitCode::from(exit::USAGE),
                false => ExitCode::SUCCESS,
            };
        }
    };
    if !matches!(cli.command, Command::Serve { .. }) {
        end_quietly_on_a_closed_pipe();
    }
    warrant::cli::output::choose(cli.output);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter needs the runtime, so logs and traces start inside it.
    let tracing = {
        let _inside = runtime.enter();
        match warrant::observability::traces::init(cli.log_format) {
            Ok(tracing) => tracing,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve { config, settings } => serve(config, settings).await,
            Command::Check(args) if args.explain => warrant::authoring::explain::run(&args),
            Command::Check(args) => warrant::cli::check(args).await,
            Command::Search(args) => warrant::cli::search(args).await,
            Command::Health(args) => warrant::cli::health(args).await,
            Command::Log(args) if matches!(args.command, warrant::cli::LogCommand::Tail { .. }) => {
                warrant::cli::admin::tail(args).await
            }
            Command::Log(args) => warrant::cli::log(args),
            Command::Approval(args) => warrant::cli::admin::approval(args).await,
            Command::Identity(args) => warrant::cli::admin::identity(args).await,
            Command::Entity(args) => warrant::cli::admin::entity(args).await,
            Command::Facts(args) => warrant::cli::admin::facts(args).await,
            Command::Policy(args) => warrant::cli::admin::policy(args).await,
            Command::Console(args) => warrant::cli::admin::console(args).await,
            Command::Review(args) => warrant::cli::admin::review(args).await,
            Command::Reload(connection) => warrant::cli::admin::reload(connection).await,
            Command::Validate { dir } => warrant::authoring::validate(&dir),
            Command::Test { dir } => warrant::authoring::policy_tests::run(&dir),
            Command::Fmt { dir, check } => warrant::authoring::fmt(&dir, check),
            Command::Schema {
                command:
                    SchemaCommand::FromMcp {
                        tools,
                        principal_types,
                        resource_types,
                        group,
                        list_action,
                    },
            } => warrant::authoring::mcp_schema::run(
                &tools,
                &warrant::authoring::mcp_schema::Options {
                    principal_types,
                    resource_types,
                    group,
                    list_action,
                },
            ),
            Command::Status(connection) => warrant::cli::admin::status(connection).await,
            Command::Completions { shell } => {
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "warrant", &mut script);
                // Printed, not generated onto stdout: a closed pipe then ends quietly.
                print!("{}", String::from_utf8_lossy(&script));
                Ok(ExitCode::SUCCESS)
            }
            Command::Man { dir } => write_man_pages(&dir).map(|()| ExitCode::SUCCESS),
            Command::Store {
                connection,
                command,
            } => tokio::task::spawn_blocking(move || {
                warrant::cli::fleet::store(&connection, &command)
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|outcome| outcome),
        }
    });
    {
        // Flush the spans still buffered before the process ends.
        let _inside = runtime.enter();
        tracing.shutdown();
    }
    match outcome {
        Ok(code) => code,
        // A reader that went away ends the command quietly, whichever write noticed.
        Err(error) if closed_pipe(&error) => ExitCode::from(exit::CLOSED_PIPE),
        Err(error) => {
            eprintln!("error: {error:#}");
            match unreachable(&error) {
                true => ExitCode::from(exit::UNAVAILABLE),
                false => ExitCode::FAILURE,
            }
        }
    }
}

/// Whether `error` is a write to a reader that went away (a closed pipe).
fn closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Whether `error` is the server not being reached: a connection that failed, or a call the
/// transport answered UNAVAILABLE.
fn unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<tonic::transport::Error>()
            || cause
                .downcast_ref::<tonic::Status>()
                .is_some_and(|status| status.code() == tonic::Code::Unavailable)
    })
}

/// Writes a manual page for the shell and for each of its commands, down to the last level
/// (`warrant-log-verify.1`), into `dir`.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    fn write(dir: &std::path::Path, command: clap::Command) -> anyhow::Result<()> {
        let path = dir.join(format!("{}.1", command.get_name()));
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone()).render(&mut page)?;
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        for sub in command
            .get_subcommands()
            .filter(|sub| sub.get_name() != "help")
        {
            let name = format!("{}-{}", command.get_name(), sub.get_name());
            write(dir, sub.clone().name(name))?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let mut command = Cli::command();
    command.build();
    write(dir, command)
}

/// The shell ends quietly when whoever reads its output has gone (`warrant log search | head`),
/// as a Unix tool does: printing to a closed pipe panics in Rust (which ignores SIGPIPE), so this
/// hook exits with 141, the status a shell reports for a process that SIGPIPE ended, instead of
/// printing a panic. Every other panic is reported as before.
fn end_quietly_on_a_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(i32::from(exit::CLOSED_PIPE));
        }
        report(info);
    }));
}

async fn serve(
    config_file: Option<std::path::PathBuf>,
    flags: Settings,
) -> anyhow::Result<ExitCode> {
    let from_file = match &config_file {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    // The admin token comes from the environment or the file, never from a flag.
    let from_env = Settings {
        admin_token: std::env::var("WARRANT_ADMIN_TOKEN")
            .ok()
            .map(warrant::config::Secret),
        authzen_token: std::env::var("WARRANT_AUTHZEN_TOKEN")
            .ok()
            .map(warrant::config::Secret),
        store_password: std::env::var("WARRANT_STORE_PASSWORD")
            .ok()
            .map(warrant::config::Secret),
        ..Settings::default()
    };
    let config = flags.over(from_env).over(from_file).resolve()?;
    warrant::server::serve(
        config,
        |bound| {
            // Scripts and tests read the bound addresses (port 0 picks a free one) from here.
            println!("warrant metrics on http://{}/metrics", bound.metrics);
            match &bound.admin_token_file {
                Some(path) => println!(
                    "warrant admin on {} (token in {})",
                    bound.admin,
                    path.display()
                ),
                None => println!("warrant admin on {} (token as configured)", bound.admin),
            }
            println!("warrant authzen on http://{}", bound.authzen);
            if let Some(url) = &bound.console {
                println!(
                    "warrant console on {url} (sign in with a link from: warrant console invite Human::<you>)"
                );
            }
            println!("warrant listening on {}", bound.check);
        },
        async {
            // Stop on Ctrl-C or SIGTERM (what orchestrators send).
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminate => {}
            }
        },
    )
    .await
    .context("warrant serve")?;
    Ok(ExitCode::SUCCESS)
}
