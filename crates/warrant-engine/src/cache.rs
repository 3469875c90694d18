//! The decision cache. Remembers a decision only while it provably equals a fresh evaluation:
//! the key holds everything the request said (the caller's names and full context, the
//! presented approval, the resource's description) and the policy versions; the entry holds the
//! revision of every entity the decision read, and is answered only while each still has that
//! revision, so a change to the facts forgets exactly the decisions that read what it changed.
//! An entry dies at the first instant the decision could change (the earliest time bound it
//! read) or at its maximum age, whichever comes first. A read never extends an entry's life.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;

use cedar_policy::EntityUid;

use warrant_domain::clock::UnixMillis;
use warrant_domain::{ContextValue, Decision, EntityRef, ResourceDescription};

/// How big the cache may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub max_entries: u64,
    /// An estimate: keys and decisions as laid out in memory, plus their strings.
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_entries: 100_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Everything a decision depends on besides the clock and the facts it read. Equality is
/// structural: two requests share an entry only if every part is equal (no concatenated
/// strings, no truncated hashes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub principal: EntityRef,
    pub action: String,
    pub resource: EntityRef,
    pub context: BTreeMap<String, ContextValue>,
    pub approval_id: Option<String>,
    /// What the caller said of the resource (decided on when the facts do not hold it).
    pub resource_description: Option<ResourceDescription>,
    /// The caller's verified identity (`context.caller` where declared).
    pub caller_identity: Option<Arc<str>>,
    /// SHA-256 of the credential presented: a hit needs the same token (and the entry expires
    /// with it).
    pub credential_sha256: Option<[u8; 32]>,
    /// `PolicySnapshot::files_version`: the policy folder's version.
    pub policy_version: Arc<str>,
    /// The template links' lineage (`Links::lineage`): `links_read_at` means something only
    /// within it.
    pub links_lineage: u64,
    /// The facts' lineage (`Facts::lineage`): the revisions an entry holds mean something only
    /// within it.
    pub facts_lineage: u64,
    /// The shadow policy set's version, when one is evaluated beside the active set.
    pub shadow_version: Option<Arc<str>>,
}

/// The entities a decision read, each with its revision then (`Facts::reached`).
pub type Reads = Box<[(EntityUid, u64)]>;

/// A decision as first evaluated, the instant it stops being true, and what it read at which
/// revision of the facts.
#[derive(Debug)]
pub struct CachedDecision {
    pub decision: Decision,
    pub expires_at: UnixMillis,
    pub reads: Reads,
    /// `Facts::revision` of the facts it was made from.
    pub read_at: u64,
    /// `Links::revision` of the links it was made under.
    pub links_read_at: u64,
}

/// Counters for the metrics endpoint and for tests.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Lookups that found an entry made before a change to an entity it read (counted among
    /// the misses too).
    pub stale: AtomicU64,
    /// Entries pushed out because the cache was full.
    pub evictions: AtomicU64,
}

pub struct DecisionCache {
    entries: moka::sync::Cache<CacheKey, Arc<CachedDecision>>,
    counters: Arc<CacheCounters>,
}

/// Expiry fixed at insert from the entry's own `expires_at`; reads and updates leave it alone.
struct FixedExpiry;

impl moka::Expiry<CacheKey, Arc<CachedDecision>> for FixedExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedDecision>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let lifetime = value.expires_at.0 - value.decision.provenance.decided_at.0;
        Some(Duration::from_millis(lifetime.max(0) as u64))
    }
}

impl DecisionCache {
    pub fn new(settings: CacheSettings) -> Self {
        let counters = Arc::new(CacheCounters::default());
        let evictions = Arc::clone(&counters);
        // Each entry weighs at least max_bytes / max_entries, so both bounds hold at once.
        let floor = (settings.max_bytes / settings.max_entries.max(1)).max(1);
        let entries = moka::sync::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(move |key: &CacheKey, value: &Arc<CachedDecision>| {
                u32::try_from(estimated_bytes(key, value).max(floor)).unwrap_or(u32::MAX)
            })
            .expire_after(FixedExpiry)
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    evictions.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        DecisionCache { entries, counters }
    }

    /// The cached decision for `key` if it is still true at `now` and every entity it read is
    /// still at the revision it read (`unchanged(read_at, reads)`, e.g. `Facts::unchanged_since`).
    pub fn get(
        &self,
        key: &CacheKey,
        now: UnixMillis,
        unchanged: impl Fn(&CachedDecision) -> bool,
    ) -> Option<Arc<CachedDecision>> {
        // moka's expiry runs on the machine's clock; the engine's clock is the one that counts.
        let found = self
            .entries
            .get(key)
            .filter(|entry| now < entry.expires_at && now >= entry.decision.provenance.decided_at);
        let found = match found {
            Some(entry) if !unchanged(&entry) => {
                self.counters.stale.fetch_add(1, Ordering::Relaxed);
                None
            }
            found => found,
        };
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, key: CacheKey, entry: CachedDecision) {
        self.entries.insert(key, Arc::new(entry));
    }

