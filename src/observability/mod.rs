//! What an SRE watches: the Prometheus metrics (`metrics`: counters, latency histograms, the
//! exposition and the metrics listener's routes) and the decision traces (`traces`: tracing
//! spans, the OTLP exporter, W3C trace context from callers).

pub mod metrics;
mod scrape;
pub mod traces;
