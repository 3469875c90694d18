//! The provenance ledger through the real server and the real `warrant log` command: every
//! kind of tampering is detected and named, a SIGKILL under load loses no acknowledged decision,
//! a torn last write is cut, and a ledger that cannot be written makes Checks deny.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Server, context, deploy, pipeline_read, request};
use warrant_proto::Decision;

pub(crate) fn log(data: &Path, args: &[&str]) -> (bool, String) {
    // `verify` is given the key apart from the folder, as an auditor would.
    let pinned = if args.first() == Some(&"verify") {
        let key = Command::new(env!("CARGO_BIN_EXE_warrant"))
            .args(["log", "--data-dir", data.to_str().unwrap(), "public-key"])
            .output()
            .unwrap();
        vec![
            "--public-key".to_owned(),
            String::from_utf8(key.stdout).unwrap().trim().to_owned(),
        ]
    } else {
        Vec::new()
    };
    let output = Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(["log", "--data-dir", data.to_str().unwrap()])
        .args(args)
        .args(&pinned)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn segment(data: &Path) -> PathBuf {
    let dir = data.join("ledger");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(".jsonl"))
        .collect();
    segments.sort();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.pop().unwrap()
}

/// A ledger of ten decisions with a checkpoint every three, in a data folder of its own.
async fn ten_decisions() -> tempfile::TempDir {
    let server = Server::start(&["--ledger-checkpoint-records", "3"]);
    let mut client = server.client().await;
    for i in 0..10 {
        let mut ask = request(
            "ApiKey::pipeline-etl",
            "read",
            if i % 2 == 0 {
                "Dataset::sales-2026"
            } else {
                "Dataset::salaries"
            },
            "",
        );
        ask.context = context(serde_json::json!({"justification": format!("run {i}")}));
        client.check(ask).await.unwrap();
    }
    server.kill()
}

/// A copy of the data folder with the segment's lines changed by `tamper`.
fn tampered(original: &Path, tamper: impl FnOnce(&mut Vec<String>)) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join("ledger")).unwrap();
    for entry in std::fs::read_dir(original.join("ledger")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            copy.path().join("ledger").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let segment = segment(copy.path());
    // Without the zeros a durable writer lays ahead of its records (it was killed).
    let mut lines: Vec<String> = std::fs::read_to_string(&segment)
        .unwrap()
        .trim_end_matches('\0')
        .lines()
        .map(str::to_owned)
        .collect();
    tamper(&mut lines);
    std::fs::write(&segment, lines.join("\n") + "\n").unwrap();
    copy
}

/// A change to a segment's lines.
type Tamper = Box<dyn FnOnce(&mut Vec<String>)>;

/// Index of the line holding record `seq`.
fn record_line(lines: &[String], seq: u64) -> usize {
    // Canonical JSON sorts keys: an entry ends `..."seq":N},"hash":...`.
    let marker = format!("\"seq\":{seq}}},\"hash\"");
    lines.iter().position(|l| l.contains(&marker)).unwrap()
}

#[tokio::test]
async fn every_kind_of_tampering_is_detected_and_named() {
    let ledger = ten_decisions().await;
    let data = ledger.path();
    let (ok, text) = log(data, &["verify"]);
    assert!(ok, "{text}");
    assert!(
        // Every durable batch (here, each of the ten Checks) is signed as it is written.
        text.starts_with("ok: 10 records, 10 checkpoints, 0 records after the last checkpoint"),
        "{text}"
    );

    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "edited",
            Box::new(|l: &mut Vec<String>| {
                let i = record_line(l, 4);
                l[i] = l[i].replace("run 3", "run 9");
            }),
            "record 4 was edited",
        ),
        (
            "flipped byte",
            Box::new(|l: &mut Vec<String>| {
                let i = record_line(l, 5);
                l[i] = l[i].replacen('{', "[", 1);
            }),
            // Each record is followed by its batch's signed checkpoint: record 5 is line 9.
            ":9: not a ledger line",
        ),
        (
            "deleted",
            Box::new(|l: &mut Vec<String>| {
                // The record and the checkpoint of its batch, as a careful forger would.
                let i = record_line(l, 2);
                l.drain(i..i + 2);
            }),
            "record 2 is missing",
        ),
        (
            "swapped",
            Box::new(|l: &mut Vec<String>| {
                let (a, b) = (record_line(l, 5), record_line(l, 6));
                l.swap(a, b);
            }),
            "found record 6 where 5 belongs",
        ),
        (
            "tail cut",
            Box::new(|l: &mut Vec<String>| {
                let i = record_line(l, 8);
                l.truncate(i);
            }),
            "the last signed checkpoint covers record 10 but the ledger ends at record 7",
        ),
        (
            "signature replaced",
            Box::new(|l: &mut Vec<String>| {
                let i = l.iter().position(|x| x.contains("\"checkpoint\"")).unwrap();
                let at = l[i].find("\"signature\":\"").unwrap() + 13;
                let flipped = if &l[i][at..at + 1] == "0" { "1" } else { "0" };
                l[i].replace_range(at..at + 1, flipped);
            }),
            "checkpoint at record 1: bad signature",
        ),
    ];
    for (name, tamper, expected) in cases {
        let copy = tampered(data, tamper);
        let (ok, text) = log(copy.path(), &["verify"]);
        assert!(!ok, "{name}: verify passed:\n{text}");
        assert!(
            text.contains(expected),
            "{name}: expected {expected:?} in:\n{text}"
        );
    }

    // A write torn in the middle of a line.
    let copy = tampered(data, |_| {});
    let segment = segment(copy.path());
    let length = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(length - 20)
        .unwrap();
    let (ok, text) = log(copy.path(), &["verify"]);
    assert!(!ok && text.contains("ends mid-record"), "{text}");
}

