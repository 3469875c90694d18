//! `warrant-bench` against a real server: it runs, reports non-zero throughput and no errors, for
//! every method and for the open loop. (A proof that it works, not a measurement: no timing is
//! asserted.)

use crate::common::Server;

fn bench(server: &Server, extra: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_warrant-bench"))
        .args([
            "--server",
            &server.url(),
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_load_generator_drives_a_real_server() {
    let server = Server::start(&[]);
    for extra in [
        &["--method", "ping"][..],
        &["--method", "check", "--hit-ratio", "0.5"],
        &["--method", "batch", "--batch-size", "5", "--hit-ratio", "0"],
        &["--method", "check", "--rate", "200", "--concurrency", "4"],
    ] {
        let report = bench(&server, extra);
        assert!(
            report["requests"].as_u64().unwrap() > 0,
            "{extra:?}: {report}"
        );
        assert!(
            report["requests_per_second"].as_f64().unwrap() > 0.0,
            "{extra:?}"
        );
        assert_eq!(report["errors"], serde_json::json!({}), "{extra:?}");
        assert!(
            report["latency_us"]["p99"].as_u64().unwrap()
                >= report["latency_us"]["p50"].as_u64().unwrap()
        );
        if extra[1] != "ping" {
            let decided = report["decisions"]["ALLOW"].as_u64().unwrap() as f64;
            let per_second = report["decisions_per_second"].as_f64().unwrap();
            let seconds = report["seconds"].as_f64().unwrap();
            assert!(
                (decided - per_second * seconds).abs() < 1.0,
                "{extra:?}: {report}"
            );
        }
    }
}

#[test]
fn a_count_limited_run_sends_that_many() {
    let server = Server::start(&[]);
    let report = bench(&server, &["--requests", "300", "--concurrency", "3"]);
    assert_eq!(report["requests"], 300);
}

#[test]
fn the_load_generator_drives_ext_authz() {
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/envoy/warrant.toml");
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let report = bench(&server, &["--method", "ext-authz", "--hit-ratio", "0.5"]);
    assert_eq!(report["errors"], serde_json::json!({}));
    // Every request allowed: the route maps PUT /configs/payments-api to an update the
    // deploy bot's approval covers; the misses differ only in x-justification.
    assert_eq!(report["decisions"]["ALLOW"], report["requests"], "{report}");
}
