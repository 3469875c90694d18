//! The ports: what the decision path and the control plane need of the world, as traits the
//! adapters implement (the live store and a fleet's shared database count uses and remember
//! tokens; the server's issuers verify credentials; a fleet says how fresh its facts are).

use crate::clock::UnixMillis;
use crate::{CredentialEvidence, Reason};

/// What one allowed decision takes from an approval: a use, if its uses are limited, and an
/// amount from its budget, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    pub max_uses: Option<u64>,
    /// (amount, total)
    pub spend: Option<(u64, u64)>,
}

impl Take {
    /// What this take gives from an approval that has had `used` uses and spent `spent`.
    pub fn against(self, used: u64, spent: u64) -> Taken {
        match (self.max_uses, self.spend) {
            (Some(max), _) if used >= max => Taken::UsesExhausted,
            (_, Some((amount, total))) if spent.saturating_add(amount) > total => {
                Taken::BudgetExhausted
            }
            (max_uses, spend) => Taken::Granted {
                use_number: max_uses.map(|_| used.saturating_add(1)),
                budget_left: spend.map(|(amount, total)| total - (spent + amount)),
            },
        }
    }
}

/// What came of a `Take`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Taken: the number of this use (if limited) and what the budget has left (if any).
    Granted {
        use_number: Option<u64>,
        budget_left: Option<u64>,
    },
    /// Every use is taken; nothing was.
    UsesExhausted,
    /// The budget cannot pay the amount; nothing was taken.
    BudgetExhausted,
}

/// Durable, atomic accounting of limited approvals: their uses (`max_uses`) and budgets.
pub trait UseCounter: Send + Sync {
    /// Takes a use and spends from the budget, both or neither, in one atomic step.
    fn take(&self, approval_id: &str, take: Take) -> Result<Taken, UseCountError>;

    /// What `take` would give now, taking nothing: whether an allow would still find a use and
    /// the budget's room (a search asks this; only a decision takes).
    fn would_take(&self, approval_id: &str, take: Take) -> Result<Taken, UseCountError>;

    /// Gives back what `take` took for a decision that could not be recorded: a use or an
    /// amount counts only if its decision is on record.
    fn give_back(
        &self,
        approval_id: &str,
        a_use: bool,
        amount: Option<u64>,
    ) -> Result<(), UseCountError>;
}

/// A use of a limited approval that could not be counted: the counter's own error.
#[derive(Debug, thiserror::Error)]
#[error("cannot count a use of a limited approval: {0}")]
pub struct UseCountError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where single-use tokens are remembered (the live store).
pub trait SeenTokens: Send + Sync {
    /// `true` the first time `key` is presented before `expires_at`; durable when it returns.
    fn first_use(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, SeenTokensError>;
}

/// A token whose first use could not be told: the store's own error.
#[derive(Debug, thiserror::Error)]
#[error("cannot tell whether a single-use token was seen: {0}")]
pub struct SeenTokensError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// What verifies the credentials requests carry (the server's issuers and their keys).
pub trait CredentialVerifier: Send + Sync {
    /// Whether a principal of this type must present a credential.
    fn required_for(&self, principal_type: &str) -> bool;

    /// What `token` proves at `now`; `Err` is the reason to deny.
    fn verify(&self, token: &str, now: UnixMillis) -> Result<CredentialEvidence, Reason>;

    /// Whether the token whose SHA-256 is `digest`, verified before, still verifies at `now`
    /// (its key still held, its window still open) without verifying its signature again.
    fn still_verified(&self, digest: &[u8; 32], now: UnixMillis) -> bool;
}

/// How fresh a replica's copy of the facts is. A single node's facts are its own and always
/// fresh (no `FactsFreshness` at all); a fleet's replica is stale once it has not been able to
/// confirm its copy for longer than its `max_staleness`.
pub trait FactsFreshness: Send + Sync {
    /// How long ago, at `now`, the facts were last known complete.
    fn lag_ms(&self, now: UnixMillis) -> i64;

    /// The longest the facts may go unconfirmed before every decision is a deny.
    fn max_staleness_ms(&self) -> i64;

    /// Whether decisions at `now` may no longer rely on these facts.
    fn is_stale(&self, now: UnixMillis) -> bool {
        self.lag_ms(now) > self.max_staleness_ms()
    }
}
