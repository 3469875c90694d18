//! What every call to a decision service on the Check listener passes through, around its
//! handler: the server's time limit, the count of every call by its final gRPC status (deadline
//! exceeded and cancelled included) with its latency, and a recorded refusal for every call that
//! ends before its handler could decide (bytes that are not protobuf or not UTF-8, a message over
//! the size limit, a time-out). For Envoy's ext_authz such a call is answered with an OK-status
//! deny, never a gRPC error, so that `failure_mode_allow` cannot turn it into an allow.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::FutureExt as _;
use http_body_util::BodyExt as _;
use tonic::body::Body;
use tonic::server::NamedService;

use crate::api::decider::Decider;
use crate::api::envoy::{self, DECISION_ID_HEADER};
use crate::observability::metrics::Api;
use crate::observability::traces::{self, TraceHeaders};
use warrant_domain::Reason;

/// Which service an `Edge` wraps: how its refusals are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answers {
    /// A gRPC status: INVALID_ARGUMENT for unreadable bytes, DEADLINE_EXCEEDED for time-outs.
    Status,
    /// An OK-status Envoy `CheckResponse` that denies.
    EnvoyDeny,
}

/// A decision service with Warrant's edge rules around it.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    decider: Arc<Decider>,
    timeout: Duration,
    answers: Answers,
}

impl<S> Edge<S> {
    /// `warrant.v1.Authorizer`.
    pub fn authorizer(inner: S, decider: Arc<Decider>, timeout: Duration) -> Self {
        Edge {
            inner,
            decider,
            timeout,
            answers: Answers::Status,
        }
    }

    /// Envoy's `envoy.service.auth.v3.Authorization`.
    pub fn ext_authz(inner: S, decider: Arc<Decider>, timeout: Duration) -> Self {
        Edge {
            inner,
            decider,
            timeout,
            answers: Answers::EnvoyDeny,
        }
    }
}

impl<S: NamedService> NamedService for Edge<S> {
    const NAME: &'static str = S::NAME;
}

/// The API a call's path belongs to; `None` for calls that decide nothing (Ping).
fn api_of(path: &str) -> Option<Api> {
    match path.rsplit('/').next() {
        Some("Check") if path.starts_with("/envoy.") => Some(Api::ExtAuthz),
        Some("Check") => Some(Api::Check),
        Some("BatchCheck") => Some(Api::BatchCheck),
        _ => None,
    }
}

/// Counts a call while it is in flight, and once when it ends: answered with the code it was
/// given, or dropped because the caller went away (CANCELLED) or its deadline passed
/// (DEADLINE_EXCEEDED), each with its latency.
pub(crate) struct CallGuard {
    decider: Arc<Decider>,
    api: Api,
    started: Instant,
    client_deadline: Option<Duration>,
    code: Option<tonic::Code>,
}

impl CallGuard {
    pub(crate) fn start(
        decider: Arc<Decider>,
        api: Api,
        client_deadline: Option<Duration>,
    ) -> Self {
        decider.metrics().call_started(api);
        CallGuard {
            decider,
            api,
            started: Instant::now(),
            client_deadline,
            code: None,
        }
    }

    /// The call's final status.
    pub(crate) fn answered(&mut self, code: tonic::Code) {
        self.code = Some(code);
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let code = self.code.unwrap_or_else(|| {
            if self
                .client_deadline
                .is_some_and(|deadline| elapsed >= deadline)
            {
                tonic::Code::DeadlineExceeded
            } else {
                tonic::Code::Cancelled
            }
        });
        let metrics = self.decider.metrics();
        metrics.call_ended(self.api);
        metrics.answered(self.api, code);
        metrics.latency(self.api, elapsed);
    }
}

