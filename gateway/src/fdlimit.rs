//! The open-file limit: every client connection and every upstream connection is a descriptor,
//! so a long-running stream holds two. Many systems start services with a soft limit of 1 024
//! (systemd, Docker, a login shell) while allowing far more; the gateway raises its soft limit to
//! the hard limit at start-up, as nginx's `worker_rlimit_nofile` and Go's runtime do.

/// Soft limits below this get a warning at start-up: about half of it in concurrent streams.
pub const LOW_LIMIT: u64 = 4096;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// What start-up did to the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// Soft limit found.
    pub before: u64,
    /// Soft limit now.
    pub after: u64,
    /// Hard limit (the most an unprivileged process may set).
    pub hard: u64,
}

/// The current (soft, hard) limits on open files.
pub fn current() -> std::io::Result<(u64, u64)> {
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?)
}

/// Raises the soft open-file limit to the hard limit.
pub fn raise() -> std::io::Result<Raised> {
    let (soft, hard) = current()?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (after, hard) = current()?;
    Ok(Raised {
        before: soft,
        after,
        hard,
    })
}

/// Raises the limit and logs what it means for capacity.
pub fn raise_and_report() {
    match raise() {
        Ok(r) => {
            if r.after != r.before {
                tracing::info!(
                    before = r.before,
                    after = r.after,
                    "Raised the open-file limit to the hard limit."
                );
            }
            if r.after < LOW_LIMIT {
                tracing::warn!(
                    limit = r.after,
                    hard = r.hard,
                    "The open-file limit is low: each stream holds two descriptors (client and upstream), so about {} streams can run at once. Raise the hard limit (`ulimit -Hn`, systemd `LimitNOFILE=`, docker `--ulimit nofile=`).",
                    r.after / 2
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "Could not read or raise the open-file limit."),
    }
}

/// Descriptors open in this process right now (Linux: entries of `/proc/self/fd`).
pub fn open_count() -> Option<u64> {
    // The directory handle itself is one of the entries.
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| (d.count() as u64).saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_sets_the_soft_limit_to_the_hard_one_and_counts_open_files() {
        let r = raise().unwrap();
        assert_eq!(r.after, r.hard);
        assert_eq!(current().unwrap(), (r.hard, r.hard));
        let before = open_count().unwrap();
        let files: Vec<_> = (0..5)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        // Other test threads may open files meanwhile; ours are counted at least.
        assert!(open_count().unwrap() >= before + 5);
        drop(files);
    }
}
