//! Page tokens for the admin and decision log lists: opaque to callers and authenticated. A
//! token is the list's position (hex) and an HMAC-SHA256 over the list's name and that position,
//! keyed by a secret made once in the data folder (`page-token-key`, 0600). A token Warrant did
//! not issue (a position written or edited by hand, or one from another list) is refused with
//! `INVALID_ARGUMENT`, never taken as a place to start. Tokens survive a restart and are good on
//! the node that issued them (each data folder has its own key).

use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tonic::Status;

/// The file in the data folder that keeps the key.
const KEY_FILE: &str = "page-token-key";
/// How many bytes of the HMAC a token carries.
const TAG_BYTES: usize = 16;

/// Issues and reads the page tokens of one data folder.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl PageTokens {
    /// The data folder's key, made on first use.
    pub fn open(data_dir: &Path) -> anyhow::Result<PageTokens> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    anyhow::anyhow!(
                        "{}: not a page token key (32 bytes); delete it to have one made",
                        path.display()
                    )
                })?;
                return Ok(PageTokens { key });
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(anyhow::anyhow!("{}: {error}", path.display())),
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
        warrant_files::private_dir(data_dir)?;
        warrant_files::write_atomically(&path, &key)
            .with_context(|| format!("cannot keep the page token key in {}", path.display()))?;
        Ok(PageTokens { key })
    }

    /// A key of its own, kept nowhere (for tests and tools that serve no data folder).
    pub fn with_key(key: [u8; 32]) -> PageTokens {
        PageTokens { key }
    }

    /// The token of `position` in `list`.
    pub fn issue(&self, list: &str, position: &str) -> String {
        format!(
            "{}.{}",
            hex::encode(position),
            hex::encode(self.tag(list, position))
        )
    }

    /// The position a token of `list` names: `None` for the empty token (the first page), an
    /// `INVALID_ARGUMENT` naming `page_token` for one this node did not issue for `list`.
    pub fn read(&self, list: &str, token: &str) -> Result<Option<String>, Status> {
        if token.is_empty() {
            return Ok(None);
        }
        let refused = || Status::invalid_argument("page_token: not a token this server gave");
        let (position, tag) = token.split_once('.').ok_or_else(refused)?;
        let position = hex::decode(position)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(refused)?;
        let tag = hex::decode(tag).map_err(|_| refused())?;
        if tag.len() != TAG_BYTES || !bool::from(tag.ct_eq(&self.tag(list, &position))) {
            return Err(refused());
        }
        Ok(Some(position))
    }

    /// The HMAC of the list's name and the position, cut to `TAG_BYTES`.
    fn tag(&self, list: &str, position: &str) -> [u8; TAG_BYTES] {
        let mac = hmac_sha256(&self.key, &[list.as_bytes(), &[0], position.as_bytes()]);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&mac[..TAG_BYTES]);
        tag
    }
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts` under a 32-byte key.
fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut inner_pad = [0x36u8; BLOCK];
    let mut outer_pad = [0x5cu8; BLOCK];
    for (i, byte) in key.iter().enumerate() {
        inner_pad[i] ^= byte;
        outer_pad[i] ^= byte;
    }
    let mut inner = Sha256::new().chain_update(inner_pad);
    for part in parts {
        inner.update(part);
    }
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner.finalize())
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_position_only_for_its_own_list_and_key() {
        let tokens = PageTokens::with_key([7; 32]);
        let token = tokens.issue("approvals", "Approval::\"apr-1\"");
        assert_eq!(
            tokens.read("approvals", &token).unwrap().as_deref(),
            Some("Approval::\"apr-1\"")
        );
        assert_eq!(tokens.read("approvals", "").unwrap(), None);
        for forged in [
            "Approval::\"apr-1\"".to_owned(),
            hex::encode("Approval::\"apr-2\""),
            format!(
                "{}.{}",
                hex::encode("Approval::\"apr-2\""),
                &token[token.len() - 32..]
            ),
            format!("{token}00"),
        ] {
            let refused = tokens.read("approvals", &forged).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{forged}");
            assert!(refused.message().starts_with("page_token: "));
        }
        assert!(tokens.read("identities", &token).is_err());
        assert!(
            PageTokens::with_key([8; 32])
                .read("approvals", &token)
                .is_err()
        );
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2: the key "Jefe" (zero-padded, as HMAC pads every short key).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac_sha256(&key, &[b"what do ya ", b"want for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