#[tokio::test]
async fn a_record_ties_the_action_to_identity_owner_approval_and_scope() {
    let server = Server::start(&[]);
    let mut ask = deploy("CHG-1042");
    ask.context = context(serde_json::json!({"justification": "rollout", "token": "s3cr3t"}));
    ask.request_id = "req-7".into();
    let answer = server.client().await.check(ask).await.unwrap().into_inner();
    let data = server.kill();
    let (ok, text) = log(
        data.path(),
        &["show", &answer.decision_id, "--output", "json"],
    );
    assert!(ok, "{text}");
    let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
    // An approval granted by hand links no story beyond the decision itself.
    assert_eq!(shown["story"].as_array().unwrap().len(), 1);
    let record = &shown["entry"]["record"];
    assert_eq!(record["decision"], "ALLOW");
    assert_eq!(record["principal"]["id"], "deploy-bot");
    assert_eq!(record["owner"]["name"], "Alice Martin");
    assert_eq!(record["approval"]["ticket"], "CHG-1042");
    assert_eq!(record["approval"]["approver"]["id"], "bob");
    assert_eq!(record["approval"]["valid_at_decision"], true);
    assert_eq!(record["resource_scopes"][1]["id"], "production");
    assert_eq!(
        record["reasons"][0],
        "deploy-agent-updates-config-under-approval"
    );
    assert_eq!(record["request_id"], "req-7");
    assert_eq!(record["context"]["justification"], "rollout");
    assert_eq!(record["context"]["token"], "***", "masked");
    assert!(record["caller"].as_str().unwrap().starts_with("127.0.0.1:"));
    let (_, text) = log(data.path(), &["show", &answer.decision_id]);
    assert!(text.contains("owner      Alice Martin"), "{text}");
    let (_, text) = log(
        data.path(),
        &["search", "--approval", "CHG-1042", "--decision", "allow"],
    );
    assert!(
        text.contains(&answer.decision_id) && text.contains("1 decision"),
        "{text}"
    );
}

#[tokio::test]
async fn a_sigkill_under_load_loses_no_acknowledged_decision() {
    let server = Server::start(&[]);
    let url = server.url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for worker in 0..8 {
        let url = url.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut client = warrant_proto::authorizer_client::AuthorizerClient::connect(url)
                .await
                .unwrap();
            let mut acknowledged = Vec::new();
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let mut ask = pipeline_read("Dataset::sales-2026");
                ask.context =
                    context(serde_json::json!({"justification": format!("{worker}-{n}")}));
                match client.check(ask).await {
                    Ok(answer) => acknowledged.push(answer.into_inner().decision_id),
                    Err(_) => break, // the server is gone
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let data = server.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    assert!(
        acknowledged.len() > 50,
        "only {} decisions before the kill",
        acknowledged.len()
    );

    // The durable writer laid zeros ahead of its records, so that each batch's fdatasync
    // overwrites blocks the file has; the kill left them. A torn last write, as a crash in the
    // middle of one would leave: over those zeros.
    let segment = segment(data.path());
    let bytes = std::fs::read(&segment).unwrap();
    let records_end = bytes
        .iter()
        .position(|&b| b == 0)
        .expect("zeros laid ahead");
    assert!(bytes[records_end..].iter().all(|&b| b == 0));
    assert_eq!(bytes[records_end - 1], b'\n');
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"{\"entry\":{\"seq\":", records_end as u64)
        .unwrap();
    drop(file);
    // `verify` of the crashed ledger names the torn write.
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(!ok && text.contains("torn"), "{text}");

    // The restarted server cuts the torn write and carries on from a sound chain.
    let restarted = Server::restart_in(data);
    let answer = restarted
        .client()
        .await
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap();
    acknowledged.push(answer.into_inner().decision_id);
    let data = restarted.kill();
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(ok, "{text}");
    let (ok, text) = log(
        data.path(),
        &["search", "--output", "json", "--limit", "1000000"],
    );
    assert!(ok, "{text}");
    let recorded: std::collections::HashSet<String> =
        serde_json::from_str::<Vec<serde_json::Value>>(&text)
            .unwrap()
            .into_iter()
            .map(|r| r["decision_id"].as_str().unwrap().to_owned())
            .collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged decisions are not in the ledger",
        lost.len(),
        acknowledged.len()
    );
}

