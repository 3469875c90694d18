//! Verified credentials: a JWT a request carries (an OIDC access token, a SPIFFE JWT-SVID, a
//! Kubernetes service account token) checked against the issuers the operator configured: the
//! issuer is known, the algorithm is on its allow-list (asymmetric only: `none` and HMAC are
//! never accepted), the key is in its JWKS (`jwks`: a file or an HTTPS URL, by `kid`), the
//! signature holds, the audience is one it accepts, and the token is within
//! `nbf`..`exp` by the engine's clock, with the issuer's clock skew. The subject then names a
//! principal (`ServiceAccount::{sub}`: the subject is put in as the id, never parsed), which
//! the request must name too. Each failure has its own reason. The token itself is never kept: a
//! SHA-256 of it is. A token verified once is remembered with the key that verified it, and
//! trusted again only while its issuer's set still holds that key: a key withdrawn from a file
//! (watched) or a URL (refreshed) stops its tokens at the next read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::jwks::{HttpsSource, IssuerKeys, JwksSource};
use warrant_domain::clock::UnixMillis;
use warrant_domain::ports::{CredentialVerifier, SeenTokens};
use warrant_domain::{CredentialEvidence, EntityRef, Reason};

/// One issuer whose tokens Warrant accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Its keys, as a JWKS (JSON Web Key Set) file; or else:
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Its keys, as a JWKS fetched from this `https://` URL (e.g. an OIDC `jwks_uri`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The CA certificates (PEM) that the `jwks_url` server's certificate must chain to
    /// [default: the system's].
    #[serde(default)]
    pub jwks_ca: Option<PathBuf>,
    /// How often keys from `jwks_url` are fetched again, in seconds [default: 300]. A token with a
    /// key id not held makes them fetched at once (at most once a second).
    #[serde(default = "default_refresh")]
    pub jwks_refresh_seconds: u64,
    /// The `aud` values accepted (a token must carry one); empty: any.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The algorithms accepted, among RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384,
    /// EdDSA [default: RS256, ES256, EdDSA].
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The principal a token names, with `{sub}` for its subject, e.g. `ServiceAccount::{sub}`.
    pub principal: String,
    /// How far the clocks may disagree, in seconds [default: 60].
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// Its tokens are single-use (workflow and task tokens): each `jti` is accepted once, and
    /// remembered durably until the token expires.
    #[serde(default)]
    pub single_use: bool,
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(str::to_owned).to_vec()
}

fn default_skew() -> u64 {
    60
}

fn default_refresh() -> u64 {
    300
}

/// The `[credentials]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
    /// Principal types whose requests must carry a credential.
    #[serde(default)]
    pub required_for: Vec<String>,
    /// How often each `jwks_file` is checked for a change, in milliseconds [default: 1000]: a
    /// key withdrawn from the file stops verifying (cached tokens included) within this.
    #[serde(default = "default_file_poll")]
    pub jwks_file_poll_ms: u64,
}

impl Default for CredentialSettings {
    fn default() -> Self {
        CredentialSettings {
            issuers: Vec::new(),
            required_for: Vec::new(),
            jwks_file_poll_ms: default_file_poll(),
        }
    }
}

fn default_file_poll() -> u64 {
    1000
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialSetupError {
    #[error(
        "credentials.issuers[{at}].algorithms: {name:?} is not an asymmetric JWT algorithm Warrant accepts"
    )]
    Algorithm { at: usize, name: String },
    #[error("credentials.issuers[{at}].principal: {0:?} must be Type::... with {{sub}} in it", .template)]
    Principal { at: usize, template: String },
    #[error("credentials.jwks_file_poll_ms: must be at least 1")]
    FilePoll,
    #[error("credentials.issuers[{at}].{setting}: {message}")]
    Jwks {
        at: usize,
        setting: &'static str,
        message: String,
    },
}

/// A verified token: what it proves, its `nbf` (seconds), its issuer's clock skew (ms), and
/// the key that verified it (the issuer's index, the `kid` and the key's fingerprint).
struct Verified {
    evidence: CredentialEvidence,
    nbf: Option<i64>,
    skew: i64,
    issuer: usize,
    kid: String,
    fingerprint: [u8; 32],
}

struct Issuer {
    settings: IssuerSettings,
    algorithms: Vec<Algorithm>,
    keys: Arc<IssuerKeys>,
    /// The principal's type, and its id with `{sub}` in it (the template split at its last `::`).
    principal_type: String,
    principal_id: String,
}

