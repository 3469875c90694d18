//! Traces against the real server: a small OTLP collector (a tonic server implementing the OTLP
//! trace service) started by the test receives Warrant's spans, inside the caller's trace, with
//! the decision's attributes; the ledger records the trace id, with or without export.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Server, deploy};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves the OTLP trace service on 127.0.0.1:0; returns its endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        format!("http://{addr}")
    }

    /// Every span received so far, with its resource's service name.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut all = Vec::new();
        for request in self.received.lock().unwrap().iter() {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .map(|a| attribute_text(a.value.as_ref()))
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        all.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        all
    }

    /// Waits (up to 20 s) for spans of the trace, until `done` holds of them.
    async fn wait_for(&self, trace: &str, done: impl Fn(&[Span]) -> bool) -> Vec<(String, Span)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<(String, Span)> = self
                .spans()
                .into_iter()
                .filter(|(_, s)| hex::encode(&s.trace_id) == trace)
                .collect();
            let only: Vec<Span> = spans.iter().map(|(_, s)| s.clone()).collect();
            if done(&only) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn attribute_text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(n)) => n.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| attribute_text(a.value.as_ref()))
}

fn with_traceparent<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap(),
    );
    request
}

async fn recorded_trace_id(server: &Server, decision_id: &str) -> serde_json::Value {
    let record = server.record(decision_id).await;
    record["trace_id"].clone()
}

#[tokio::test]
async fn a_decision_is_a_span_inside_the_callers_trace_and_the_ledger_names_the_trace() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let policies = crate::common::bundled_policies();
    let server = Server::start_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policies",
            policies.to_str().unwrap(),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "warrant-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .unwrap();
    let answer = server
        .client()
        .await
        .check(with_traceparent(deploy("CHG-1042")))
        .await
        .unwrap()
        .into_inner();

    let spans = collector
        // The API span ends after the decision span inside it, so it may come in a later batch.
        .wait_for(TRACE_ID, |spans| {
            ["decision", "warrant.decide"]
                .iter()
                .all(|name| spans.iter().any(|s| s.name == *name))
        })
        .await;
    let api = spans
        .iter()
        .find(|(_, s)| s.name == "warrant.decide")
        .unwrap_or_else(|| panic!("no API span in {spans:#?}"));
    assert_eq!(api.0, "warrant-under-test");
    // The caller's span is the parent: the decision appears inside the caller's trace.
    assert_eq!(hex::encode(&api.1.parent_span_id), CALLER_SPAN);
    assert_eq!(attribute(&api.1, "api").as_deref(), Some("check"));
    let (_, decision) = spans.iter().find(|(_, s)| s.name == "decision").unwrap();
    assert_eq!(decision.parent_span_id, api.1.span_id);
    for (key, value) in [
        ("decision", "Allow"),
        ("decision_id", answer.decision_id.as_str()),
        ("principal", "ServiceAccount::\"deploy-bot\""),
        ("action", "update"),
        ("resource", "Config::\"payments-api\""),
        ("cached", "false"),
        (
            "reasons",
            "[\"deploy-agent-updates-config-under-approval\"]",
        ),
        ("error_count", "0"),
        ("policy_version", answer.policy_version.as_str()),
    ] {
        assert_eq!(attribute(decision, key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(
        recorded_trace_id(&server, &answer.decision_id).await,
        TRACE_ID
    );

    // A caller without a trace gets one of Warrant's, and the ledger names it.
    let untraced = server
        .client()
        .await
        .check(deploy("CHG-1042"))
        .await
        .unwrap()
        .into_inner();
    let own_trace = recorded_trace_id(&server, &untraced.decision_id).await;
    let own_trace = own_trace.as_str().expect("a trace id").to_owned();
    assert_ne!(own_trace, TRACE_ID);
    let spans = collector
        .wait_for(&own_trace, |spans| {
            spans.iter().any(|s| s.name == "decision")
        })
        .await;
    let (_, cached) = spans.iter().find(|(_, s)| s.name == "decision").unwrap();
    assert_eq!(attribute(cached, "cached").as_deref(), Some("true"));
}

#[tokio::test]
async fn without_export_the_ledger_still_names_the_callers_trace() {
    let server = Server::start(&[]);
    let answer = server
        .client()
        .await
        .check(with_traceparent(deploy("CHG-1042")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        recorded_trace_id(&server, &answer.decision_id).await,
        TRACE_ID
    );
    // A malformed traceparent is ignored, not recorded.
    let mut request = tonic::Request::new(deploy("CHG-1042"));
    request
        .metadata_mut()
        .insert("traceparent", "00-not-a-trace-01".parse().unwrap());
    let answer = server
        .client()
        .await
        .check(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        recorded_trace_id(&server, &answer.decision_id).await,
        serde_json::Value::Null
    );
}

#[test]
fn logs_can_be_json_lines() {
    use std::io::BufRead as _;
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args([
            "--policies",
            crate::common::bundled_policies().to_str().unwrap(),
        ])
        .args(["--data-dir", data.path().to_str().unwrap()])
        .args([
            "--metrics-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--authzen-listen", "127.0.0.1:0"])
        .args(["--console-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines().map_while(Result::ok) {
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        let message = event["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        seen.push(message.clone());
        if message == "serving warrant.v1.Authorizer" {
            assert_eq!(event["level"], "INFO");
            assert!(
                event["fields"]["bound"]
                    .as_str()
                    .unwrap()
                    .starts_with("127.0.0.1:")
            );
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen.last().map(String::as_str),
        Some("serving warrant.v1.Authorizer"),
        "{seen:?}"
    );
}
