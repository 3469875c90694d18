//! An issuer's public keys, from a JWKS (JSON Web Key Set): a file, or a document fetched over
//! HTTPS (`outbound`). The keys are held by `kid` between reads, each with a fingerprint (the
//! SHA-256 of its JWK), so that what was verified with a key can be told apart from what its
//! successor under the same `kid` verifies. A token whose `kid` is not held makes the keys read
//! again (a rotation), at most once a second, and only by one caller at a time: the others answer
//! from the keys held. Keys are also read again without being asked: a file whenever its contents
//! change (`read_if_changed`, polled by `credentials`), a URL every refresh interval by a thread
//! of its own, and both on `warrant reload`; so a key the issuer withdrew stops verifying within
//! one poll or refresh. A read that fails keeps the keys held. Symmetric keys in a set are
//! ignored: a public key set with a shared secret in it is a mistake or an attack.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use sha2::{Digest, Sha256};

use crate::outbound::Url;

/// One verification key and the SHA-256 of the JWK it was read from.
pub struct Key {
    pub decoding: DecodingKey,
    pub fingerprint: [u8; 32],
}

/// Keys by `kid` (a key without one under "").
pub type KeysByKid = HashMap<String, Arc<Key>>;

/// How soon after one read an unknown `kid` may cause another.
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// Where the keys come from.
pub enum JwksSource {
    File(PathBuf),
    Https(HttpsSource),
}

/// A JWKS URL: HTTPS only, even on loopback.
pub struct HttpsSource(Url);

impl HttpsSource {
    /// An `https://` URL, trusting the CA certificates in `ca` (PEM) or else the system's.
    pub fn new(url: &str, ca: Option<&Path>) -> Result<HttpsSource, String> {
        if !url.starts_with("https://") {
            return Err(format!("{url:?}: only https:// URLs are fetched"));
        }
        Url::new(url, ca).map(HttpsSource)
    }
}

impl JwksSource {
    fn describe(&self) -> String {
        match self {
            JwksSource::File(path) => path.display().to_string(),
            JwksSource::Https(https) => https.0.as_str().to_owned(),
        }
    }

    /// Reads the set's asymmetric keys, with the SHA-256 of the document they came from.
    fn read(&self) -> Result<(KeysByKid, [u8; 32]), String> {
        let bytes = self.bytes()?;
        let digest = Sha256::digest(&bytes).into();
        keys_of(&bytes)
            .map(|keys| (keys, digest))
            .map_err(|error| format!("{}: {error}", self.describe()))
    }

    /// The document as it is now.
    fn bytes(&self) -> Result<Vec<u8>, String> {
        Ok(match self {
            JwksSource::File(path) => std::fs::read(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
            JwksSource::Https(https) => https
                .0
                .send("GET", None)
                .map_err(|error| format!("{}: {error}", https.0.as_str()))?,
        })
    }
}

/// A JWKS document's asymmetric keys by `kid`.
pub fn keys_of(document: &[u8]) -> Result<KeysByKid, String> {
    let set: JwkSet =
        serde_json::from_slice(document).map_err(|error| format!("not a JWKS: {error}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            continue;
        }
        let decoding =
            DecodingKey::from_jwk(jwk).map_err(|error| format!("a key cannot be read: {error}"))?;
        let canonical = serde_json::to_vec(jwk)
            .map_err(|error| format!("a key cannot be written back: {error}"))?;
        let key = Key {
            decoding,
            fingerprint: Sha256::digest(&canonical).into(),
        };
        keys.insert(jwk.common.key_id.clone().unwrap_or_default(), Arc::new(key));
    }
    Ok(keys)
}

/// One issuer's keys, as last read.
pub struct IssuerKeys {
    issuer: String,
    source: JwksSource,
    keys: ArcSwap<KeysByKid>,
    /// The SHA-256 of the document the keys in force were read from.
    read_from: Mutex<[u8; 32]>,
    /// When the keys were last read (or a read was tried).
    last_read: Mutex<Option<Instant>>,
    /// A read is under way: other callers do not wait for it.
    reading: AtomicBool,
    pub reads: AtomicU64,
    pub read_failures: AtomicU64,
    /// Reads that changed the set: a key added, withdrawn or replaced under its `kid`.
    pub key_set_changes: AtomicU64,
}

impl IssuerKeys {
    /// Reads the keys once. A file that cannot be read is an error. A URL that cannot be
    /// fetched is logged and counted, and the issuer starts with no keys: its tokens are denied
    /// (`warrant:credential-unknown-key`) until a fetch succeeds, and the rest of Warrant serves.
    pub fn load(issuer: &str, source: JwksSource) -> Result<Arc<IssuerKeys>, String> {
        let keys = IssuerKeys {
            issuer: issuer.to_owned(),
            source,
            keys: ArcSwap::from_pointee(HashMap::new()),
            read_from: Mutex::new([0; 32]),
            last_read: Mutex::new(None),
            reading: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            read_failures: AtomicU64::new(0),
            key_set_changes: AtomicU64::new(0),
        };
        *keys.lock_last_read() = Some(Instant::now());
        match keys.source.read() {
            Ok((read, digest)) => {
                keys.reads.fetch_add(1, Ordering::Relaxed);
                keys.keys.store(Arc::new(read));
                *keys.lock_read_from() = digest;
            }
            Err(message) => match keys.source {
                JwksSource::File(_) => return Err(message),
                JwksSource::Https(_) => {
                    keys.read_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(issuer, %message, "cannot fetch the issuer's keys; its tokens are denied until a fetch succeeds");
                }
            },
        }
        Ok(Arc::new(keys))
    }

