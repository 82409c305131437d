//! The sha256 of local input files, remembered between runs by their metadata, as git's index
//! remembers what it hashed. Every artifact the CLI writes records its input's digest, and
//! hashing a model is a whole pass over it at about 2 GB/s on one core: more than compressing
//! it takes on the other. A sweep of presets over one model pays it once.
//!
//! An entry holds the file's device, inode, size, modification and change times, taken before
//! the hash and checked again after it; a file written in place changes its change time (which
//! no user can set), so a changed file is never given an old digest. Entries live in
//! `SQUEEZE_DIGEST_CACHE` (a folder, or `off`), by default `~/.cache/squeeze/digests`; a
//! missing or unwritable folder only means the file is hashed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::Digest;

/// The file's sha256 (hex), from the cache when its metadata is unchanged.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    file_sha256_in(path, cache_dir().as_deref())
}

fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("SQUEEZE_DIGEST_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("squeeze").join("digests")),
    }
}

fn file_sha256_in(path: &Path, cache: Option<&Path>) -> std::io::Result<String> {
    let Some(cache) = cache else {
        return hash(path);
    };
    let before = Stamp::of(path)?;
    let entry = cache.join(entry_name(path));
    if let Some(digest) = std::fs::read_to_string(&entry)
        .ok()
        .and_then(|text| before.digest_in(&text))
    {
        return Ok(digest);
    }
    let digest = hash(path)?;
    if Stamp::of(path)? == before {
        // Best effort: an entry that cannot be written costs the next run a hash, nothing more.
        let _ = write_entry(cache, &entry, &before.entry(&digest));
    }
    Ok(digest)
}

/// What identifies one version of a file.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

const HEADER: &str = "squeeze file digest 1";

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            device: m.dev(),
            inode: m.ino(),
            size: m.len(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
        })
    }

    fn line(&self) -> String {
        format!(
            "{} {} {} {}.{:09} {}.{:09}",
            self.device,
            self.inode,
            self.size,
            self.modified.0,
            self.modified.1,
            self.changed.0,
            self.changed.1
        )
    }

    fn entry(&self, digest: &str) -> String {
        format!("{HEADER}\n{}\n{digest}\n", self.line())
    }

    /// The digest an entry holds for exactly this stamp.
    fn digest_in(&self, text: &str) -> Option<String> {
        let mut lines = text.lines();
        let (header, stamp, digest) = (lines.next()?, lines.next()?, lines.next()?);
        let well_formed = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        (header == HEADER && stamp == self.line() && well_formed).then(|| digest.to_owned())
    }
}

/// One entry per file, named by the sha256 of its absolute path.
fn entry_name(path: &Path) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    hex::encode(sha2::Sha256::digest(
        absolute.as_os_str().as_encoded_bytes(),
    ))
}

/// Entries kept; past this the older half goes (each is about 150 bytes; temporary files, as
/// tests make, would otherwise leave entries forever).
const MOST_ENTRIES: usize = 4096;

fn write_entry(cache: &Path, entry: &Path, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(cache)?;
    prune(cache)?;
    // Written aside and renamed over: a reader sees the old entry or the new, never half.
    let temp = entry.with_extension(format!("{}.part", std::process::id()));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, entry).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

fn prune(cache: &Path) -> std::io::Result<()> {
    let mut entries = Vec::new();
    for item in std::fs::read_dir(cache)? {
        let item = item?;
        entries.push((item.metadata()?.modified()?, item.path()));
    }
    if entries.len() > MOST_ENTRIES {
        entries.sort();
        for (_, path) in &entries[..entries.len() - MOST_ENTRIES / 2] {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

fn hash(path: &Path) -> std::io::Result<String> {
    /// Bytes mapped at a time: the mapped pages count in the process's resident memory.
    const WINDOW: u64 = 1 << 24;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut hasher = sha2::Sha256::new();
    // Hashed from mappings rather than read into a buffer: the file is in the page cache (the
    // run reads it too), and copying it out would cost a fifth as much as the hashing.
    for offset in (0..len).step_by(WINDOW as usize) {
        // SAFETY: the run maps the same file; a file changed under the CLI while it runs gives
        // a wrong digest (as a read would) or SIGBUS if truncated, as the run's own mapping does.
        let window = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(WINDOW.min(len - offset) as usize)
                .map(&file)?
        };
        hasher.update(&window[..]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(bytes: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(bytes))
    }

    /// A folder holding a file of `bytes` and the path for a cache beside it.
    fn setup(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (cache, file) = (dir.path().join("cache"), dir.path().join("model.bin"));
        std::fs::write(&file, bytes).unwrap();
        (dir, cache, file)
    }

    #[test]
    fn a_remembered_digest_is_used_until_the_file_changes() {
        let (_dir, cache, file) = setup(b"first version");
        let first = file_sha256_in(&file, Some(&cache)).unwrap();
        assert_eq!(first, plain(b"first version"));
        let entry = cache.join(entry_name(&file));
        assert!(entry.exists());
        // The entry is what the second run reads: a digest planted under the same stamp is
        // returned as it is.
        let planted = "ab".repeat(32);
        std::fs::write(&entry, Stamp::of(&file).unwrap().entry(&planted)).unwrap();
        assert_eq!(file_sha256_in(&file, Some(&cache)).unwrap(), planted);
        // Without the cache the file is hashed.
        assert_eq!(file_sha256_in(&file, None).unwrap(), first);
        // Rewritten in place, same size: its change time moves, and it is hashed again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, b"other version").unwrap();
        assert_eq!(
            file_sha256_in(&file, Some(&cache)).unwrap(),
            plain(b"other version")
        );
    }

    #[test]
    fn a_damaged_or_foreign_entry_is_ignored() {
        let (dir, cache, file) = setup(b"bytes");
        std::fs::create_dir_all(&cache).unwrap();
        let entry = cache.join(entry_name(&file));
        let stamp = Stamp::of(&file).unwrap();
        for text in [
            String::new(),
            "garbage".to_owned(),
            stamp.entry("not hex"),
            format!("other header\n{}\n{}\n", stamp.line(), "cd".repeat(32)),
        ] {
            std::fs::write(&entry, &text).unwrap();
            assert_eq!(
                file_sha256_in(&file, Some(&cache)).unwrap(),
                plain(b"bytes"),
                "{text:?}"
            );
        }
        // A full cache drops its older half when it takes a new entry.
        for i in 0..MOST_ENTRIES {
            std::fs::write(cache.join(format!("{i:064}")), b"").unwrap();
        }
        let other = dir.path().join("other.bin");
        std::fs::write(&other, b"more").unwrap();
        file_sha256_in(&other, Some(&cache)).unwrap();
        let left = std::fs::read_dir(&cache).unwrap().count();
        assert!(left <= MOST_ENTRIES / 2 + 1, "{left} entries");
        assert!(cache.join(entry_name(&other)).exists());
        // An unwritable cache location (a file where the folder would be) costs nothing.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        assert_eq!(
            file_sha256_in(&file, Some(&blocked.join("sub"))).unwrap(),
            plain(b"bytes")
        );
    }
}
