//! What the rest of Warrant shows at scrape time, read from the parts themselves when
//! Prometheus asks: the decision cache, the active policies and facts, a replica's replication,
//! the control plane's requests, changes and reloads, the issuers' key sets and the process.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::credentials::Credentials;

use warrant_control::ControlStats;
use warrant_domain::clock::{Clock as _, SystemClock};
use warrant_engine::engine::Engine;

/// One metric family's HELP and TYPE lines.
pub(super) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The decision cache.
pub(super) fn write_cache(engine: &Engine, out: &mut String) {
    if let Some(cache) = engine.cache() {
        let c = cache.counters();
        for (name, help, value) in [
            (
                "warrant_cache_hits_total",
                "Checks answered from the decision cache.",
                c.hits.load(Ordering::Relaxed),
            ),
            (
                "warrant_cache_misses_total",
                "Cache lookups that found nothing (a malformed request is refused after its lookup).",
                c.misses.load(Ordering::Relaxed),
            ),
            (
                "warrant_cache_stale_total",
                "Cached decisions found but not answered: an entity they read has changed since (counted among the misses too).",
                c.stale.load(Ordering::Relaxed),
            ),
            (
                "warrant_cache_evictions_total",
                "Cached decisions pushed out because the cache was full.",
                c.evictions.load(Ordering::Relaxed),
            ),
        ] {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        family(
            out,
            "warrant_cache_entries",
            "gauge",
            "Decisions in the cache.",
        );
        let _ = writeln!(out, "warrant_cache_entries {}", cache.entry_count());
        family(
            out,
            "warrant_cache_bytes",
            "gauge",
            "Estimated bytes the cache holds.",
        );
        let _ = writeln!(out, "warrant_cache_bytes {}", cache.weighted_size());
    }
}

/// The active policies and facts.
pub(super) fn write_snapshot(engine: &Engine, out: &mut String) {
    let snapshot = engine.snapshot();
    family(
        out,
        "warrant_policy_info",
        "gauge",
        "The active policy set (its version changes with a reload that changes it and with each live template link or unlink).",
    );
    let _ = writeln!(
        out,
        "warrant_policy_info{{policy_version=\"{}\"}} 1",
        snapshot.policies.version()
    );
    family(
        out,
        "warrant_policy_links",
        "gauge",
        "Template links in force, by where they come from (the folder's links.json, or live through the admin API).",
    );
    let links = snapshot.policies.links();
    let (live, _) = links.live();
    let _ = writeln!(
        out,
        "warrant_policy_links{{origin=\"file\"}} {}\nwarrant_policy_links{{origin=\"live\"}} {live}",
        links.len() - live
    );
    let (parsed, parsed_bytes) = snapshot.facts.store().cache_usage();
    family(
        out,
        "warrant_facts_cache_entries",
        "gauge",
        "Entities of the facts store held parsed in memory (the rest are read as decisions need them).",
    );
    let _ = writeln!(out, "warrant_facts_cache_entries {parsed}");
    family(
        out,
        "warrant_facts_cache_bytes",
        "gauge",
        "Estimated bytes of the parsed entities held (at most facts_cache_bytes).",
    );
    let _ = writeln!(out, "warrant_facts_cache_bytes {parsed_bytes}");
    family(
        out,
        "warrant_facts_stale",
        "gauge",
        "1 while this replica's facts are past max_staleness (cut off from the shared database) and every decision is denied; always 0 on a single node.",
    );
    let _ = writeln!(
        out,
        "warrant_facts_stale {}",
        u8::from(engine.facts_stale())
    );
}

/// A replica's replication of the shared database.
pub(super) fn write_fleet(stats: &ControlStats, out: &mut String) {
    let (Some(replica), Some(fleet)) = (&stats.status.replica, &stats.fleet) else {
        return;
    };
    for (name, kind, help, value) in [
        (
            "warrant_replication_lag_seconds",
            "gauge",
            "How long ago this replica last held every change the shared database had committed.",
            format!("{:.3}", fleet.lag_ms as f64 / 1000.0),
        ),
        (
            "warrant_replication_changes_behind",
            "gauge",
            "Changes of the shared database's log this replica has heard of and not applied.",
            (replica.head_change - replica.applied_change)
                .max(0)
                .to_string(),
        ),
        (
            "warrant_replication_applied_change",
            "gauge",
            "The id of the last change of the shared database's log applied here.",
            replica.applied_change.to_string(),
        ),
        (
            "warrant_replication_reconnects_total",
            "counter",
            "Times the connection that hears the shared database's notifications was made again.",
            fleet.reconnects.to_string(),
        ),
        (
            "warrant_replication_failures_total",
            "counter",
            "Catch-ups with the shared database's log that failed.",
            fleet.failures.to_string(),
        ),
    ] {
        family(out, name, kind, help);
        let _ = writeln!(
            out,
            "{name}{{replica=\"{}\"}} {value}",
            label_value(&replica.id)
        );
    }
}

/// Approval requests, changes and reloads of the control plane.
pub(super) fn write_control(stats: &ControlStats, out: &mut String) {
    let status = &stats.status;
    let now = SystemClock.now();
    family(
        out,
        "warrant_approval_requests",
        "gauge",
        "Approval requests kept, by state (pending ones wait for a human's decision).",
    );
    for (state, count) in &stats.requests_by_state {
        let _ = writeln!(
            out,
            "warrant_approval_requests{{state=\"{}\"}} {count}",
            state.as_str()
        );
    }
    family(
        out,
        "warrant_approval_request_oldest_pending_seconds",
        "gauge",
        "How long the oldest pending approval request has waited (0 when none is pending).",
    );
    let oldest = stats
        .oldest_pending_at
        .map_or(0.0, |at| (now.0 - at).max(0) as f64 / 1000.0);
    let _ = writeln!(
        out,
        "warrant_approval_request_oldest_pending_seconds {oldest}"
    );
    family(
        out,
        "warrant_facts_changes_total",
        "counter",
        "Changes to the facts since start (admin changes, reloads that changed them).",
    );
    let _ = writeln!(out, "warrant_facts_changes_total {}", status.facts_changes);
    family(
        out,
        "warrant_facts_age_seconds",
        "gauge",
        "Seconds since the facts decisions are made from last changed.",
    );
    let _ = writeln!(
        out,
        "warrant_facts_age_seconds {:.3}",
        (now.0 - status.facts_changed_at.0).max(0) as f64 / 1000.0
    );
    family(
        out,
        "warrant_policy_reloads_total",
        "counter",
        "Policy reloads, by result (a failed one leaves the last good set serving).",
    );
    let _ = writeln!(
        out,
        "warrant_policy_reloads_total{{result=\"success\"}} {}\nwarrant_policy_reloads_total{{result=\"failure\"}} {}",
        status.reloads, status.reload_failures
    );
    family(
        out,
        "warrant_policy_reload_failing",
        "gauge",
        "1 while the last reload failed and no later one succeeded.",
    );
    let _ = writeln!(
        out,
        "warrant_policy_reload_failing {}",
        u8::from(status.last_reload_error.is_some())
    );
    family(
        out,
        "warrant_policy_age_seconds",
        "gauge",
        "Seconds since the serving policies were loaded.",
    );
    let _ = writeln!(
        out,
        "warrant_policy_age_seconds {:.3}",
        (now.0 - status.policies_loaded_at.0).max(0) as f64 / 1000.0
    );
    family(
        out,
        "warrant_live_facts",
        "gauge",
        "Entities changed or created through the admin API.",
    );
    let _ = writeln!(out, "warrant_live_facts {}", status.live_changes);
}

/// The issuers' key sets.
pub(super) fn write_credentials(credentials: &Credentials, out: &mut String) {
    family(
        out,
        "warrant_jwks_reads_total",
        "counter",
        "Times an issuer's keys (JWKS file or URL) were read (success) or could not be (failure; the keys held stay), by configured issuer.",
    );
    for keys in credentials.keys() {
        for (result, count) in [("success", &keys.reads), ("failure", &keys.read_failures)] {
            let _ = writeln!(
                out,
                "warrant_jwks_reads_total{{issuer=\"{}\",result=\"{result}\"}} {}",
                label_value(keys.issuer()),
                count.load(Ordering::Relaxed)
            );
        }
    }
    family(
        out,
        "warrant_jwks_key_set_changes_total",
        "counter",
        "Reads of an issuer's keys that changed its set (a key added, withdrawn or replaced); tokens verified with a withdrawn key stop verifying at once.",
    );
    for keys in credentials.keys() {
        let _ = writeln!(
            out,
            "warrant_jwks_key_set_changes_total{{issuer=\"{}\"}} {}",
            label_value(keys.issuer()),
            keys.key_set_changes.load(Ordering::Relaxed)
        );
    }
}

/// The standard `process_*` metrics, read from /proc at scrape time (Linux; elsewhere none).
pub(super) fn process_metrics(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces), counted from field 3.
    let Some(fields) = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>())
    else {
        return;
    };
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as f64;
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|b| b.trim().parse::<f64>().ok())
    });
    let mut write = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        write(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            (user + system) / ticks,
        );
    }
    if let (Some(start), Some(boot)) = (field(22), boot) {
        write(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            boot + start / ticks,
        );
    }
    if let Some(virtual_bytes) = field(23) {
        write(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            virtual_bytes,
        );
    }
    if let Some(pages) = field(24) {
        write(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            pages * page,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        write(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<f64>().ok())
        });
    if let Some(max_fds) = max_fds {
        write(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max_fds,
        );
    }
}

/// A label value as the Prometheus text format writes it (backslash, quote and newline escaped).
pub(super) fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