/// The configured issuers.
pub struct Credentials {
    issuers: Vec<Issuer>,
    required_for: Vec<String>,
    /// Tokens verified already, by SHA-256, with their `nbf`, the issuer's skew and the key that
    /// verified them: a repeated token costs a lookup, the time checks and a look at the key
    /// set, not a signature verification. Bounded; entries live at most `VERIFIED_FOR`; an
    /// entry whose key the set no longer holds is verified again (and fails).
    verified: moka::sync::Cache<[u8; 32], Arc<Verified>>,
    /// Where single-use tokens are remembered; without it, a single-use token is refused.
    seen: std::sync::OnceLock<Arc<dyn SeenTokens>>,
}

/// How long a verified token is trusted without verifying its signature again.
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(300);
/// How many verified tokens are kept.
const VERIFIED_TOKENS: u64 = 100_000;

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
    /// One audience or several.
    #[serde(default)]
    aud: Option<serde_json::Value>,
    /// Scopes, space-separated (OAuth 2.0).
    #[serde(default)]
    scope: Option<String>,
    /// Scopes, as a list (some issuers).
    #[serde(default)]
    scp: Option<Vec<String>>,
    /// The actor, when the token was issued to one party acting for the subject (RFC 8693
    /// delegation: `{"sub": ..., "act": {...}}`, the current actor outermost).
    #[serde(default)]
    act: Option<serde_json::Value>,
}

/// The most actors a delegation chain may name.
const MAX_ACTORS: usize = 16;

/// The `sub` of each actor in an `act` claim, the current actor first, then those it acts for.
fn actors_of(act: Option<&serde_json::Value>) -> Result<Vec<String>, Reason> {
    let mut actors = Vec::new();
    let mut next = act;
    while let Some(actor) = next {
        let subject = actor
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .ok_or(Reason::CredentialMalformed)?;
        if actors.len() == MAX_ACTORS {
            return Err(Reason::CredentialMalformed);
        }
        actors.push(subject.to_owned());
        next = actor.get("act");
    }
    Ok(actors)
}

const ACCEPTED: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

