//! `warrant-bench history`: writes a ledger's history for the access review's benchmark
//! (BENCHMARKS.md, "Access reviews"): RECORDS decisions on the identities `ServiceAccount::sa-N`
//! of `scripts/scale.py`, spread evenly over DAYS days up to now, appended through the ledger's
//! own writer (hash chain, signed checkpoints and the usage summary, as a server writes them)
//! into a data folder no server is running on. Nine identities in ten act to the end; the rest
//! stop after the first sixth of the time (dormant); an identity's allows name its link
//! (`sa-N-reads-ds-N-link`) when it has one, a shared policy otherwise.

use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;
use warrant_domain::clock::{Clock as _, SystemClock, UnixMillis};
use warrant_ledger::{Ledger, LedgerMode, LedgerSettings, Record};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The data folder (its `ledger/` is written).
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    #[arg(long, default_value_t = 10_000_000)]
    pub records: u64,
    #[arg(long, default_value_t = 1_000_000)]
    pub identities: u64,
    /// How many identities have a link (`scale.py --links`).
    #[arg(long, default_value_t = 0)]
    pub links: u64,
    #[arg(long, default_value_t = 120)]
    pub days: u64,
}

/// A small deterministic generator (xorshift), so runs compare.
struct Pick(u64);

impl Pick {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A UUIDv7 (time-ordered) for a record at `time`, its random bits from `random`.
fn uuid_v7_like(time: i64, random: u64) -> String {
    let millis = u64::try_from(time).unwrap_or(0) & 0xffff_ffff_ffff;
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        millis >> 16,
        millis & 0xffff,
        (random >> 52) & 0xfff,
        0x8000 | ((random >> 36) & 0x3fff),
        random & 0xffff_ffff_ffff
    )
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<String> {
    let ledger = Ledger::open(&LedgerSettings {
        dir: args.data_dir.join("ledger"),
        mode: LedgerMode::Async,
        checkpoint_records: 10_000,
        checkpoint_interval: std::time::Duration::from_secs(5),
        segment_bytes: 64 << 20,
        queue: 100_000,
        mask_keys: Vec::new(),
        replica: None,
        signing_key: None,
        retention: None,
        index_cache_bytes: 1 << 20,
        usage_max_entries: 10_000_000,
    })
    .context("cannot open the ledger")?;
    let now = SystemClock.now().0;
    let span = i64::try_from(args.days)? * 86_400_000;
    let start = now - span;
    let step = span / i64::try_from(args.records.max(1))?;
    let template: Record = serde_json::from_value(json!({
        "action": "read", "answered_from_cache": false, "approval": null,
        "approval_presented": null, "caller": "127.0.0.1:40000", "context": {}, "decision": "ALLOW",
        "decision_id": "", "errors": [], "evaluation_id": "", "facts_version": "sha256:facts",
        "owner": {"email": "owner@example.com", "entity": {"type": "Human", "id": "owner"}, "name": "Owner"},
        "policy_version": "sha256:policies", "principal": {"type": "ServiceAccount", "id": ""},
        "principal_status": "active", "reasons": [], "request_id": null,
        "resource": {"type": "Dataset", "id": ""}, "resource_scopes": [{"type": "Scope", "id": "data"}],
        "time": "", "trace_id": null, "valid_until": "",
    }))?;
    let mut pick = Pick(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for k in 0..args.records {
        let time = start + step * i64::try_from(k)?;
        let late = time > start + span / 6;
        let identity = loop {
            let i = pick.next() % args.identities.max(1);
            if !late || !i.is_multiple_of(10) {
                break i;
            }
        };
        let allowed = !pick.next().is_multiple_of(5);
        let mut record = template.clone();
        record.principal.id = format!("sa-{identity}");
        record.resource.id = format!("ds-{identity}");
        record.decision_id = uuid_v7_like(time, pick.next());
        record.evaluation_id = record.decision_id.clone();
        record.time = UnixMillis(time).to_rfc3339();
        record.valid_until = UnixMillis(time + 60_000).to_rfc3339();
        if allowed {
            record.reasons = vec![match identity < args.links {
                true => format!("sa-{identity}-reads-ds-{identity}-link"),
                false => "datasets-read".to_owned(),
            }];
        } else {
            record.decision = "DENY".into();
            record.reasons = vec!["warrant:no-permitting-policy".into()];
        }
        batch.push(record);
        if batch.len() == batch.capacity() {
            ledger.append(&batch).await?;
            batch.clear();
        }
    }
    ledger.append(&batch).await?;
    ledger.seal().await?;
    ledger.save_usage();
    let seconds = started.elapsed().as_secs_f64();
    Ok(format!(
        "records={} identities={} days={} written_in_s={seconds:.1} records_per_s={:.0}\n",
        args.records,
        args.identities,
        args.days,
        args.records as f64 / seconds
    ))
}