#[tokio::test]
async fn a_ledger_that_cannot_be_written_makes_checks_deny_and_keeps_what_it_had() {
    // Every batch starts a new segment, so the next one's name is known: make it /dev/full.
    let server = Server::start(&["--ledger-segment-bytes", "1"]);
    let mut client = server.client().await;
    let ask = || pipeline_read("Dataset::sales-2026");
    for _ in 0..3 {
        assert_eq!(
            client.check(ask()).await.unwrap().into_inner().decision(),
            Decision::Allow
        );
    }
    let next = server
        .ledger_dir()
        .join("ledger")
        .join(format!("segment-{:020}.jsonl", 4));
    std::os::unix::fs::symlink("/dev/full", &next).unwrap();
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status =
        |s: i32| tonic_health::pb::health_check_response::ServingStatus::try_from(s).unwrap();
    let overall = HealthCheckRequest {
        service: String::new(),
    };
    assert_eq!(
        status(
            health
                .check(overall.clone())
                .await
                .unwrap()
                .into_inner()
                .status
        ),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    for _ in 0..2 {
        let answer = client.check(ask()).await.unwrap().into_inner();
        assert_eq!(answer.decision(), Decision::Deny);
        assert_eq!(answer.reasons, ["warrant:ledger-unavailable"]);
    }
    assert_eq!(
        status(health.check(overall).await.unwrap().into_inner().status),
        tonic_health::pb::health_check_response::ServingStatus::NotServing
    );
    // The HTTP readiness probe says the same, for orchestrators that prefer HTTP.
    let (code, body) =
        crate::common::http_get(&format!("{}/readyz", crate::common::metrics_base(&server))).await;
    assert_eq!(code, 503, "{body}");
    // And the shell's probe: not ready (5), though alive.
    let probe = |live: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_warrant"))
            .args(["health", "--server", &server.url()])
            .args(live)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (output.status.code(), said)
    };
    assert_eq!(probe(&[]), (Some(5), "NOT_SERVING".to_owned()));
    assert_eq!(probe(&["--live"]), (Some(0), "NOT_SERVING".to_owned()));
    let data = server.kill();
    std::fs::remove_file(&next).unwrap();
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(ok && text.starts_with("ok: 3 records"), "{text}");
}

