//! Counters every replica shares: an approval's uses and what its budget spent, each taken with
//! one atomic conditional update (so `max_uses` concurrent uses through any replicas give
//! exactly `max_uses` allows), and single-use tokens seen. While the database cannot be
//! reached, nothing is counted, so a limited approval allows nothing.

use warrant_domain::ports::{Take, Taken, UseCountError, UseCounter};

use super::{PgError, Postgres};

/// Past this many, a new token's insert also forgets expired ones.
const FORGET_PER_USE: i64 = 16;

fn counted(error: PgError) -> UseCountError {
    UseCountError(Box::new(error))
}

/// A count as PostgreSQL's bigint holds it.
fn as_bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl UseCounter for Postgres {
    fn take(&self, approval_id: &str, take: Take) -> Result<Taken, UseCountError> {
        let a_use = i64::from(take.max_uses.is_some());
        let max_uses = take.max_uses.map(as_bigint);
        let (amount, total) = match take.spend {
            Some((amount, total)) => (as_bigint(amount), Some(as_bigint(total))),
            None => (0, None),
        };
        if max_uses == Some(0) {
            return Ok(Taken::UsesExhausted);
        }
        if total.is_some_and(|total| amount > total) {
            return Ok(Taken::BudgetExhausted);
        }
        let approval = approval_id.to_owned();
        self.with_client(move |client| async move {
            // One statement: the row is created with this use, or updated only if it still
            // has a use and the budget room; no row back means one of them ran out.
            let row = client
                .query_opt(
                    "INSERT INTO warrant_approval_uses AS u (approval, used, spent) VALUES ($1, $2, $3)
                     ON CONFLICT (approval) DO UPDATE
                       SET used = u.used + EXCLUDED.used, spent = u.spent + EXCLUDED.spent
                       WHERE ($4::bigint IS NULL OR u.used < $4)
                         AND ($5::bigint IS NULL OR u.spent + EXCLUDED.spent <= $5)
                     RETURNING used, spent",
                    &[&approval, &a_use, &amount, &max_uses, &total],
                )
                .await?;
            Ok(match row {
                Some(row) => {
                    let (used, spent): (i64, i64) = (row.get(0), row.get(1));
                    Taken::Granted {
                        use_number: max_uses.map(|_| used as u64),
                        budget_left: total.map(|total| (total - spent).max(0) as u64),
                    }
                }
                None => {
                    let used: i64 = client
                        .query_one(
                            "SELECT used FROM warrant_approval_uses WHERE approval = $1",
                            &[&approval],
                        )
                        .await?
                        .get(0);
                    match max_uses {
                        Some(max) if used >= max => Taken::UsesExhausted,
                        _ => Taken::BudgetExhausted,
                    }
                }
            })
        })
        .map_err(counted)
    }

    fn would_take(&self, approval_id: &str, take: Take) -> Result<Taken, UseCountError> {
        let (used, spent) = self.counts(approval_id).map_err(counted)?;
        Ok(take.against(used, spent))
    }

    fn give_back(
        &self,
        approval_id: &str,
        a_use: bool,
        amount: Option<u64>,
    ) -> Result<(), UseCountError> {
        let approval = approval_id.to_owned();
        let uses = i64::from(a_use);
        let amount = amount.map_or(0, as_bigint);
        self.with_client(move |client| async move {
            client
                .execute(
                    "UPDATE warrant_approval_uses
                     SET used = greatest(used - $2, 0), spent = greatest(spent - $3, 0)
                     WHERE approval = $1",
                    &[&approval, &uses, &amount],
                )
                .await?;
            Ok(())
        })
        .map_err(counted)
    }
}

impl Postgres {
    /// Allowed uses recorded for an approval, and what its budget has spent.
    pub fn counts(&self, approval_id: &str) -> Result<(u64, u64), PgError> {
        let approval = approval_id.to_owned();
        self.with_client(move |client| async move {
            let row = client
                .query_opt(
                    "SELECT used, spent FROM warrant_approval_uses WHERE approval = $1",
                    &[&approval],
                )
                .await?;
            Ok(row.map_or((0, 0), |row| {
                (
                    row.get::<_, i64>(0).max(0) as u64,
                    row.get::<_, i64>(1).max(0) as u64,
                )
            }))
        })
    }
}

impl warrant_domain::ports::SeenTokens for Postgres {
    fn first_use(
        &self,
        key: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, warrant_domain::ports::SeenTokensError> {
        let key = key.to_owned();
        self.with_client(move |client| async move {
            client
                .execute(
                    "DELETE FROM warrant_seen_tokens WHERE token IN
                       (SELECT token FROM warrant_seen_tokens WHERE expires_at < $1 LIMIT $2)",
                    &[&now, &FORGET_PER_USE],
                )
                .await?;
            // A token seen before counts only while its entry has not expired.
            let first = client
                .query_opt(
                    "INSERT INTO warrant_seen_tokens AS s (token, expires_at) VALUES ($1, $2)
                     ON CONFLICT (token) DO UPDATE SET expires_at = EXCLUDED.expires_at
                       WHERE s.expires_at <= $3
                     RETURNING 1",
                    &[&key, &expires_at, &now],
                )
                .await?;
            Ok(first.is_some())
        })
        .map_err(|error| warrant_domain::ports::SeenTokensError(error.into()))
    }
}
