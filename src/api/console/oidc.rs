//! Signing people in with OpenID Connect: the authorization code flow with PKCE (S256) against
//! one configured issuer (Okta, Entra ID, Google, Keycloak...). The issuer's discovery document
//! and keys are fetched when first needed and kept for `PROVIDER_TTL`; each sign-in started
//! keeps its PKCE verifier and nonce here, under its `state`, until it comes back or expires.
//! The ID token is verified (signature with the issuer's keys, `iss`, `aud`, `exp` on Warrant's
//! clock, `nonce`), and the configured claim (from the ID token, or else the UserInfo endpoint
//! for the same `sub`) names the person; `human_of` finds their `Human` entity.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::pages::path_part;
use crate::jwks::{KeysByKid, keys_of};
use crate::outbound::Url;
use warrant_domain::clock::UnixMillis;
use warrant_domain::{EntityRef, HUMAN_TYPE};
use warrant_facts::Facts;

/// How long the discovery document and keys are used before they are fetched again.
const PROVIDER_TTL: Duration = Duration::from_secs(300);
/// How long a started sign-in may take to come back.
const SIGN_IN_MS: i64 = 10 * 60_000;
/// Sign-ins started and not yet back, at most.
const MOST_PENDING: usize = 1_000;
/// Humans read looking for the one a claim names by attribute, at most.
const MOST_HUMANS_SCANNED: usize = 100_000;
/// The signature algorithms an ID token may use (asymmetric only).
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// `[console.oidc]`: the identity provider people sign in with.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer, exactly as its tokens name it, e.g. `https://login.example.com/realms/ops`.
    /// Its discovery document is at `{issuer}/.well-known/openid-configuration`. (Plain HTTP
    /// only to a loopback address.)
    pub issuer: String,
    pub client_id: String,
    /// A file holding the client secret (sent with `client_secret_basic`); none for a public
    /// client, which PKCE protects.
    pub client_secret_file: Option<PathBuf>,
    /// CA certificates (PEM) for the issuer's TLS [default: the system's].
    pub ca: Option<PathBuf>,
    /// The claim that names the person [default: email].
    pub claim: Option<String>,
    /// The `Human` attribute the claim must equal; `id` takes the claim as the Human's id
    /// [default: email].
    pub human_attribute: Option<String>,
    /// The scopes asked for [default: openid email].
    pub scopes: Option<String>,
    /// The provider's name on the sign-in button [default: the issuer].
    pub name: Option<String>,
}

/// What the discovery document says, and the issuer's keys.
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    keys: KeysByKid,
}

/// A sign-in on its way through the provider.
struct Started {
    verifier: String,
    nonce: String,
    expires_at: UnixMillis,
}

pub(super) struct Oidc {
    settings: OidcSettings,
    client_secret: Option<String>,
    redirect_uri: String,
    provider: Mutex<Option<(Instant, Arc<Provider>)>>,
    started: Mutex<HashMap<String, Started>>,
}

fn random_text() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| format!("no randomness: {error}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn get_json(
    url: &str,
    ca: Option<&std::path::Path>,
    bearer: Option<&str>,
) -> Result<Value, String> {
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|value| ("Authorization", value))
        .into_iter()
        .collect();
    let body = Url::new(url, ca)?.send_with("GET", &headers, None)?;
    serde_json::from_slice(&body).map_err(|error| format!("{url}: not JSON: {error}"))
}

