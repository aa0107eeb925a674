//! Giving freed heap memory back to the system.
//!
//! glibc's allocator keeps a heap ("arena") per busy thread and keeps what is freed in it for
//! reuse: after a burst of requests each HTTP worker and database thread holds on to the
//! memory its busiest moment needed, and a password hash's 9 MiB, freed, stays in its
//! thread's heap. Two settings and one call fix that (measured in BENCHMARKS.md):
//!
//! - Fixed thresholds (`mallopt`). By default glibc raises its mmap threshold to the size of
//!   the largest block freed (up to 32 MiB), and its trim threshold to twice that: after the
//!   first password hash, its 9 MiB came from a thread's heap and stayed there when freed,
//!   and every heap kept up to 18 MiB of free memory at its top. With the thresholds fixed,
//!   a block of 128 KiB or more is its own mapping, unmapped when freed, and a heap gives
//!   back free memory at its top beyond 128 KiB.
//! - `malloc_trim(0)`, every few seconds: hands back the free pages inside every heap.

/// Return the allocator's free pages to the system. A no-op where the C library is not
/// glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions: it takes the allocator's locks and releases
    // free pages; it never touches memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fix glibc's mmap and trim thresholds at their documented defaults (128 KiB), which turns
/// off their growth. Called once, first thing in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets the allocator's parameters; called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}
