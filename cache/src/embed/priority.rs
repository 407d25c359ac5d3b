//! The calling thread's scheduling priority (Linux priorities are per thread: `setpriority` with
//! `PRIO_PROCESS` and a thread id changes that thread only).
//!
//! Two system calls with no safe wrapper among the crates the workspace builds: `nix` has none,
//! and turning on `rustix`'s `process` feature changes a crate deep in mistral.rs's dependency
//! tree (rustix → tempfile → safetensors → candle), which rebuilds the engine from scratch (about
//! 15 minutes here). So this is the one `unsafe` module outside the index.

#![allow(unsafe_code)]

/// Sets the calling thread's nice value; whether it worked.
pub(super) fn set_own(nice: i32) -> bool {
    // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice) == 0
    }
}

/// The calling thread's nice value.
#[cfg(test)]
pub(super) fn own() -> i32 {
    // SAFETY: reads the calling thread's own priority.
    unsafe {
        libc::getpriority(
            libc::PRIO_PROCESS,
            libc::syscall(libc::SYS_gettid) as libc::id_t,
        )
    }
}
