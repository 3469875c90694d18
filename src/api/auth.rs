//! The admin listener's authentication: the bearer token every call on it must send (the
//! configured one, or one created in the data folder at first start, mode 0600), checked by an
//! interceptor in constant time before any service sees the call.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use subtle::ConstantTimeEq as _;
use tonic::{Request, Status};

use crate::observability::metrics::Metrics;

/// The token file created in the data folder when no token is configured.
pub const TOKEN_FILE: &str = "admin.token";

/// The shortest admin token a token file may hold (one Warrant makes has 64 hex digits).
const MIN_TOKEN_FILE_BYTES: usize = 32;

/// The admin token: the configured one, else the one in `data_dir/admin.token`, created (32
/// random bytes, hex, mode 0600) on first start. Returns the token and where it came from.
pub fn admin_token(
    configured: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(token) = configured {
        anyhow::ensure!(
            token.len() >= 16,
            "admin_token: at least 16 characters, please"
        );
        return Ok((token.to_owned(), None));
    }
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            anyhow::ensure!(
                !warrant_files::readable_by_others(&path)?,
                "{}: readable by group or others; the admin token must be private \
                 (chmod 600 {0})",
                path.display()
            );
            anyhow::ensure!(
                token.len() >= MIN_TOKEN_FILE_BYTES,
                "{}: the token is {} bytes; at least {MIN_TOKEN_FILE_BYTES} please (delete the \
                 file to have a new one made)",
                path.display(),
                token.len()
            );
            return Ok((token, Some(path)));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => anyhow::bail!("cannot read {}: {error}", path.display()),
    }
    warrant_files::private_dir(data_dir)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = hex::encode(bytes);
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    writeln!(file, "{token}")?;
    file.sync_all()?;
    Ok((token, Some(path)))
}

/// Refuses a call without `authorization: Bearer <token>` (UNAUTHENTICATED, logged).
#[derive(Clone)]
pub struct BearerToken {
    token: Arc<str>,
    metrics: Arc<Metrics>,
}

impl BearerToken {
    pub fn new(token: String, metrics: Arc<Metrics>) -> Self {
        BearerToken {
            token: token.into(),
            metrics,
        }
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let why = match presented {
            None => "no bearer token",
            // Compared without stopping at the first difference.
            Some(token) if bool::from(token.as_bytes().ct_eq(self.token.as_bytes())) => {
                return Ok(request);
            }
            Some(_) => "wrong bearer token",
        };
        self.metrics.admin_unauthenticated();
        tracing::warn!(peer = ?crate::listeners::peer_of(&request), "admin call refused: {why}");
        Err(Status::unauthenticated(format!(
            "{why}: send `authorization: Bearer <token>` (the admin token)"
        )))
    }
}
