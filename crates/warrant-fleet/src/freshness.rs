//! How fresh a replica's facts are. A replica that follows a shared database
//! holds a copy of its facts; `Freshness` says until when that copy was known to hold every
//! change the database had committed, and the engine denies (`warrant:facts-stale`) once that
//! is longer ago than `max_staleness`. A single node's facts are its own and always fresh.

use std::sync::atomic::{AtomicI64, Ordering};

use warrant_domain::clock::UnixMillis;
use warrant_domain::ports::FactsFreshness;

#[derive(Debug)]
pub struct Freshness {
    /// The latest instant (Unix ms) at which every change the database had committed was
    /// applied here; 0 until the first catch-up.
    confirmed_at: AtomicI64,
    max_staleness_ms: i64,
}

impl Freshness {
    pub fn new(max_staleness_ms: i64) -> Self {
        Freshness {
            confirmed_at: AtomicI64::new(0),
            max_staleness_ms,
        }
    }

    /// Every change committed in the database before `at` has been applied here.
    pub fn confirm(&self, at: UnixMillis) {
        self.confirmed_at.fetch_max(at.0, Ordering::AcqRel);
    }

    pub fn confirmed_at(&self) -> UnixMillis {
        UnixMillis(self.confirmed_at.load(Ordering::Acquire))
    }
}

impl FactsFreshness for Freshness {
    fn max_staleness_ms(&self) -> i64 {
        self.max_staleness_ms
    }

    fn lag_ms(&self, now: UnixMillis) -> i64 {
        now.0.saturating_sub(self.confirmed_at().0).max(0)
    }
}