/// The client's deadline from `grpc-timeout` (e.g. `200m`), if it sent one.
fn client_deadline(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

impl<S> tower::Service<http::Request<Body>> for Edge<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let decider = Arc::clone(&self.decider);
        let timeout = self.timeout;
        let answers = self.answers;
        let Some(api) = api_of(request.uri().path()) else {
            return Box::pin(async move {
                tokio::time::timeout(timeout, inner.call(request))
                    .await
                    .unwrap_or_else(|_| Ok(tonic::Status::deadline_exceeded("").into_http()))
            });
        };
        // Kept for a refusal's record; formatted only if there is one.
        let caller = request
            .extensions()
            .get::<crate::listeners::PeerInfo>()
            .map(crate::listeners::PeerInfo::caller)
            .unwrap_or_default();
        let trace = TraceHeaders::from_http(request.headers());
        let guard = CallGuard::start(
            Arc::clone(&decider),
            api,
            client_deadline(request.headers()),
        );
        Box::pin(async move {
            // Moved in whole (not field by field), so that it drops when the call ends.
            let mut guard = guard;
            // A handler that panics (an overflow check, say) is a refusal like any other, not a
            // reset stream that a gateway might fail open on.
            let handled = std::panic::AssertUnwindSafe(inner.call(request)).catch_unwind();
            let answered = match tokio::time::timeout(timeout, handled).await {
                Ok(Ok(answered)) => Ok(answered),
                Ok(Err(_panic)) => Err(Reason::InternalError.as_str()),
                Err(_elapsed) => Err(Reason::TimedOut.as_str()),
            };
            let (why, code, detail) = match answered {
                Ok(Ok(response)) => match tonic::Status::from_header_map(response.headers()) {
                    // Answered by the handler, which recorded its decision or refusal.
                    None => {
                        guard.answered(tonic::Code::Ok);
                        return Ok(response);
                    }
                    Some(status)
                        if status.code() == tonic::Code::Ok
                            || response.headers().contains_key(DECISION_ID_HEADER) =>
                    {
                        guard.answered(status.code());
                        return Ok(response);
                    }
                    // Refused before the handler ran: the bytes could not be read. A decoding
                    // failure is the caller's (tonic says INTERNAL); a size limit keeps its
                    // OUT_OF_RANGE.
                    Some(status) => (
                        Reason::MalformedRequest.as_str(),
                        match status.code() {
                            tonic::Code::Internal => tonic::Code::InvalidArgument,
                            code => code,
                        },
                        format!("{:?}: {}", status.code(), status.message()),
                    ),
                },
                Err(why) if why == Reason::InternalError.as_str() => {
                    tracing::error!("a decision handler panicked; the call is refused");
                    (
                        why,
                        tonic::Code::Internal,
                        "the request could not be decided".to_owned(),
                    )
                }
                Err(why) => (
                    why,
                    tonic::Code::DeadlineExceeded,
                    format!("no answer within {} ms", timeout.as_millis()),
                ),
            };
            let span = traces::api_span(
                match api {
                    Api::ExtAuthz => "ext_authz",
                    Api::BatchCheck => "batch_check",
                    _ => "check",
                },
                &trace,
            );
            let trace_id = traces::trace_id(&span, &trace);
            tracing::debug!(parent: &span, reason = why, detail, "refused before a decision");
            // Recorded like any decision, but never waited on past the time limit: a ledger
            // that hangs must not hold the caller (a refusal is a deny either way).
            let mut recorded = [decider.refusal(
                api,
                &warrant_domain::CheckRequest::default(),
                why,
                Some(detail.clone()),
            )];
            let recording = decider.record(api, &mut recorded, caller, trace_id);
            if tokio::time::timeout(timeout, recording).await.is_err() {
                tracing::warn!(
                    reason = why,
                    "a refusal was not recorded within the time limit; answered anyway"
                );
            }
            let [(_, decision)] = recorded;
            let decision_id = decision.decision_id.to_string();
            let response = match answers {
                Answers::EnvoyDeny => {
                    guard.answered(tonic::Code::Ok);
                    // 400 for bytes the client sent that cannot be read; 403 otherwise.
                    let http = if why == Reason::MalformedRequest.as_str() {
                        envoy_types::ext_authz::v3::pb::HttpStatusCode::BadRequest
                    } else {
                        envoy_types::ext_authz::v3::pb::HttpStatusCode::Forbidden
                    };
                    let answer = envoy::denied(
                        tonic::Code::PermissionDenied,
                        http,
                        Some(&decision_id),
                        &[why],
                        None,
                    );
                    ok_response(&answer)
                }
                Answers::Status => {
                    guard.answered(code);
                    with_decision_id(tonic::Status::new(code, detail), &decision_id).into_http()
                }
            };
            Ok(response)
        })
    }
}

/// `status` with the refusal's decision id in its metadata, as every recorded refusal carries.
pub fn with_decision_id(status: tonic::Status, decision_id: &str) -> tonic::Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Ok(value) = decision_id.parse() {
        metadata.insert(DECISION_ID_HEADER, value);
    }
    tonic::Status::with_metadata(status.code(), status.message(), metadata)
}

/// A unary gRPC answer with status OK carrying `message`.
fn ok_response(message: &impl prost::Message) -> http::Response<Body> {
    let encoded = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + encoded.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(encoded.len()).unwrap_or(u32::MAX));
    frame.put_slice(&encoded);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = http_body_util::Full::new(Bytes::from(frame))
        .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
    let mut response = http::Response::new(Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let deadline = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            client_deadline(&headers)
        };
        assert_eq!(deadline("200m"), Some(Duration::from_millis(200)));
        assert_eq!(deadline("2S"), Some(Duration::from_secs(2)));
        assert_eq!(deadline("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(deadline("x"), None);
        assert_eq!(deadline(""), None);
    }

    #[test]
    fn calls_are_told_apart_by_their_path() {
        assert!(matches!(
            api_of("/envoy.service.auth.v3.Authorization/Check"),
            Some(Api::ExtAuthz)
        ));
        assert!(matches!(
            api_of("/warrant.v1.Authorizer/Check"),
            Some(Api::Check)
        ));
        assert!(matches!(
            api_of("/warrant.v1.Authorizer/BatchCheck"),
            Some(Api::BatchCheck)
        ));
        assert!(api_of("/warrant.v1.Authorizer/Ping").is_none());
    }
}