impl Credentials {
    /// Reads every issuer's keys; an error names the setting.
    pub fn new(settings: &CredentialSettings) -> Result<Credentials, CredentialSetupError> {
        if settings.jwks_file_poll_ms == 0 {
            return Err(CredentialSetupError::FilePoll);
        }
        let mut issuers = Vec::new();
        for (at, issuer) in settings.issuers.iter().enumerate() {
            let algorithms = issuer
                .algorithms
                .iter()
                .map(|name| {
                    ACCEPTED
                        .iter()
                        .find(|(accepted, _)| accepted == name)
                        .map(|(_, algorithm)| *algorithm)
                        .ok_or_else(|| CredentialSetupError::Algorithm {
                            at,
                            name: name.clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (principal_type, principal_id) = issuer
                .principal
                .rsplit_once("::")
                .filter(|(type_name, id)| {
                    !type_name.is_empty() && !type_name.contains("{sub}") && id.contains("{sub}")
                })
                .map(|(type_name, id)| (type_name.to_owned(), id.trim_matches('"').to_owned()))
                .ok_or_else(|| CredentialSetupError::Principal {
                    at,
                    template: issuer.principal.clone(),
                })?;
            let keys = issuer_keys(at, issuer)?;
            issuers.push(Issuer {
                settings: issuer.clone(),
                algorithms,
                keys,
                principal_type,
                principal_id,
            });
        }
        Ok(Credentials {
            issuers,
            required_for: settings.required_for.clone(),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(VERIFIED_FOR)
                .build(),
            seen: std::sync::OnceLock::new(),
        })
    }

    /// Each issuer's keys (for the metrics).
    pub fn keys(&self) -> impl Iterator<Item = &IssuerKeys> {
        self.issuers.iter().map(|issuer| &*issuer.keys)
    }

    /// Reads every issuer's keys again now, files and URLs (`warrant reload`); how many sets
    /// changed.
    pub fn read_keys_again(&self) -> usize {
        self.issuers
            .iter()
            .filter(|issuer| issuer.keys.read_now())
            .count()
    }

    /// Checks every `jwks_file` each `every` until `stop`, reading its keys again when its
    /// contents change.
    pub fn watch_files(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        if !self.issuers.iter().any(|issuer| issuer.keys.from_file()) {
            return;
        }
        let credentials = Arc::clone(self);
        crate::watch::poll("JWKS files", every, stop, move || {
            for issuer in &credentials.issuers {
                issuer.keys.read_if_changed();
            }
        });
    }

    /// Remembers single-use tokens in `seen` from now on (set once, at start).
    pub fn remember_in(&self, seen: Arc<dyn SeenTokens>) {
        let _ = self.seen.set(seen);
    }

    /// For a single-use token, whether this is its first use (and remember it).
    fn first_use(
        &self,
        evidence: &CredentialEvidence,
        skew: i64,
        now: UnixMillis,
    ) -> Result<(), Reason> {
        if !evidence.single_use {
            return Ok(());
        }
        let jti = evidence.jti.as_deref().ok_or(Reason::CredentialMalformed)?;
        let seen = self.seen.get().ok_or(Reason::InternalError)?;
        let key = format!("{}\n{jti}", evidence.issuer);
        match seen.first_use(&key, evidence.expires_at.0.saturating_add(skew), now.0) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Reason::CredentialReplayed),
            Err(error) => {
                tracing::error!(%error, issuer = %evidence.issuer, "cannot remember a single-use token; denying");
                Err(Reason::InternalError)
            }
        }
    }

    /// Whether the key that verified `known` is still in its issuer's set.
    fn key_held(&self, known: &Verified) -> bool {
        self.issuers
            .get(known.issuer)
            .is_some_and(|issuer| issuer.keys.holds(&known.kid, &known.fingerprint))
    }

    /// `verify` without the cache (`digest` is the token's SHA-256): the evidence, the token's
    /// `nbf` and the issuer's skew.
    fn verify_signed(
        &self,
        token: &str,
        digest: &[u8; 32],
        now: UnixMillis,
    ) -> Result<Verified, Reason> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Reason::CredentialMalformed)?;
        // The claims unverified, only to find the issuer whose keys verify them.
        let mut unverified = Validation::new(header.alg);
        unverified.insecure_disable_signature_validation();
        unverified.validate_exp = false;
        unverified.validate_aud = false;
        unverified.required_spec_claims.clear();
        let claimed =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&[]), &unverified)
                .map_err(|_| Reason::CredentialMalformed)?;
        let issuer_name = claimed.claims.iss.ok_or(Reason::CredentialMalformed)?;
        let (issuer_at, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, issuer)| issuer.settings.issuer == issuer_name)
            .ok_or(Reason::CredentialUnknownIssuer)?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(Reason::CredentialAlgorithmRefused);
        }
        let key = issuer
            .keys
            .key(header.kid.as_deref())
            .ok_or(Reason::CredentialUnknownKey)?;
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[&issuer.settings.issuer]);
        if issuer.settings.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&issuer.settings.audiences);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        let verified =
            jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                match error.kind() {
                    ErrorKind::InvalidSignature => Reason::CredentialBadSignature,
                    ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) => {
                        Reason::CredentialWrongAudience
                    }
                    ErrorKind::InvalidIssuer => Reason::CredentialUnknownIssuer,
                    ErrorKind::InvalidAlgorithm => Reason::CredentialAlgorithmRefused,
                    _ => Reason::CredentialMalformed,
                }
            })?;
        let claims = verified.claims;
        // The time checks, on the engine's clock.
        let skew = issuer
            .settings
            .clock_skew_seconds
            .min(i64::MAX as u64 / 1000) as i64
            * 1000;
        let exp = claims.exp.ok_or(Reason::CredentialMalformed)?;
        let expires_at = UnixMillis(exp.saturating_mul(1000));
        within_time(expires_at, claims.nbf, skew, now)?;
        let subject = claims
            .sub
            .filter(|sub| !sub.is_empty())
            .ok_or(Reason::CredentialMalformed)?;
        // The subject is put in as the id as it is: never parsed, so no quote or `::` in it can
        // name another principal.
        let principal = EntityRef::new(
            &issuer.principal_type,
            issuer.principal_id.replace("{sub}", &subject),
        );
        let evidence = CredentialEvidence {
            issuer: issuer.settings.issuer.clone(),
            subject,
            principal,
            jti: claims.jti,
            expires_at,
            key_id: header.kid.clone(),
            token_sha256: format!("sha256:{}", hex::encode(digest)),
            audiences: match &claims.aud {
                Some(serde_json::Value::String(one)) => vec![one.clone()],
                Some(serde_json::Value::Array(many)) => many
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            },
            scopes: match (&claims.scope, &claims.scp) {
                (Some(spaced), _) => spaced.split_whitespace().map(str::to_owned).collect(),
                (None, Some(listed)) => listed.clone(),
                (None, None) => Vec::new(),
            },
            single_use: issuer.settings.single_use,
            actors: actors_of(claims.act.as_ref())?,
        };
        Ok(Verified {
            evidence,
            nbf: claims.nbf,
            skew,
            issuer: issuer_at,
            kid: header.kid.clone().unwrap_or_default(),
            fingerprint: key.fingerprint,
        })
    }
}

