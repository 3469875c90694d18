//! The replicas of a fleet that make themselves known: each announces, every so often, where
//! its admin API and its console are (`announce`); `members` lists those heard from lately, so
//! the console can show the decisions of every replica, merged by time.

use super::*;

/// A replica as it last announced itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// Where its admin API is (its `DecisionLog` serves its decisions).
    pub admin_url: String,
    pub console_url: Option<String>,
    /// When it last announced itself (Unix ms).
    pub seen_at_ms: i64,
}

impl Postgres {
    /// Records that this replica is alive, reachable at `admin_url` (and its console at
    /// `console_url`).
    pub fn announce(&self, admin_url: &str, console_url: Option<&str>) -> Result<(), PgError> {
        let (id, admin_url, console_url) = (
            self.replica().to_owned(),
            admin_url.to_owned(),
            console_url.map(str::to_owned),
        );
        self.with_client(move |client| async move {
            client
                .execute(
                    "INSERT INTO warrant_replicas (id, admin_url, console_url, seen_at) \
                     VALUES ($1, $2, $3, now()) \
                     ON CONFLICT (id) DO UPDATE SET admin_url = $2, console_url = $3, seen_at = now()",
                    &[&id, &admin_url, &console_url],
                )
                .await?;
            Ok(())
        })
    }

    /// The replicas heard from within `within`, this one included, by id.
    pub fn members(&self, within: Duration) -> Result<Vec<Member>, PgError> {
        let seconds = within.as_secs_f64();
        self.with_client(move |client| async move {
            let rows = client
                .query(
                    "SELECT id, admin_url, console_url, \
                       (extract(epoch FROM seen_at) * 1000)::bigint \
                     FROM warrant_replicas \
                     WHERE seen_at > now() - make_interval(secs => $1) ORDER BY id",
                    &[&seconds],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| Member {
                    id: row.get(0),
                    admin_url: row.get(1),
                    console_url: row.get(2),
                    seen_at_ms: row.get(3),
                })
                .collect())
        })
    }
}
