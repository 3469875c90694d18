//! `warrant-bench`: Warrant's load generator, a binary of its own so that the server does not
//! carry it. It knows the server only through the public gRPC API (`loadgen`); see
//! BENCHMARKS.md for how each figure there was measured with it.

use std::process::ExitCode;

use clap::Parser;

mod loadgen;

/// Drive a running Warrant with load and report throughput and latency.
#[derive(Parser)]
#[command(name = "warrant-bench", version)]
struct Cli {
    #[command(flatten)]
    args: loadgen::BenchArgs,
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
    match runtime.block_on(bench(cli.args)) {
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