fn text_field(document: &Value, field: &str) -> Result<String, String> {
    document[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the discovery document has no {field}"))
}

impl Oidc {
    /// The provider of `settings`, whose sign-ins come back to `redirect_uri`.
    pub(super) fn new(settings: OidcSettings, redirect_uri: String) -> Result<Oidc, String> {
        let client_secret = match &settings.client_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|error| format!("client_secret_file {}: {error}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        // The issuer's URL must be one Warrant may fetch (https, or http on loopback).
        Url::new(&settings.issuer, settings.ca.as_deref())
            .map_err(|error| format!("issuer: {error}"))?;
        Ok(Oidc {
            settings,
            client_secret,
            redirect_uri,
            provider: Mutex::new(None),
            started: Mutex::new(HashMap::new()),
        })
    }

    /// The name on the sign-in button.
    pub(super) fn name(&self) -> &str {
        self.settings
            .name
            .as_deref()
            .unwrap_or(&self.settings.issuer)
    }

    /// The discovery document and keys: as held, or fetched again (`refresh`, or when old).
    fn provider(&self, refresh: bool) -> Result<Arc<Provider>, String> {
        let mut held = self
            .provider
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, provider)) = held.as_ref()
            && !refresh
            && at.elapsed() < PROVIDER_TTL
        {
            return Ok(Arc::clone(provider));
        }
        let ca = self.settings.ca.as_deref();
        let issuer = self.settings.issuer.trim_end_matches('/');
        let discovery = get_json(
            &format!("{issuer}/.well-known/openid-configuration"),
            ca,
            None,
        )?;
        if discovery["issuer"].as_str() != Some(self.settings.issuer.as_str()) {
            return Err(format!(
                "the discovery document names issuer {}, not {:?}",
                discovery["issuer"], self.settings.issuer
            ));
        }
        let jwks_uri = text_field(&discovery, "jwks_uri")?;
        let keys = keys_of(&Url::new(&jwks_uri, ca)?.send("GET", None)?)?;
        let provider = Arc::new(Provider {
            authorization_endpoint: text_field(&discovery, "authorization_endpoint")?,
            token_endpoint: text_field(&discovery, "token_endpoint")?,
            userinfo_endpoint: discovery["userinfo_endpoint"].as_str().map(str::to_owned),
            keys,
        });
        *held = Some((Instant::now(), Arc::clone(&provider)));
        Ok(provider)
    }

    /// Starts a sign-in: where to send the browser, and the `state` it will come back with.
    pub(super) fn start(&self, now: UnixMillis) -> Result<(String, String), String> {
        let provider = self.provider(false)?;
        let state = random_text()?;
        let verifier = random_text()?;
        let nonce = random_text()?;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes()));
        {
            let mut started = self
                .started
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            started.retain(|_, s| s.expires_at > now);
            if started.len() >= MOST_PENDING {
                return Err(format!(
                    "{MOST_PENDING} sign-ins are under way; try again in a few minutes"
                ));
            }
            started.insert(
                state.clone(),
                Started {
                    verifier,
                    nonce: nonce.clone(),
                    expires_at: UnixMillis(now.0.saturating_add(SIGN_IN_MS)),
                },
            );
        }
        let scopes = self.settings.scopes.as_deref().unwrap_or("openid email");
        let separator = if provider.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let query = [
            ("response_type", "code"),
            ("client_id", self.settings.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", scopes),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={}", path_part(value)))
        .collect::<Vec<_>>()
        .join("&");
        Ok((
            format!("{}{separator}{query}", provider.authorization_endpoint),
            state,
        ))
    }

    /// Finishes the sign-in that `state` started with the provider's `code`: the value of the
    /// configured claim for the person it signed in.
    pub(super) fn finish(
        &self,
        code: &str,
        state: &str,
        now: UnixMillis,
    ) -> Result<String, String> {
        let started = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(state)
            .filter(|s| s.expires_at > now)
            .ok_or("this sign-in was not started here, was used already, or took too long")?;
        let provider = self.provider(false)?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("client_id", self.settings.client_id.as_str()),
            ("code_verifier", started.verifier.as_str()),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={}", path_part(value)))
        .collect::<Vec<_>>()
        .join("&");
        let basic = self.client_secret.as_ref().map(|secret| {
            let pair = format!(
                "{}:{}",
                path_part(&self.settings.client_id),
                path_part(secret)
            );
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        let headers: Vec<(&str, &str)> = basic
            .as_deref()
            .map(|value| ("Authorization", value))
            .into_iter()
            .collect();
        let answer = Url::new(&provider.token_endpoint, self.settings.ca.as_deref())?
            .send_with(
                "POST",
                &headers,
                Some(("application/x-www-form-urlencoded", form.as_bytes())),
            )
            .map_err(|error| format!("the token endpoint: {error}"))?;
        let tokens: Value = serde_json::from_slice(&answer)
            .map_err(|error| format!("the token endpoint answered no JSON: {error}"))?;
        let id_token = tokens["id_token"]
            .as_str()
            .ok_or("the token endpoint answered no id_token")?;
        let claims = self.verified(id_token, &started.nonce, now)?;
        let claim = self.settings.claim.as_deref().unwrap_or("email");
        if let Some(value) = claims[claim].as_str() {
            return Ok(value.to_owned());
        }
        // Not in the ID token: ask UserInfo, for the same subject.
        let (Some(userinfo), Some(access_token)) = (
            provider.userinfo_endpoint.as_deref(),
            tokens["access_token"].as_str(),
        ) else {
            return Err(format!("the ID token has no {claim:?} claim"));
        };
        let info = get_json(userinfo, self.settings.ca.as_deref(), Some(access_token))?;
        if info["sub"] != claims["sub"] {
            return Err("UserInfo answered for another subject".into());
        }
        info[claim]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("neither the ID token nor UserInfo has a {claim:?} claim"))
    }

    /// The ID token's claims, once its signature, issuer, audience, expiry and nonce hold.
    fn verified(&self, token: &str, nonce: &str, now: UnixMillis) -> Result<Value, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| format!("the ID token is malformed: {error}"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(format!(
                "the ID token is signed with {:?}, which is refused",
                header.alg
            ));
        }
        let kid = header.kid.clone().unwrap_or_default();
        let key = match self.provider(false)?.keys.get(&kid) {
            Some(key) => Arc::clone(key),
            // A rotation: the keys once more.
            None => self
                .provider(true)?
                .keys
                .get(&kid)
                .cloned()
                .ok_or_else(|| format!("the issuer has no key {kid:?}"))?,
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.client_id]);
        // Times are checked on Warrant's clock, below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
            .map_err(|error| format!("the ID token does not verify: {error}"))?
            .claims;
        let expires = claims["exp"].as_i64().ok_or("the ID token has no exp")?;
        if now.0 >= expires.saturating_mul(1000) {
            return Err("the ID token has expired".into());
        }
        if claims["nonce"].as_str() != Some(nonce) {
            return Err("the ID token's nonce is not this sign-in's".into());
        }
        if claims["sub"].as_str().is_none_or(str::is_empty) {
            return Err("the ID token has no sub".into());
        }
        Ok(claims)
    }

    /// The Human `claim` names: `Human::"claim"` when `human_attribute = "id"`, else the one
    /// Human whose attribute equals it.
    pub(super) fn human_of(&self, facts: &Facts, claim: &str) -> Result<EntityRef, String> {
        let attribute = self.settings.human_attribute.as_deref().unwrap_or("email");
        if attribute == "id" {
            let human = EntityRef::new(HUMAN_TYPE, claim);
            let known = HUMAN_TYPE.parse().is_ok_and(|type_name| {
                facts.contains(&cedar_policy::EntityUid::from_type_name_and_id(
                    type_name,
                    cedar_policy::EntityId::new(claim),
                ))
            });
            return known
                .then_some(human)
                .ok_or_else(|| format!("no {HUMAN_TYPE} has the id {claim:?}"));
        }
        let prefixes = [warrant_facts::type_prefix(HUMAN_TYPE)];
        let mut after: Option<String> = None;
        let mut found: Option<EntityRef> = None;
        let mut scanned = 0;
        loop {
            let uids = facts
                .reader()
                .uids_after(&prefixes, after.as_deref(), 1_000)
                .map_err(|error| error.to_string())?;
            let Some(last) = uids.last() else { break };
            after = Some(last.to_string());
            scanned += uids.len();
            for uid in &uids {
                let Some((json, _)) = facts.json(uid) else {
                    continue;
                };
                if json["attrs"][attribute].as_str() == Some(claim) {
                    if let Some(first) = &found {
                        return Err(format!(
                            "{first} and {} both have {attribute} {claim:?}: make it unique",
                            EntityRef::from_uid(uid)
                        ));
                    }
                    found = Some(EntityRef::from_uid(uid));
                }
            }
            if scanned >= MOST_HUMANS_SCANNED {
                return Err(format!(
                    "more than {MOST_HUMANS_SCANNED} Humans to look through: set \
                     human_attribute = \"id\" and name people by id"
                ));
            }
        }
        found.ok_or_else(|| format!("no {HUMAN_TYPE} has {attribute} {claim:?}"))
    }
}
