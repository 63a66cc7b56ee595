//! Freeing a stopped node's records off the application's runtime.
//!
//! A node that stops (shutdown, abort, leave) drops its engine with every record in it: half a
//! million 1 KiB copies take about two seconds of CPU to free, under the allocator's locks. On
//! a worker of the application's runtime that would hold up every task queued behind the
//! driver's for as long (in the benchmark, the remaining owner's lease lapsed while a stopped
//! node in the same process freed its copies). A large node is therefore dropped on a thread
//! of its own; a small one where it stops, a thread costing more than its records.

/// Records from which a stopped node is freed on a thread of its own.
pub(super) const FREED_APART: usize = 1 << 14;

/// Drops `value`, which holds `records` session records: on a thread named `m2m-free` from
/// [`FREED_APART`] records, here below (or if no thread can be started).
pub(super) fn drop_apart<T: Send + 'static>(value: T, records: usize) {
    if records < FREED_APART {
        drop(value);
        return;
    }
    // On failure the closure, and `value` with it, is dropped here.
    let _ = std::thread::Builder::new().name("m2m-free".into()).spawn(move || drop(value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Sends the name of the thread that drops it.
    struct Named(mpsc::Sender<Option<String>>);

    impl Drop for Named {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().name().map(str::to_owned));
        }
    }

    #[test]
    fn a_large_node_is_freed_on_a_thread_of_its_own_and_a_small_one_in_place() {
        let here = std::thread::current().name().map(str::to_owned);
        let (tx, rx) = mpsc::channel();
        drop_apart(Named(tx.clone()), FREED_APART);
        let large = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("dropped");
        assert_eq!(large.as_deref(), Some("m2m-free"));
        drop_apart(Named(tx), FREED_APART - 1);
        let small = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("dropped");
        assert_eq!(small, here);
    }
}