    pub fn counters(&self) -> &CacheCounters {
        &self.counters
    }

    /// Entries held now (approximate: moka applies writes in batches).
    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Estimated bytes held now.
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

/// What moka keeps per entry besides the key and value themselves (its hash table slot, the
/// access-order and timer-wheel nodes, the entry's metadata), measured with a counting allocator
/// by `tests/cache_memory.rs` on moka 0.12.
const ENTRY_OVERHEAD: u64 = 256;

/// The heap bytes of a `BTreeMap` with `len` entries of `(K, V)`: std allocates whole nodes of
/// eleven slots, so even a map of one entry costs a full leaf.
fn btree_bytes<K, V>(len: usize) -> u64 {
    const SLOTS: u64 = 11;
    if len == 0 {
        return 0;
    }
    let slot = (std::mem::size_of::<K>() + std::mem::size_of::<V>()) as u64;
    let leaf = SLOTS * slot + 16;
    let leaves = (len as u64).div_ceil(SLOTS);
    // Internal nodes add their own slots and twelve child pointers each.
    let internal = leaves.saturating_sub(1).div_ceil(SLOTS) * (leaf + 12 * 8);
    leaves * leaf + internal
}

/// The heap bytes a context holds (its values' inline size is counted by their container).
fn context_heap_bytes(value: &ContextValue) -> u64 {
    match value {
        ContextValue::Bool(_) | ContextValue::Long(_) => 0,
        ContextValue::String(s) => s.capacity() as u64,
        ContextValue::Set(items) => {
            (items.capacity() * std::mem::size_of::<ContextValue>()) as u64
                + items.iter().map(context_heap_bytes).sum::<u64>()
        }
        ContextValue::Record(fields) => record_heap_bytes(fields),
    }
}

fn record_heap_bytes(fields: &std::collections::BTreeMap<String, ContextValue>) -> u64 {
    btree_bytes::<String, ContextValue>(fields.len())
        + fields
            .iter()
            .map(|(k, v)| k.capacity() as u64 + context_heap_bytes(v))
            .sum::<u64>()
}

/// What one entry costs: the key, the decision (its own heap, not the facts it shares with
/// the snapshot through `Arc`s) and moka's bookkeeping.
fn estimated_bytes(key: &CacheKey, value: &CachedDecision) -> u64 {
    let entity = |e: &EntityRef| (e.type_name.capacity() + e.id.capacity()) as u64;
    let text = |s: &String| s.capacity() as u64;
    let key_bytes = std::mem::size_of::<CacheKey>() as u64
        + entity(&key.principal)
        + entity(&key.resource)
        + text(&key.action)
        + key.approval_id.as_ref().map_or(0, text)
        + record_heap_bytes(&key.context)
        // `caller_identity` is an `Arc` the connection holds too: nothing of its own.
        + key.resource_description.as_ref().map_or(0, |d| {
            record_heap_bytes(&d.attributes)
                + (d.parents.capacity() * std::mem::size_of::<EntityRef>()) as u64
                + d.parents.iter().map(entity).sum::<u64>()
        });
    let decision = &value.decision;
    let decision_bytes = std::mem::size_of::<CachedDecision>() as u64
        // Behind the `Arc` moka keeps: its two counts.
        + 16
        // The uids share their names with the facts (`Arc`s, inline short ids).
        + (value.reads.len() * std::mem::size_of::<(EntityUid, u64)>()) as u64
        + (decision.reasons.capacity() * std::mem::size_of::<String>()) as u64
        + decision.reasons.iter().map(text).sum::<u64>()
        + (decision.errors.capacity() * std::mem::size_of::<warrant_domain::PolicyError>()) as u64
        + decision
            .errors
            .iter()
            .map(|e| (e.policy_id.capacity() + e.message.capacity()) as u64)
            .sum::<u64>()
        + entity(&decision.provenance.principal)
        + entity(&decision.provenance.resource)
        + (decision.provenance.policy_links.capacity()
            * std::mem::size_of::<warrant_domain::PolicyLink>()) as u64
        + decision
            .provenance
            .policy_links
            .iter()
            .map(|link| {
                let slot = |e: &Option<EntityRef>| e.as_ref().map_or(0, entity);
                (link.link.capacity() + link.template.capacity()) as u64
                    + slot(&link.principal)
                    + slot(&link.resource)
            })
            .sum::<u64>()
        + decision.request_id.as_ref().map_or(0, text);
    key_bytes + decision_bytes + ENTRY_OVERHEAD
}