    /// Fetches the keys again every `every`, on a thread that ends with the keys.
    pub fn refresh_every(self: &Arc<Self>, every: Duration) {
        let keys: Weak<IssuerKeys> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("warrant-jwks".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let Some(keys) = keys.upgrade() else { return };
                    keys.read_again();
                }
            });
        if let Err(error) = spawned {
            tracing::error!(issuer = %self.issuer, %error, "cannot start refreshing the issuer's keys");
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn lock_last_read(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.last_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_read_from(&self) -> std::sync::MutexGuard<'_, [u8; 32]> {
        self.read_from
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the keys are read from a file (which `read_if_changed` watches).
    pub fn from_file(&self) -> bool {
        matches!(self.source, JwksSource::File(_))
    }

    /// Whether the key `fingerprint` is still held under `kid`: a token verified with a key the
    /// set no longer holds is verified again, and fails.
    pub fn holds(&self, kid: &str, fingerprint: &[u8; 32]) -> bool {
        self.keys
            .load()
            .get(kid)
            .is_some_and(|key| &key.fingerprint == fingerprint)
    }

    /// Reads a file's keys again if its contents changed since they were read (one hash of the
    /// file when they did not). `true` if the set changed.
    pub fn read_if_changed(&self) -> bool {
        let JwksSource::File(path) = &self.source else {
            return false;
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let digest: [u8; 32] = Sha256::digest(&bytes).into();
                *self.lock_read_from() != digest && self.read_now()
            }
            Err(error) => {
                self.read_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(issuer = %self.issuer, path = %path.display(), %error, "cannot read the issuer's keys again; keeping the ones held");
                false
            }
        }
    }
    /// The key for `kid`: from the keys held, else from the set read again (a rotation), if it
    /// was not read within the last second and no one else is reading it.
    pub fn key(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        let kid = kid.unwrap_or("");
        if let Some(key) = self.keys.load().get(kid) {
            return Some(Arc::clone(key));
        }
        let due = self
            .lock_last_read()
            .is_none_or(|at| at.elapsed() >= REREAD_AFTER);
        if due {
            self.read_again();
        }
        self.keys.load().get(kid).cloned()
    }

    /// Reads the set again unless a read is under way; a failure keeps the keys held.
    fn read_again(&self) {
        if self.reading.swap(true, Ordering::AcqRel) {
            return;
        }
        self.read_now();
        self.reading.store(false, Ordering::Release);
    }

    /// Reads the set again at once (`warrant reload`, a changed file); `true` if it changed.
    pub fn read_now(&self) -> bool {
        *self.lock_last_read() = Some(Instant::now());
        match self.source.read() {
            Ok((read, digest)) => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                *self.lock_read_from() = digest;
                let count = read.len();
                let before = self.keys.swap(Arc::new(read));
                // Withdrawn or replaced under their kid; with the same count, nothing added.
                let withdrawn: Vec<&str> = before
                    .iter()
                    .filter(|(kid, key)| !self.holds(kid, &key.fingerprint))
                    .map(|(kid, _)| kid.as_str())
                    .collect();
                let changed = !withdrawn.is_empty() || before.len() != count;
                if changed {
                    self.key_set_changes.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(issuer = %self.issuer, keys = count, ?withdrawn, "the issuer's key set changed");
                }
                changed
            }
            Err(message) => {
                self.read_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(issuer = %self.issuer, %message, "cannot read the issuer's keys again; keeping the ones held");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_url_is_https() {
        assert!(HttpsSource::new("http://127.0.0.1:1/jwks", None).is_err());
        assert!(HttpsSource::new("not a url", None).is_err());
    }
}
