//! What the decision cache really holds against what it counts (`cache_max_bytes` is a memory
//! bound only if the count is close to the truth). A counting allocator sees every live heap
//! byte; the cache's own weighing must be within 20% of what its entries add.

// The one place Warrant writes `unsafe`: a global allocator is an unsafe trait. It only forwards
// to the system's allocator and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use warrant_domain::clock::{ManualClock, UnixMillis};
use warrant_domain::{CheckRequest, ContextValue, EntityRef};
use warrant_engine::cache::CacheSettings;
use warrant_engine::engine::{Engine, EngineSettings};

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn read(n: usize) -> CheckRequest {
    CheckRequest {
        principal: EntityRef::new("ApiKey", "pipeline-etl"),
        action: "read".into(),
        resource: EntityRef::new("Dataset", "sales-2026"),
        context: BTreeMap::from([(
            "justification".to_owned(),
            ContextValue::String(format!("nightly export run {n}")),
        )]),
        approval_id: None,
        request_id: Some(format!("req-{n}")),
        resource_description: None,
        caller_identity: None,
        credential: None,
    }
}

#[test]
fn the_cache_counts_what_its_entries_cost_within_a_fifth() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let snapshot = warrant::server::load_snapshot(&dir).unwrap();
    let engine = Engine::new(
        snapshot,
        Arc::new(ManualClock::new(UnixMillis(1_795_000_000_000))),
        EngineSettings {
            cache: Some(CacheSettings {
                max_entries: 1_000_000,
                max_bytes: 1 << 28,
            }),
            ..EngineSettings::default()
        },
        warrant_engine::engine::EngineParts::default(),
    );
    let cache = engine.cache().unwrap();
    // Warm up whatever is made once (thread locals, moka's first structures).
    for n in 0..2_000 {
        engine.check(&read(n)).unwrap();
    }
    let (live_before, counted_before) = (LIVE.load(Ordering::Relaxed), cache.weighted_size());
    for n in 2_000..22_000 {
        engine.check(&read(n)).unwrap();
    }
    let counted = cache.weighted_size() - counted_before;
    let live = LIVE.load(Ordering::Relaxed) - live_before;
    let ratio = counted as f64 / live as f64;
    println!("20,000 entries: {live} live bytes, {counted} counted, ratio {ratio:.2}");
    assert!(
        (0.8..=1.2).contains(&ratio),
        "counted {counted} for {live} live bytes"
    );
}