/// Whether `now` is within the token's `nbf`..`exp` (seconds), give or take `skew` ms.
fn within_time(
    expires_at: UnixMillis,
    nbf: Option<i64>,
    skew: i64,
    now: UnixMillis,
) -> Result<(), Reason> {
    if now.0 >= expires_at.0.saturating_add(skew) {
        return Err(Reason::CredentialExpired);
    }
    if let Some(nbf) = nbf
        && now.0.saturating_add(skew) < nbf.saturating_mul(1000)
    {
        return Err(Reason::CredentialNotYetValid);
    }
    Ok(())
}

/// An issuer's keys from its `jwks_file` or `jwks_url` (exactly one), fetched again every
/// `jwks_refresh_seconds` when from a URL.
fn issuer_keys(
    at: usize,
    issuer: &IssuerSettings,
) -> Result<Arc<IssuerKeys>, CredentialSetupError> {
    let error = |setting, message| CredentialSetupError::Jwks {
        at,
        setting,
        message,
    };
    let source = match (&issuer.jwks_file, &issuer.jwks_url) {
        (Some(file), None) => JwksSource::File(file.clone()),
        (None, Some(url)) => JwksSource::Https(
            HttpsSource::new(url, issuer.jwks_ca.as_deref()).map_err(|m| error("jwks_url", m))?,
        ),
        _ => {
            return Err(error(
                "jwks_file",
                "exactly one of jwks_file and jwks_url is required".to_owned(),
            ));
        }
    };
    if issuer.jwks_refresh_seconds == 0 {
        return Err(error(
            "jwks_refresh_seconds",
            "must be at least 1".to_owned(),
        ));
    }
    let fetched = matches!(source, JwksSource::Https(_));
    let keys = IssuerKeys::load(&issuer.issuer, source).map_err(|m| error("jwks_file", m))?;
    if fetched {
        keys.refresh_every(std::time::Duration::from_secs(issuer.jwks_refresh_seconds));
    }
    Ok(keys)
}

impl CredentialVerifier for Credentials {
    /// Whether requests for principals of this type must carry a credential.
    fn required_for(&self, principal_type: &str) -> bool {
        self.required_for.iter().any(|t| t == principal_type)
    }

    /// Verifies `token` at `now`; `Err` is the reason to deny.
    fn verify(&self, token: &str, now: UnixMillis) -> Result<CredentialEvidence, Reason> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.verified.get(&digest) {
            if self.key_held(&known) {
                within_time(known.evidence.expires_at, known.nbf, known.skew, now)?;
                self.first_use(&known.evidence, known.skew, now)?;
                return Ok(known.evidence.clone());
            }
            self.verified.invalidate(&digest);
        }
        let verified = self.verify_signed(token, &digest, now)?;
        let (evidence, skew) = (verified.evidence.clone(), verified.skew);
        self.verified.insert(digest, Arc::new(verified));
        self.first_use(&evidence, skew, now)?;
        Ok(evidence)
    }

    /// Whether the token whose SHA-256 is `digest` was verified and still would be at `now`: its
    /// key still held by its issuer and `now` within its times. For a decision cached under the
    /// token: a lookup, no hashing. A token no longer remembered answers `false` (and is then
    /// verified afresh by the evaluation).
    fn still_verified(&self, digest: &[u8; 32], now: UnixMillis) -> bool {
        self.verified.get(digest).is_some_and(|known| {
            self.key_held(&known)
                && within_time(known.evidence.expires_at, known.nbf, known.skew, now).is_ok()
        })
    }
}
