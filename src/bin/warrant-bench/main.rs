//! `warrant-bench`: Warrant's load generator, a binary of its own so that the server does not
//! carry it. It knows the server only through the public gRPC API (`loadgen`); see
//! BENCHMARKS.md for how each figure there was measured with it.

use std::process::ExitCode;

use clap::Parser;

mod history;
mod loadgen;
mod propagation;

/// Drive a running Warrant with load and report throughput and latency.
#[derive(Parser)]
#[command(
    name = "warrant-bench",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    args: loadgen::BenchArgs,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// Time how long changes made on one replica of a fleet take to be in force on the others.
    Propagation(propagation::PropagationArgs),
    /// Write a ledger's history of decisions into a data folder no server runs on (for the
    /// access review's benchmark).
    History(history::HistoryArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.mode {
        Some(Mode::Propagation(args)) => runtime.block_on(async {
            print!("{}", propagation::run(args).await?);
            Ok(ExitCode::SUCCESS)
        }),
        Some(Mode::History(args)) => runtime.block_on(async {
            print!("{}", history::run(args).await?);
            Ok(ExitCode::SUCCESS)
        }),
        None => runtime.block_on(bench(cli.args)),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: loadgen::BenchArgs) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let report = loadgen::run(args).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    // Any failed call makes the run a failure, so scripts notice.
    Ok(if report.errors.is_empty() && report.requests > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