#[tokio::test]
async fn the_async_ledger_records_too() {
    let server = Server::start(&["--ledger", "async", "--ledger-checkpoint-ms", "100"]);
    let mut client = server.client().await;
    for n in 0..5 {
        client
            .check(pipeline_read("Dataset::sales-2026"))
            .await
            .unwrap();
        if n == 0 {
            // The first record is written alone (an async batch gathers for half a
            // millisecond): the head it publishes covers it and not the four after it.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // The writer seals what it has after 100 ms idle.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let data = server.kill();
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(
        // One as the first record was written (so there is always a head), one at the seal.
        ok && text.starts_with("ok: 5 records, 2 checkpoints, 0 records after"),
        "{text}"
    );
}

#[tokio::test]
async fn tools_look_decisions_up_over_grpc() {
    use warrant_proto::decision_log_client::DecisionLogClient;
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let dataset = if i == 2 {
            "Dataset::salaries"
        } else {
            "Dataset::sales-2026"
        };
        let answer = client
            .check(request("ApiKey::pipeline-etl", "read", dataset, ""))
            .await
            .unwrap();
        ids.push(answer.into_inner().decision_id);
    }
    // The ledger is served on the admin listener only, behind the admin token.
    let on_check_port = DecisionLogClient::connect(server.url())
        .await
        .unwrap()
        .get_decision(warrant_proto::GetDecisionRequest {
            decision_id: ids[2].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(on_check_port.code(), tonic::Code::Unimplemented);
    let mut log = server.decision_log_client().await;

    let found = log
        .get_decision(warrant_proto::GetDecisionRequest {
            decision_id: ids[2].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((found.seq, found.decision.as_str()), (3, "DENY"));
    let record: serde_json::Value = serde_json::from_str(&found.record_json).unwrap();
    assert_eq!(record["reasons"][0], "dataset-outside-identity-scopes");
    assert_eq!(record["owner"]["name"], "Dave Schmidt");
    let missing = log
        .get_decision(warrant_proto::GetDecisionRequest {
            decision_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Pages of two, allows only: 4 records over two pages.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = log
            .list_decisions(warrant_proto::ListDecisionsRequest {
                decision: Decision::Allow as i32,
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.records.into_iter().map(|r| r.decision_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let allowed: Vec<_> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(seen, allowed);
}

#[tokio::test]
async fn a_cache_hit_is_recorded_with_the_evaluations_whole_evidence_and_its_own_fields() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut ask = deploy("CHG-1042");
    ask.context = context(serde_json::json!({"justification": "rollout", "token": "s3cr3t"}));
    let mut answers = Vec::new();
    for request_id in ["first", "second", "third"] {
        ask.request_id = request_id.into();
        answers.push(client.check(ask.clone()).await.unwrap().into_inner());
    }
    let mut records = Vec::new();
    for answer in &answers {
        records.push(server.record(&answer.decision_id).await);
    }
    let own = ["caller", "decision_id", "request_id", "time", "trace_id"];
    let evidence = |record: &serde_json::Value| {
        let mut record = record.as_object().unwrap().clone();
        for field in own.iter().chain(&["answered_from_cache"]) {
            record.remove(*field);
        }
        record
    };
    assert_eq!(records[0]["answered_from_cache"], false);
    for (hit, answer) in records[1..].iter().zip(&answers[1..]) {
        assert_eq!(hit["answered_from_cache"], true);
        assert_eq!(hit["evaluation_id"], records[0]["decision_id"]);
        assert_eq!(hit["decision_id"], answer.decision_id.as_str());
        assert_eq!(evidence(hit), evidence(&records[0]));
    }
    assert_eq!(records[1]["request_id"], "second");
    assert_eq!(records[2]["request_id"], "third");
    assert_eq!(records[2]["context"]["token"], "***", "masked");
    // Each hit's bytes on disk chain and verify like an evaluated record's.
    let data = server.kill();
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(ok && text.starts_with("ok: 3 records"), "{text}");
}

#[tokio::test]
async fn a_graceful_stop_seals_every_record() {
    let server = Server::start(&[]);
    read_sales(&server, 3).await;
    // Waiting for the process blocks: off the test's runtime, which must close the connection.
    let data = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(
        ok && text.starts_with("ok: 3 records, 3 checkpoints, 0 records after"),
        "{text}"
    );
    // `log search --since` takes a length back from now as well as a time.
    let found = |since: &str| {
        let (ok, text) = log(
            data.path(),
            &["search", "--output", "json", "--since", since],
        );
        assert!(ok, "{text}");
        serde_json::from_str::<Vec<serde_json::Value>>(&text)
            .unwrap()
            .len()
    };
    assert_eq!(
        (found("1h"), found("0s"), found("2000-01-01T00:00:00Z")),
        (3, 0, 3)
    );
    let (ok, text) = log(data.path(), &["search", "--since", "2x"]);
    assert!(!ok && text.contains("--since"), "{text}");
    // The zeros laid ahead of the records are cut when the writer stops.
    let bytes = std::fs::read(segment(data.path())).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'));
    assert!(!bytes.contains(&0));
}

#[tokio::test]
async fn a_ledger_written_before_records_grew_new_fields_still_verifies_and_grows() {
    // tests/fixtures/ledger-before-max-uses: one decision and a checkpoint, written by Warrant
    // before approval records had `max_uses` and `use_number`. What a line's hash covers is the
    // line as written, so a field added since must not make it read as edited.
    let data = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-before-max-uses/ledger");
    std::fs::create_dir(data.path().join("ledger")).unwrap();
    for file in std::fs::read_dir(fixture).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(
            &file,
            data.path().join("ledger").join(file.file_name().unwrap()),
        )
        .unwrap();
    }
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(
        ok && text.starts_with("ok: 1 records, 1 checkpoints"),
        "{text}"
    );

    let server = Server::restart_in(data);
    let answer = server
        .client()
        .await
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap()
        .into_inner();
    let data = server.terminate();
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(ok && text.starts_with("ok: 2 records"), "{text}");
    let (ok, text) = log(data.path(), &["show", &answer.decision_id]);
    assert!(ok, "{text}");
}

#[tokio::test]
async fn a_live_tail_follows_decisions_as_they_are_recorded() {
    let server = Server::start(&[]);
    let mut log = server.decision_log_client().await;
    let mut denials = log
        .tail_decisions(warrant_proto::TailDecisionsRequest {
            decision: Decision::Deny as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut client = server.client().await;
    client
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap();
    let denied = client
        .check(pipeline_read("Dataset::salaries"))
        .await
        .unwrap()
        .into_inner();
    client.check(deploy("CHG-1042")).await.unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), denials.message())
        .await
        .expect("a denial arrives")
        .unwrap()
        .unwrap();
    assert_eq!(first.decision_id, denied.decision_id);
    assert_eq!(first.decision, "DENY");
    let record: serde_json::Value = serde_json::from_str(&first.record_json).unwrap();
    assert_eq!(record["reasons"][0], "dataset-outside-identity-scopes");

    // The shell: one readable line per decision, filtered.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(["log", "tail", "--decision", "deny", "--action", "read"])
        .env("WARRANT_ADMIN", format!("http://{}", server.admin))
        .env("WARRANT_DATA_DIR", server.data.path())
        .env_remove("WARRANT_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = sender.send(line);
        }
    });
    // Until the tail has subscribed, decisions pass it by: keep deciding until a line arrives.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let line = loop {
        client.check(deploy("")).await.unwrap();
        client
            .check(pipeline_read("Dataset::salaries"))
            .await
            .unwrap();
        if let Ok(line) = lines.recv_timeout(std::time::Duration::from_millis(100)) {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tail printed nothing"
        );
    };
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(
        line.contains(" DENY  ApiKey::pipeline-etl read Dataset::salaries because dataset-outside-identity-scopes"),
        "{line}"
    );
}

/// A small tmpfs mounted for the life of the value (root only), so that a disk fills up halfway
/// through a batch.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, bytes: usize) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(at)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_disk_that_fills_mid_batch_leaves_no_record_saying_allow_for_a_deny() {
    let data = tempfile::tempdir().unwrap();
    let Some(_disk) = SmallDisk::mount(&data.path().join("ledger"), 96 * 1024) else {
        // Mounting needs root (as CI runs); elsewhere this test has nothing to stand on.
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let policies = crate::common::bundled_policies();
    let server = Server::start_in(
        data,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policies",
            policies.to_str().unwrap(),
            "--no-cache",
        ],
    )
    .unwrap();
    // Sixteen callers at once, each record a few KiB, until the disk is full.
    let mut tasks = Vec::new();
    for caller in 0..16 {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..40 {
                let mut ask = pipeline_read("Dataset::sales-2026");
                ask.context = context(serde_json::json!({
                    "justification": format!("{caller}-{n}-{}", "x".repeat(3000))
                }));
                answers.push(client.check(ask).await.unwrap().into_inner());
            }
            answers
        }));
    }
    let mut allowed = std::collections::HashSet::new();
    let mut refused = 0;
    for task in tasks {
        for answer in task.await.unwrap() {
            if answer.decision() == Decision::Allow {
                allowed.insert(answer.decision_id);
            } else {
                assert_eq!(answer.reasons, ["warrant:ledger-unavailable"]);
                refused += 1;
            }
        }
    }
    assert!(refused > 0 && !allowed.is_empty(), "the disk never filled");
    let data = server.kill();
    // Every ALLOW on disk was answered ALLOW, and the chain verifies.
    for line in std::fs::read_dir(data.path().join("ledger"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("segment-"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .trim_end_matches('\0')
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
    {
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(record) = line["entry"].get("record")
            && record["decision"] == "ALLOW"
        {
            assert!(
                allowed.contains(record["decision_id"].as_str().unwrap()),
                "on record as ALLOW but answered DENY: {}",
                record["decision_id"]
            );
        }
    }
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(ok, "{text}");
}

/// Runs `warrant log` with exactly these arguments (no key added): (exit code, output).
fn log_raw(data: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(["log", "--data-dir", data.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

/// Appends to the last segment a record that follows the chain correctly (right sequence,
/// right `prev`, right hash) but that Warrant never wrote: an ALLOW, by someone who can write
/// the folder but does not hold the signing key.
fn forge_allow(data: &Path) -> String {
    use sha2::Digest as _;
    let segment = segment(data);
    let text = std::fs::read_to_string(&segment).unwrap();
    // The forger writes where the records end, over any zeros laid ahead of them.
    let text = text.trim_end_matches('\0');
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(text.len() as u64).unwrap();
    drop(file);
    let last: serde_json::Value = text
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l.get("entry").is_some())
        .unwrap();
    let mut entry = last["entry"].clone();
    entry["seq"] = serde_json::json!(entry["seq"].as_u64().unwrap() + 1);
    entry["record"]["decision"] = serde_json::json!("ALLOW");
    let forged_id = "01a2ffff-0000-7000-8000-000000000001";
    entry["record"]["decision_id"] = serde_json::json!(forged_id);
    entry["record"]["reasons"] = serde_json::json!(["forged"]);
    let prev = last["hash"].as_str().unwrap().to_owned();
    let mut hasher = sha2::Sha256::new();
    hasher.update(hex::decode(&prev).unwrap());
    hasher.update(serde_json_canonicalizer::to_vec(&entry).unwrap());
    let hash = hex::encode(hasher.finalize());
    let line = serde_json::json!({"entry": entry, "hash": hash, "prev": prev});
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    std::io::Write::write_all(
        &mut file,
        format!("{}\n", serde_json_canonicalizer::to_string(&line).unwrap()).as_bytes(),
    )
    .unwrap();
    forged_id.to_owned()
}

#[tokio::test]
async fn a_forged_tail_fails_verify_and_is_never_signed_by_a_restart() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    for _ in 0..3 {
        client
            .check(pipeline_read("Dataset::salaries"))
            .await
            .unwrap();
    }
    drop(client);
    let data = server.kill();
    let forged = forge_allow(data.path());
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(!ok, "a forged tail passed verify:\n{text}");
    assert!(
        text.contains("1 records from record 4 on are not covered by any signed checkpoint"),
        "{text}"
    );
    // The restarted server moves it out instead of signing it with its next checkpoint.
    let server = Server::restart_in(data);
    let missing = server
        .decision_log_client()
        .await
        .get_decision(warrant_proto::GetDecisionRequest {
            decision_id: forged.clone(),
        })
        .await
        .expect_err("the forged record is not in the ledger");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server
        .client()
        .await
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap();
    let data = server.kill();
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(ok && text.starts_with("ok: 4 records"), "{text}");
    let quarantined: Vec<_> = std::fs::read_dir(data.path().join("ledger"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("quarantine-"))
        .collect();
    assert_eq!(quarantined.len(), 1);
    assert!(
        std::fs::read_to_string(&quarantined[0])
            .unwrap()
            .contains(&forged)
    );
}

#[tokio::test]
async fn a_kept_head_catches_a_rollback_and_a_missing_head_or_unpinned_key_fails() {
    let server = Server::start(&[]);
    read_sales(&server, 2).await;
    let data = server.kill();
    // An earlier state of the folder, as an attacker would keep to roll back to.
    let earlier = tempfile::tempdir().unwrap();
    Command::new("cp")
        .arg("-a")
        .arg(data.path().join("ledger"))
        .arg(earlier.path())
        .status()
        .unwrap();
    let server = Server::restart_in(data);
    read_sales(&server, 3).await;
    // The server serves its newest published head (it publishes one every 1,000 records or
    // 5 s, and at a graceful stop).
    let served = server
        .decision_log_client()
        .await
        .get_head(warrant_proto::GetHeadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(served.seq >= 1 && served.head.len() == 64, "{served:?}");
    let data = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    // An auditor keeps the head sealed at the stop.
    let (ok, text) = log(data.path(), &["head"]);
    assert!(ok && text.starts_with("5:"), "{text}");
    let kept = text.lines().next().unwrap().to_owned();
    let (ok, text) = log(data.path(), &["verify", "--expect-head", &kept]);
    assert!(ok, "{text}");
    // The same data folder rolled back to its earlier state, head file and all.
    let key = log_raw(data.path(), &["public-key"]).1.trim().to_owned();
    let (code, text) = log_raw(
        earlier.path(),
        &["verify", "--public-key", &key, "--expect-head", &kept],
    );
    assert_eq!(code, 4, "{text}");
    assert!(text.contains("rolled back"), "{text}");
    // Without the head file, truncation cannot be told: a failure, not a skipped check.
    std::fs::remove_file(data.path().join("ledger/ledger.head")).unwrap();
    let (code, text) = log_raw(data.path(), &["verify", "--public-key", &key]);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains("ledger.head is missing"), "{text}");
    // A key read from the folder under test is not trusted quietly.
    let (code, text) = log_raw(earlier.path(), &["verify"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("UNPINNED"), "{text}");
}

#[tokio::test]
async fn export_streams_signed_records_after_a_cursor_and_follows() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            client
                .check(pipeline_read("Dataset::sales-2026"))
                .await
                .unwrap()
                .into_inner()
                .decision_id,
        );
    }
    let data_dir = server.ledger_dir();
    let lines = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (ok, text) = log(&data_dir, &["export"]);
    assert!(ok, "{text}");
    let all = lines(&text);
    assert_eq!(
        all.iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(all[2]["record"]["decision_id"], ids[2].as_str());
    assert_eq!(all[2]["hash"].as_str().unwrap().len(), 64);
    // Resuming from a cursor gives exactly what follows it.
    let (_, text) = log(&data_dir, &["export", "--after", "2"]);
    assert_eq!(lines(&text).len(), 1);
    assert_eq!(lines(&text)[0]["seq"], 3);
    // Following: new decisions arrive as they are recorded.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(["log", "--data-dir", data_dir.to_str().unwrap()])
        .args(["export", "--after", "3", "--follow", "--poll-ms", "50"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..2 {
        client
            .check(pipeline_read("Dataset::salaries"))
            .await
            .unwrap();
    }
    let stdout = follower.stdout.take().unwrap();
    let followed = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    let followed = tokio::time::timeout(std::time::Duration::from_secs(20), followed)
        .await
        .expect("the follower saw the new records")
        .unwrap();
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(
        followed
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [4, 5]
    );
    assert_eq!(followed[0]["record"]["decision"], "DENY");
    // A record no checkpoint covers (forged here) is never shipped.
    drop(client);
    let data = server.kill();
    let forged = forge_allow(data.path());
    let (_, text) = log(data.path(), &["export", "--after", "4"]);
    assert_eq!(lines(&text).len(), 1, "{text}");
    assert!(!text.contains(&forged));
}

#[tokio::test]
async fn sealed_segments_are_found_by_their_index_files_and_a_restart_reads_only_the_tail() {
    // One segment per batch: every decision but the last lands in a sealed segment.
    let server = Server::start(&["--ledger-segment-bytes", "1"]);
    let ids = read_sales(&server, 6).await;
    let mut log_client = server.decision_log_client().await;
    for id in &ids {
        let found = log_client
            .get_decision(warrant_proto::GetDecisionRequest {
                decision_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(found.record_json.contains(id.as_str()));
    }
    let data = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let ledger = data.path().join("ledger");
    let indexes = std::fs::read_dir(&ledger)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "idx")
        })
        .count();
    assert!(indexes >= 5, "{indexes} index files");
    // A lost index file is derived data: rebuilt at the next start.
    let first_index = ledger.join(format!("segment-{:020}.idx", 1));
    std::fs::remove_file(&first_index).unwrap();
    let server = Server::restart_in(data);
    assert!(first_index.exists());
    let mut log_client = server.decision_log_client().await;
    for id in &ids {
        log_client
            .get_decision(warrant_proto::GetDecisionRequest {
                decision_id: id.clone(),
            })
            .await
            .unwrap();
    }
    // Pages start from the segment that holds the cursor.
    let page = log_client
        .list_decisions(warrant_proto::ListDecisionsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let next = log_client
        .list_decisions(warrant_proto::ListDecisionsRequest {
            page_size: 10,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.records.len() + next.records.len(), 6);
    // A position written by hand is not a page token.
    let refused = log_client
        .list_decisions(warrant_proto::ListDecisionsRequest {
            page_size: 10,
            page_token: "1".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let data = server.kill();
    // The restart trusted the sealed segments before the signed head; full verification still
    // reads them all and catches an edit there.
    let first = ledger_segment(data.path(), 1);
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(&first, text.replacen("sales-2026", "sales-2027", 1)).unwrap();
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(!ok && text.contains("record 1 was edited"), "{text}");
}

fn ledger_segment(data: &Path, first_seq: u64) -> PathBuf {
    data.join("ledger")
        .join(format!("segment-{first_seq:020}.jsonl"))
}

#[tokio::test]
async fn archived_segments_verify_alone_and_joined_and_the_ledger_restarts_from_the_cut() {
    let server = Server::start(&["--ledger-segment-bytes", "1"]);
    let ids = read_sales(&server, 5).await;
    let data = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let archive = tempfile::tempdir().unwrap();
    let (ok, text) = log(
        data.path(),
        &[
            "archive",
            "--before",
            "2999-01-01T00:00:00Z",
            "--to",
            archive.path().to_str().unwrap(),
        ],
    );
    assert!(
        ok && text.starts_with("archived 4 segments (records 1 to 4)"),
        "{text}"
    );
    let key = log_raw(data.path(), &["public-key"]).1.trim().to_owned();
    // The ledger alone, from its anchor; the archive alone; both joined.
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(ok && text.starts_with("ok: 1 records"), "{text}");
    // The head is named by its sequence number, as `warrant log head` names it.
    let head = log_raw(data.path(), &["head"]).1;
    let head = head.lines().next().unwrap();
    assert!(head.starts_with("5:"), "{head}");
    assert!(text.contains(&format!(", head {head}")), "{text} / {head}");
    let (code, text) = log_raw(archive.path(), &["verify", "--public-key", &key]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("ok: 4 records"), "{text}");
    let (code, text) = log_raw(
        data.path(),
        &[
            "verify",
            "--public-key",
            &key,
            "--archive",
            archive.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("ok: 5 records"), "{text}");
    // The restarted ledger goes on from the cut.
    let server = Server::restart_in(data);
    let answer = server
        .client()
        .await
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap()
        .into_inner();
    let mut log_client = server.decision_log_client().await;
    log_client
        .get_decision(warrant_proto::GetDecisionRequest {
            decision_id: answer.decision_id.clone(),
        })
        .await
        .unwrap();
    let gone = log_client
        .get_decision(warrant_proto::GetDecisionRequest {
            decision_id: ids[0].clone(),
        })
        .await
        .expect_err("archived");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let data = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let (ok, text) = log(data.path(), &["verify"]);
    assert!(ok && text.starts_with("ok: 2 records"), "{text}");
    let (code, text) = log_raw(
        data.path(),
        &[
            "verify",
            "--public-key",
            &key,
            "--archive",
            archive.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("ok: 6 records"), "{text}");
    // An edit in the archive is caught when joined too.
    let first = ledger_segment(archive.path(), 1);
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(&first, text.replacen("sales-2026", "sales-2027", 1)).unwrap();
    let (code, text) = log_raw(
        data.path(),
        &[
            "verify",
            "--public-key",
            &key,
            "--archive",
            archive.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 4, "{text}");
}

#[tokio::test]
async fn retention_archives_what_the_settings_no_longer_keep() {
    let server = Server::start(&["--ledger-segment-bytes", "1"]);
    read_sales(&server, 4).await;
    let data = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let archives = tempfile::tempdir().unwrap();
    let policies = crate::common::bundled_policies();
    // Keep no more than one byte: every sealed segment goes, the one being written stays.
    let server = Server::start_in(
        data,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policies",
            policies.to_str().unwrap(),
            "--ledger-retain-bytes",
            "1",
            "--ledger-archive-dir",
            archives.path().to_str().unwrap(),
        ],
    )
    .unwrap();
    let mut moved = 0.0;
    for _ in 0..100 {
        moved = crate::common::value(
            &crate::common::scrape(&server).await,
            "warrant_ledger_archived_segments_total",
            &[],
        );
        if moved > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(moved, 3.0);
    let data = server.kill();
    let archive = std::fs::read_dir(archives.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let key = log_raw(data.path(), &["public-key"]).1.trim().to_owned();
    let (code, text) = log_raw(&archive, &["verify", "--public-key", &key]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = log_raw(
        data.path(),
        &[
            "verify",
            "--public-key",
            &key,
            "--archive",
            archive.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("ok: 4 records"), "{text}");
    // Retention needs somewhere to put what it moves: it never deletes.
    let refused = Server::start_with(&["serve", "--ledger-retain-hours", "24"])
        .err()
        .expect("refused");
    assert!(refused.contains("ledger_archive_dir"), "{refused}");
}

/// `count` Checks (reads of Dataset::sales-2026, allowed) on `server`; their decision ids.
async fn read_sales(server: &Server, count: usize) -> Vec<String> {
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(
            client
                .check(pipeline_read("Dataset::sales-2026"))
                .await
                .unwrap()
                .into_inner()
                .decision_id,
        );
    }
    ids
}

#[tokio::test]
async fn a_quiet_live_tail_outlives_the_idle_timeout() {
    let server = Server::start(&["--idle-timeout-ms", "300", "--http2-keepalive-ms", "100"]);
    let mut tail = server
        .decision_log_client()
        .await
        .tail_decisions(warrant_proto::TailDecisionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Nothing is decided for several idle timeouts: the keepalive pings keep the stream open.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    read_sales(&server, 1).await;
    let record = tokio::time::timeout(std::time::Duration::from_secs(10), tail.message())
        .await
        .expect("the tail is still open")
        .unwrap()
        .expect("a decision");
    assert!(record.record_json.contains("sales-2026"));
}
