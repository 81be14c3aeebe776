//! Fork detection. LMDB environments, the writer thread and the id generator's random state
//! must not be reused in a child after `fork()`; every user compares the generation it was
//! created in with the current one and starts afresh when they differ.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTER: Once = Once::new();

/// Runs in the forking thread just before `fork()`: lets one-time initialisations that
/// another thread has in flight finish, so the child never inherits one half done (it would
/// wait for it forever; see `redact::builtin`).
extern "C" fn before_fork() {
    crate::redact::builtin();
}

extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The number of `fork()`s this process descends from since the handler was installed.
/// Cheap enough for every call on the hot path (one atomic load after the first call).
pub fn generation() -> u64 {
    REGISTER.call_once(|| {
        // SAFETY: `after_fork_in_child` only touches an atomic, which is async-signal-safe;
        // `before_fork` runs before the fork, where any code may run; both stay valid for
        // the life of the process (they are plain fns).
        let rc =
            unsafe { libc::pthread_atfork(Some(before_fork), None, Some(after_fork_in_child)) };
        debug_assert_eq!(rc, 0);
    });
    GENERATION.load(Ordering::Acquire)
}
