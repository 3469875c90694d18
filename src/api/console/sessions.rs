//! Who is signed in to the console: sessions and one-time sign-in links (invites), in memory
//! and bounded. A session or an invite is known by the SHA-256 of its secret, never the secret
//! itself; each session carries its own CSRF token. A restart signs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use warrant_domain::EntityRef;
use warrant_domain::clock::UnixMillis;

/// How long sessions and invites last, and how many are kept.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub session_ms: i64,
    pub invite_ms: i64,
    /// Sessions held at once; past it, the one that expires soonest is ended.
    pub max_sessions: usize,
    /// Unused invites held at once; past it, new invites are refused.
    pub max_invites: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            session_ms: 8 * 3_600_000,
            invite_ms: 15 * 60_000,
            max_sessions: 1_000,
            max_invites: 1_000,
        }
    }
}

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub human: EntityRef,
    /// The token every form of this session must carry.
    pub csrf: String,
    pub expires_at: UnixMillis,
    /// How they signed in: `invite` or `oidc`.
    pub how: &'static str,
    /// What an approval request keeps of this sign-in (`console:sha256:...`, of the session's
    /// secret): proves it was decided in a session, without being able to resume it.
    pub proof: String,
}

impl Session {
    /// Whether `token` is this session's CSRF token.
    pub fn csrf_matches(&self, token: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(token.as_bytes()))
    }
}

struct Invite {
    human: EntityRef,
    expires_at: UnixMillis,
}

#[derive(Default)]
struct Held {
    sessions: HashMap<[u8; 32], Session>,
    invites: HashMap<[u8; 32], Invite>,
}

pub struct Sessions {
    limits: SessionLimits,
    held: Mutex<Held>,
}

/// Why an invite cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("{0} sign-in links are waiting to be used; try again once some expire")]
    Full(usize),
    #[error("no randomness: {0}")]
    Random(String),
}

fn secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| error.to_string())?;
    Ok(hex::encode(bytes))
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Sessions {
            limits,
            held: Mutex::new(Held::default()),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A one-time sign-in link's secret for `human`, and when it expires.
    pub fn invite(
        &self,
        human: EntityRef,
        now: UnixMillis,
    ) -> Result<(String, UnixMillis), InviteError> {
        let mut held = self.held();
        held.invites.retain(|_, invite| invite.expires_at > now);
        if held.invites.len() >= self.limits.max_invites {
            return Err(InviteError::Full(held.invites.len()));
        }
        let token = secret().map_err(InviteError::Random)?;
        let expires_at = UnixMillis(now.0.saturating_add(self.limits.invite_ms));
        held.invites
            .insert(digest(&token), Invite { human, expires_at });
        Ok((token, expires_at))
    }

    /// Whom an unused, unexpired invite is for (without using it).
    pub fn invited(&self, token: &str, now: UnixMillis) -> Option<EntityRef> {
        self.held()
            .invites
            .get(&digest(token))
            .filter(|invite| invite.expires_at > now)
            .map(|invite| invite.human.clone())
    }

    /// Uses an invite: a new session for its human (and the session's secret, for the cookie).
    pub fn redeem(
        &self,
        token: &str,
        now: UnixMillis,
    ) -> Option<Result<(String, Session), String>> {
        let invite = self.held().invites.remove(&digest(token))?;
        if invite.expires_at <= now {
            return None;
        }
        Some(self.start(invite.human, "invite", now))
    }

    /// Signs `human` in: the session's secret (for the cookie) and the session.
    pub fn start(
        &self,
        human: EntityRef,
        how: &'static str,
        now: UnixMillis,
    ) -> Result<(String, Session), String> {
        let token = secret()?;
        let key = digest(&token);
        let session = Session {
            human,
            csrf: secret()?,
            expires_at: UnixMillis(now.0.saturating_add(self.limits.session_ms)),
            how,
            proof: format!("console:sha256:{}", hex::encode(key)),
        };
        let mut held = self.held();
        held.sessions.retain(|_, session| session.expires_at > now);
        while held.sessions.len() >= self.limits.max_sessions.max(1) {
            let Some(soonest) = held
                .sessions
                .iter()
                .min_by_key(|(_, session)| session.expires_at.0)
                .map(|(key, _)| *key)
            else {
                break;
            };
            held.sessions.remove(&soonest);
        }
        held.sessions.insert(key, session.clone());
        Ok((token, session))
    }

    /// The session a cookie's secret names, if it is live.
    pub fn session(&self, token: &str, now: UnixMillis) -> Option<Session> {
        self.held()
            .sessions
            .get(&digest(token))
            .filter(|session| session.expires_at > now)
            .cloned()
    }

    pub fn end(&self, token: &str) {
        self.held().sessions.remove(&digest(token));
    }

    /// Sessions held now (live or not yet swept), for the metrics.
    pub fn count(&self) -> usize {
        self.held().sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_signs_in_once_and_a_session_ends() {
        let sessions = Sessions::new(SessionLimits::default());
        let carol = EntityRef::new("Human", "carol");
        let (invite, _) = sessions.invite(carol.clone(), UnixMillis(0)).unwrap();
        assert_eq!(
            sessions.invited(&invite, UnixMillis(1)),
            Some(carol.clone())
        );
        let (token, session) = sessions.redeem(&invite, UnixMillis(1)).unwrap().unwrap();
        assert_eq!(session.human, carol);
        assert!(
            sessions.redeem(&invite, UnixMillis(2)).is_none(),
            "used twice"
        );
        assert!(sessions.session(&token, UnixMillis(2)).is_some());
        assert!(session.csrf_matches(&session.csrf));
        assert!(!session.csrf_matches("forged"));
        sessions.end(&token);
        assert!(sessions.session(&token, UnixMillis(3)).is_none());
    }

    #[test]
    fn invites_and_sessions_expire_and_are_bounded() {
        let limits = SessionLimits {
            max_sessions: 2,
            max_invites: 1,
            ..SessionLimits::default()
        };
        let sessions = Sessions::new(limits);
        let human = EntityRef::new("Human", "dave");
        let (invite, _) = sessions.invite(human.clone(), UnixMillis(0)).unwrap();
        assert!(matches!(
            sessions.invite(human.clone(), UnixMillis(1)),
            Err(InviteError::Full(1))
        ));
        let late = UnixMillis(limits.invite_ms);
        assert!(sessions.redeem(&invite, late).is_none(), "expired");
        let first = sessions
            .start(human.clone(), "invite", UnixMillis(0))
            .unwrap()
            .0;
        sessions
            .start(human.clone(), "invite", UnixMillis(1))
            .unwrap();
        sessions.start(human, "invite", UnixMillis(2)).unwrap();
        assert_eq!(sessions.count(), 2);
        assert!(
            sessions.session(&first, UnixMillis(3)).is_none(),
            "the oldest made room"
        );
    }
}
