//! Logs and traces: the `tracing` subscriber (human-readable or JSON logs on stderr, level from
//! `RUST_LOG`) and, when an OTLP endpoint is configured through the standard `OTEL_*`
//! variables, export of Warrant's spans over OTLP/gRPC. Also reads the caller's W3C trace
//! context (`traceparent`, `tracestate`) so a decision's span joins the caller's trace.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, filter::Targets};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// What must be flushed before the process exits.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: could not flush the trace exporter: {error}");
        }
    }
}

/// Whether the environment asks for OTLP export: an endpoint is set, and the SDK is not disabled.
fn otlp_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Installs the global subscriber. Call inside the tokio runtime (the exporter needs it).
/// Without an OTLP endpoint nothing but logs is set up, and the decision spans (at `debug`) cost
/// nothing unless `RUST_LOG` asks for them.
pub fn init(format: LogFormat) -> anyhow::Result<Tracing> {
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(env_filter);
    if !otlp_configured() {
        tracing_subscriber::registry().with(logs).try_init()?;
        return Ok(Tracing { provider: None });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up the OTLP span exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("warrant");
    }
    // The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (the SDK reads them).
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("warrant"))
        .with_filter(Targets::new().with_target("warrant", tracing::Level::DEBUG));
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()?;
    Ok(Tracing {
        provider: Some(provider),
    })
}

/// The W3C trace context headers a caller sent, by lower-case name.
#[derive(Debug, Clone, Default)]
pub struct TraceHeaders(HashMap<String, String>);

impl TraceHeaders {
    /// Picks `traceparent` and `tracestate` out of any headers or metadata.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        TraceHeaders(
            pairs
                .into_iter()
                .filter(|(name, _)| {
                    name.eq_ignore_ascii_case("traceparent")
                        || name.eq_ignore_ascii_case("tracestate")
                })
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
                .collect(),
        )
    }

    /// The same from HTTP headers: two lookups, whatever else the request carries.
    pub fn from_http(headers: &http::HeaderMap) -> Self {
        Self::from_pairs(
            ["traceparent", "tracestate"]
                .into_iter()
                .filter_map(|name| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| (name, v))
                }),
        )
    }

    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Self {
        Self::from_pairs(
            ["traceparent", "tracestate"]
                .into_iter()
                .filter_map(|name| {
                    metadata
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| (name, v))
                }),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trace id of a valid `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), lower-case.
    fn trace_id(&self) -> Option<String> {
        let parent = self.0.get("traceparent")?;
        let mut parts = parent.trim().split('-');
        let (version, trace_id, span_id) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && hex(span_id, 16);
        valid.then(|| trace_id.to_ascii_lowercase())
    }
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// A span for one call of an API, the child of the caller's span when it sent one. Decisions
/// made while it is entered are its children.
pub fn api_span(api: &'static str, headers: &TraceHeaders) -> tracing::Span {
    let span = tracing::debug_span!("warrant.decide", api, otel.kind = "server");
    if !headers.is_empty() && !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(headers);
        let _ = span.set_parent(parent);
    }
    span
}

/// The trace a call's decisions belong to, for the ledger: the exported span's trace (the
/// caller's, or a new one), else the caller's `traceparent`, else none.
pub fn trace_id(span: &tracing::Span, headers: &TraceHeaders) -> Option<String> {
    if span.is_disabled() {
        return headers.trace_id();
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        return Some(span_context.trace_id().to_string());
    }
    headers.trace_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_gives_the_trace_id_only_when_well_formed() {
        let id = |value: &str| TraceHeaders::from_pairs([("TraceParent", value)]).trace_id();
        assert_eq!(
            id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            id("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(id("00-4bf92f35-00f067aa0ba902b7-01"), None);
        assert_eq!(id("garbage"), None);
        assert_eq!(TraceHeaders::default().trace_id(), None);
    }
}
