//! Files written so a crash never leaves half of one: a temporary file beside the target,
//! synced, then renamed over it, and the directory synced so the rename itself survives.
//! Files that hold prompts, answers or credentials live in directories only the gateway's
//! user can enter.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically; `mode` (Unix permissions) for files holding secrets.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Each call its own temporary file: two writers of one path (two updates of one job)
    // must not write into the same temporary file, or the renamed result can mix both.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if let Some(m) = mode {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(m);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    // The rename is an entry in the directory: without this a crash can lose it.
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Creates `dir` (and missing parents) readable by the gateway's user only (0700); an
/// existing directory is left as the operator made it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_in_a_0700_directory() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("rg-fsutil-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("a").join("b");
        create_private_dir(&dir).unwrap();
        let file = dir.join("snapshot.bin");
        write_atomic(&file, b"secret prompts", Some(0o600)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&base.join("a")), 0o700);
        assert_eq!(mode(&file), 0o600);
        // Existing directories are accepted as they are.
        create_private_dir(&dir).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn concurrent_writers_of_one_file_leave_one_whole_version() {
        let dir = std::env::temp_dir().join(format!("rg-fsutil-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.json");
        // Versions of different lengths, so a mix of two would show.
        let versions: Vec<Vec<u8>> = (0..8)
            .map(|i| vec![b'a' + i as u8; 1000 + i * 5000])
            .collect();
        std::thread::scope(|s| {
            for v in &versions {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(path, v, Some(0o600)).unwrap();
                    }
                });
            }
        });
        let last = std::fs::read(&path).unwrap();
        assert!(
            versions.contains(&last),
            "a mixed file of {} bytes",
            last.len()
        );
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("job.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
