//! How many heap buffers of 1 KiB or more one sync update of a 1 KiB attribute allocates, on
//! the owner and its backup together (both in this process, over loopback TCP without TLS):
//! the application's value, the owner's packed attributes, the backup's decoded value and its
//! packed attributes. glibc consolidates its fast bins on every allocation of that size, which
//! would make malloc/free a quarter of the CPU of an update (docs/benchmarks/README.md).
//!
//! A test binary of its own: it installs a counting global allocator.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use replication_core::Attributes;
use session_api::{AckPolicy, Replication, SessionManager};
use support::{domain_text, parse};
use tracking_allocator::{AllocationGroupId, AllocationRegistry, AllocationTracker, Allocator};

#[global_allocator]
static GLOBAL: Allocator<std::alloc::System> = Allocator::system();

/// Allocations of at least this many bytes are counted.
const LARGE: usize = 1024;

static LARGE_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Every allocation, for the printed figure (small ones are not what this test bounds).
static ALL_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct CountLarge;

impl AllocationTracker for CountLarge {
    fn allocated(&self, _addr: usize, object_size: usize, _wrapped: usize, _group: AllocationGroupId) {
        ALL_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if object_size >= LARGE {
            let n = LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // `TRACE_LARGE=1 cargo test -p session-api --test large_allocations -- --nocapture`
            // prints where some of them come from (the tracker's own allocations are not
            // counted).
            if (100..124).contains(&n) && std::env::var_os("TRACE_LARGE").is_some() {
                eprintln!("=== {object_size} bytes\n{}", std::backtrace::Backtrace::force_capture());
            }
        }
    }

    fn deallocated(&self, _: usize, _: usize, _: usize, _: AllocationGroupId, _: AllocationGroupId) {}
}

async fn start(cfg: &replication_core::DomainConfig, name: &str, l: std::net::TcpListener) -> SessionManager {
    SessionManager::builder(cfg.clone(), name)
        .insecure()
        .tcp_listener(l)
        .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) })
        .start()
        .await
        .expect("node starts")
}

/// One sync update of a 1 KiB attribute allocates at most this many buffers of 1 KiB or more,
/// owner and backup together (4, and a little room for a buffer that grows now and then).
/// Copies that must not come back: the value copied for the request, the owner's packed
/// attributes built twice (a `Vec`, then an `Arc` copied from it), a decoder scratch buffer
/// grown for every frame, the backup's packed attributes built twice, and the session handle's
/// new base built three times (owned copies of the entries, a `Vec`, the `Arc`).
const MAX_PER_UPDATE: f64 = 4.25;

/// A create of a session with a 1 KiB attribute (the application's buffer is made before):
/// the backup's packed attributes, and a little room.
const MAX_PER_CREATE: f64 = 1.25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_update_of_1_kib_allocates_few_large_buffers() {
    AllocationRegistry::set_global_tracker(CountLarge).expect("the only tracker");
    let (la, lb) = (
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
    );
    let nodes = [
        ("a", la.local_addr().expect("bound").to_string(), "both"),
        ("b", lb.local_addr().expect("bound").to_string(), "both"),
    ];
    let cfg = parse(&domain_text("transport = \"tcp\"\nreplicas = 1\n", &nodes));
    let a = start(&cfg, "a", la).await;
    let _b = start(&cfg, "b", lb).await;
    let mut attrs = Attributes::new();
    attrs.insert("data", vec![0u8; 1024]);
    attrs.insert("user", b"alice");
    // The backup must be up for a write to be replicated: retry the create until it is.
    let mut s = None;
    for _ in 0..200 {
        let made = a.create_with(attrs.clone()).await.expect("create");
        let id = made.id().to_owned();
        let mut probe = a.get(&id).await.expect("read").expect("exists");
        probe.set_bytes("data", vec![1u8; 1024]).expect("live");
        if matches!(a.commit(&mut probe).await.expect("commit").replication, Replication::Replicated { .. }) {
            s = Some(probe);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut s = s.expect("the backup came up");
    let update = |s: &mut session_api::Session, n: u8| {
        s.set_bytes("data", vec![n; 1024]).expect("live");
    };
    for n in 0..50u8 {
        update(&mut s, n);
        a.commit(&mut s).await.expect("warm-up commit");
    }
    const UPDATES: u64 = 400;
    AllocationRegistry::enable_tracking();
    for n in 0..UPDATES {
        update(&mut s, n as u8);
        let c = a.commit(&mut s).await.expect("commit");
        assert!(matches!(c.replication, Replication::Replicated { acks: 1 }), "{:?}", c.replication);
    }
    AllocationRegistry::disable_tracking();
    let per_update = LARGE_ALLOCATIONS.load(Ordering::Relaxed) as f64 / UPDATES as f64;
    let all = ALL_ALLOCATIONS.load(Ordering::Relaxed) as f64 / UPDATES as f64;
    println!("allocations of {LARGE} bytes or more per sync update: {per_update:.2} (of {all:.1} in all)");
    assert!(
        per_update <= MAX_PER_UPDATE,
        "{per_update:.2} allocations of {LARGE}+ bytes per update (at most {MAX_PER_UPDATE})"
    );
    // The handle's base after the commits (taken from the node, not built by the handle) is
    // what the node holds: the last value, and the attribute no write changed.
    let last = vec![(UPDATES - 1) as u8; 1024];
    assert_eq!(s.get_bytes("data"), Some(&last[..]));
    assert_eq!(s.get_bytes("user"), Some(&b"alice"[..]));
    let read = a.get(s.id()).await.expect("read").expect("exists");
    assert_eq!(read.attributes(), s.attributes());
    assert_eq!(read.version(), s.version());

    // A create sends the whole session (a full copy): the backup decodes its attributes
    // straight into their packed buffer (no decoder scratch buffer, no decoded value copied
    // into it).
    const CREATES: u64 = 200;
    LARGE_ALLOCATIONS.store(0, Ordering::Relaxed);
    AllocationRegistry::enable_tracking();
    for _ in 0..CREATES {
        let made = a.create_with(attrs.clone()).await.expect("create");
        assert_eq!(made.get_bytes("user"), Some(&b"alice"[..]));
    }
    AllocationRegistry::disable_tracking();
    let per_create = LARGE_ALLOCATIONS.load(Ordering::Relaxed) as f64 / CREATES as f64;
    println!("allocations of {LARGE} bytes or more per create: {per_create:.2}");
    assert!(
        per_create <= MAX_PER_CREATE,
        "{per_create:.2} allocations of {LARGE}+ bytes per create (at most {MAX_PER_CREATE})"
    );
}
