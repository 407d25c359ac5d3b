//! Snapshots: the cache written to one file, read back at start-up.
//!
//! Layout: `RGCACHE2`, the embedding model's id (u32 length + UTF-8: which model made the
//! vectors), entry count (u64 LE), then per entry a JSON record (u32 length + bytes) and its
//! vector (u32 dimension + f32 LE values), then the SHA-256 of everything before it. Version 1
//! files (`RGCACHE1`, no model id) are still read; their model is unknown.
//! Written to a temporary file and renamed, so a crash mid-write leaves the previous snapshot.
//! Any damage (bad magic, bad digest, truncation, bad JSON) rejects the whole file.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::key::Digest128;
use crate::store::{Entry, Record};
use crate::util::unhex;

const MAGIC: &[u8; 8] = b"RGCACHE2";
/// Version 1: no model id.
const MAGIC_V1: &[u8; 8] = b"RGCACHE1";
/// File name inside the configured directory.
pub const FILE: &str = "reasoning-cache.snapshot";

/// One loaded entry.
pub type Loaded = (Record, Digest128, Digest128, Vec<f32>);

/// A snapshot read back.
pub struct Snapshot {
    /// The embedding model that made the vectors (`None`: a version 1 file, unknown).
    pub model: Option<String>,
    /// Entries not yet expired.
    pub entries: Vec<Loaded>,
}

/// The snapshot path in a directory.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes every entry atomically, with the id of the model that made their vectors.
pub fn write(dir: &Path, model: &str, entries: &[std::sync::Arc<Entry>]) -> std::io::Result<()> {
    crate::files::create_private_dir(dir)?;
    let mut buf = Vec::with_capacity(entries.len() * 2048 + 64 + model.len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(model.len() as u32).to_le_bytes());
    buf.extend_from_slice(model.as_bytes());
    buf.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        let json = serde_json::to_vec(&e.record).map_err(std::io::Error::other)?;
        buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
        buf.extend_from_slice(&json);
        buf.extend_from_slice(&(e.vector.len() as u32).to_le_bytes());
        for x in &e.vector {
            buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    let digest = Sha256::digest(&buf);
    buf.extend_from_slice(&digest);
    // Cached prompts and answers: the gateway's user only.
    crate::files::write_atomic(&path(dir), &buf, Some(0o600))
}

/// Why a snapshot was not used.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No file (first start).
    #[error("no snapshot")]
    Missing,
    /// Unreadable.
    #[error("cannot read the snapshot: {0}")]
    Io(#[from] std::io::Error),
    /// Damaged.
    #[error("the snapshot is corrupt: {0}")]
    Corrupt(String),
}

/// Reads a snapshot; entries expired at `now` are dropped.
pub fn read(dir: &Path, now: u64) -> Result<Snapshot, ReadError> {
    let p = path(dir);
    let data = match std::fs::read(&p) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |m: &str| ReadError::Corrupt(m.to_string());
    if data.len() < MAGIC.len() + 8 + 32 || (&data[..8] != MAGIC && &data[..8] != MAGIC_V1) {
        return Err(corrupt("not a reasoning-gateway cache snapshot"));
    }
    let (body, digest) = data.split_at(data.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader { data: body, pos: 8 };
    let model = if &data[..8] == MAGIC {
        let len = r.u32().ok_or_else(|| corrupt("truncated header"))? as usize;
        let id = r.bytes(len).ok_or_else(|| corrupt("truncated header"))?;
        Some(String::from_utf8(id.to_vec()).map_err(|_| corrupt("bad model id"))?)
    } else {
        None
    };
    let count = r.u64().ok_or_else(|| corrupt("truncated header"))?;
    let mut out = Vec::new();
    for i in 0..count {
        let bad = || ReadError::Corrupt(format!("entry {i} is damaged"));
        let len = r.u32().ok_or_else(bad)? as usize;
        let json = r.bytes(len).ok_or_else(bad)?;
        let record: Record = serde_json::from_slice(json).map_err(|_| bad())?;
        let dim = r.u32().ok_or_else(bad)? as usize;
        let raw = r.bytes(dim * 4).ok_or_else(bad)?;
        let vector: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let partition = unhex(&record.partition).ok_or_else(bad)?;
        let exact = unhex(&record.exact).ok_or_else(bad)?;
        if record.expires > now {
            out.push((record, partition, exact, vector));
        }
    }
    if r.pos != body.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Snapshot {
        model,
        entries: out,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::util::hex;

    fn record(problem: &str, expires: u64) -> Record {
        Record {
            route: "r".into(),
            tenant: "t".into(),
            partition: hex(&[1; 16]),
            exact: hex(&[2; 16]),
            problem: problem.into(),
            reasoning: "because".into(),
            answer: "yes".into(),
            model: "m".into(),
            usage: None,
            created: 1,
            expires,
        }
    }

    fn written(dir: &Path) -> Vec<u8> {
        let s = Store::new();
        s.insert(record("q1", 100), [1; 16], [2; 16], vec![0.6, 0.8], 10);
        s.insert(record("q2", 5), [1; 16], [3; 16], vec![1.0, 0.0], 10);
        write(dir, "model-a", &s.export()).unwrap();
        std::fs::read(path(dir)).unwrap()
    }

    /// Snapshots hold every cached prompt and answer: the gateway's user only.
    #[cfg(unix)]
    #[test]
    fn snapshots_are_0600_in_a_0700_directory() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempdir("mode");
        let dir = base.join("cache");
        written(&dir);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path(&dir)), 0o600);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn round_trip_drops_expired_entries() {
        let dir = tempdir("rt");
        written(&dir);
        let snap = read(&dir, 10).unwrap();
        assert_eq!(snap.model.as_deref(), Some("model-a"));
        let loaded = snap.entries;
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0.problem, "q1");
        assert_eq!(loaded[0].3, vec![0.6, 0.8]);
        assert_eq!(loaded[0].1, [1; 16]);
    }

    #[test]
    fn damage_anywhere_is_reported_not_loaded() {
        let dir = tempdir("dmg");
        let good = written(&dir);
        for cut in [0, 5, 20, good.len() / 2, good.len() - 1] {
            std::fs::write(path(&dir), &good[..cut]).unwrap();
            assert!(
                matches!(read(&dir, 0), Err(ReadError::Corrupt(_))),
                "cut {cut}"
            );
        }
        let mut flipped = good.clone();
        flipped[30] ^= 0x40;
        std::fs::write(path(&dir), &flipped).unwrap();
        assert!(matches!(read(&dir, 0), Err(ReadError::Corrupt(_))));
        std::fs::remove_file(path(&dir)).unwrap();
        assert!(matches!(read(&dir, 0), Err(ReadError::Missing)));
    }

    #[test]
    fn version_1_files_still_load_with_an_unknown_model() {
        let dir = tempdir("v1");
        let v2 = written(&dir);
        // The same entries as version 1 wrote them: no model id, its own magic and digest.
        let id_end = 8 + 4 + "model-a".len();
        let mut v1 = MAGIC_V1.to_vec();
        v1.extend_from_slice(&v2[id_end..v2.len() - 32]);
        let digest = Sha256::digest(&v1);
        v1.extend_from_slice(&digest);
        std::fs::write(path(&dir), &v1).unwrap();
        let snap = read(&dir, 10).unwrap();
        assert_eq!(snap.model, None);
        assert_eq!(snap.entries.len(), 1);
        assert_eq!(snap.entries[0].0.problem, "q1");
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rg-snap-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
