//! Digests of local input files, remembered between runs by their metadata, as git's index
//! remembers what it hashed. Every artifact the CLI writes records its input's BLAKE3 (and its
//! sha256 when the user asks for checksums). Hashing a model is a whole pass over it: sha256 runs
//! at about 1.5 GB/s on one core even with the CPU's SHA extensions, BLAKE3 at about 3 GB/s,
//! and on a small machine either competes with the compression for the same cores, so the
//! CLI's own provenance takes the faster one and a sweep of presets over one model pays it once.
//!
//! An entry holds the file's device, inode, size, modification and change times, taken before
//! the hash and checked again after it; a file written in place changes its change time (which
//! no user can set), so a changed file is never given an old digest. Entries live in
//! `SQUEEZE_DIGEST_CACHE` (a folder, or `off`), by default `~/.cache/squeeze/digests`, one per
//! file and algorithm; a missing or unwritable folder only means the file is hashed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::Digest;

/// A digest the CLI can take of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// What the Hugging Face hub and `sha256sum` show; the service's uploads are keyed by it.
    Sha256,
    /// What `b3sum` shows: twice sha256's speed on one core here, and more with wider vectors.
    Blake3,
}

impl Algorithm {
    /// The first line of a cache entry (sha256 entries keep the header they always had).
    fn header(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "squeeze file digest 1",
            Algorithm::Blake3 => "squeeze file blake3 1",
        }
    }

    fn entry_suffix(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "",
            Algorithm::Blake3 => ".blake3",
        }
    }
}

/// The file's sha256 (hex), from the cache when its metadata is unchanged.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let [digest] = file_digests(path, [Algorithm::Sha256])?;
    Ok(digest)
}

/// The file's digests (hex) under each algorithm, in one read of the file for those the cache
/// does not hold.
pub fn file_digests<const N: usize>(
    path: &Path,
    algorithms: [Algorithm; N],
) -> std::io::Result<[String; N]> {
    file_digests_in(path, algorithms, cache_dir().as_deref())
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

fn file_digests_in<const N: usize>(
    path: &Path,
    algorithms: [Algorithm; N],
    cache: Option<&Path>,
) -> std::io::Result<[String; N]> {
    match FileDigest::begin_in(path, &algorithms, cache)? {
        FileDigest::Remembered(digests) => Ok(into_array(digests)),
        FileDigest::Hashing(hashing) => Ok(into_array(hashing.finish()?)),
    }
}

fn into_array<const N: usize>(digests: Vec<String>) -> [String; N] {
    digests.try_into().expect("one digest per algorithm")
}

/// A file's digests: remembered, or being taken from bytes passed in file order (what a run
/// maps for itself), the rest read from the file when [`Hashing::finish`] is called.
pub enum FileDigest {
    Remembered(Vec<String>),
    Hashing(Hashing),
}

impl FileDigest {
    /// The file's digests under `algorithms` (in that order) if the cache holds them all.
    pub fn begin(path: &Path, algorithms: &[Algorithm]) -> std::io::Result<FileDigest> {
        FileDigest::begin_in(path, algorithms, cache_dir().as_deref())
    }

    fn begin_in(
        path: &Path,
        algorithms: &[Algorithm],
        cache: Option<&Path>,
    ) -> std::io::Result<FileDigest> {
        let before = Stamp::of(path)?;
        let cache = cache.map(|cache| {
            let entries: Vec<PathBuf> = algorithms
                .iter()
                .map(|&a| cache.join(entry_name(path, a)))
                .collect();
            (cache.to_owned(), entries)
        });
        if let Some((_, entries)) = &cache {
            let remembered: Option<Vec<String>> = algorithms
                .iter()
                .zip(entries)
                .map(|(&a, entry)| {
                    let text = std::fs::read_to_string(entry).ok()?;
                    before.digest_in(a, &text)
                })
                .collect();
            if let Some(digests) = remembered {
                return Ok(FileDigest::Remembered(digests));
            }
        }
        Ok(FileDigest::Hashing(Hashing {
            file: std::fs::File::open(path)?,
            path: path.to_owned(),
            before,
            algorithms: algorithms.to_vec(),
            hashers: Hashers::new(algorithms),
            hashed_to: 0,
            out_of_order: false,
            cache,
        }))
    }
}

/// Digests being taken of one file, from its start up to `hashed_to`.
pub struct Hashing {
    file: std::fs::File,
    path: PathBuf,
    before: Stamp,
    algorithms: Vec<Algorithm>,
    hashers: Hashers,
    hashed_to: u64,
    /// A range came before one already hashed: [`Hashing::finish`] hashes the file anew.
    out_of_order: bool,
    /// The cache folder and this file's entries in it.
    cache: Option<(PathBuf, Vec<PathBuf>)>,
}

impl Hashing {
    /// Takes `bytes`, the file's content at `offset`, after reading any gap before them.
    pub fn update_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        if self.out_of_order || offset < self.hashed_to {
            self.out_of_order = true;
            return Ok(());
        }
        hash_range(&self.file, self.hashed_to, offset, &mut self.hashers)?;
        self.hashers.update(bytes);
        self.hashed_to = offset + bytes.len() as u64;
        Ok(())
    }

    /// Reads what was not passed in and returns the digests, remembering them when the file
    /// did not change while it was hashed.
    pub fn finish(mut self) -> std::io::Result<Vec<String>> {
        let len = self.file.metadata()?.len();
        if self.out_of_order || self.hashed_to > len {
            self.hashers = Hashers::new(&self.algorithms);
            self.hashed_to = 0;
        }
        hash_range(&self.file, self.hashed_to, len, &mut self.hashers)?;
        let digests = self.hashers.finish();
        if let Some((cache, entries)) = &self.cache
            && Stamp::of(&self.path)? == self.before
        {
            for ((algorithm, entry), digest) in self.algorithms.iter().zip(entries).zip(&digests) {
                // Best effort: an entry that cannot be written costs the next run a hash,
                // nothing more.
                let _ = write_entry(cache, entry, &self.before.entry(*algorithm, digest));
            }
        }
        Ok(digests)
    }
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

    fn entry(&self, algorithm: Algorithm, digest: &str) -> String {
        format!("{}\n{}\n{digest}\n", algorithm.header(), self.line())
    }

    /// The digest an entry holds for exactly this stamp and algorithm.
    fn digest_in(&self, algorithm: Algorithm, text: &str) -> Option<String> {
        let mut lines = text.lines();
        let (header, stamp, digest) = (lines.next()?, lines.next()?, lines.next()?);
        let well_formed = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        (header == algorithm.header() && stamp == self.line() && well_formed)
            .then(|| digest.to_owned())
    }
}

/// One entry per file and algorithm, named by the sha256 of the file's absolute path.
fn entry_name(path: &Path, algorithm: Algorithm) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let name = hex::encode(sha2::Sha256::digest(
        absolute.as_os_str().as_encoded_bytes(),
    ));
    name + algorithm.entry_suffix()
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

/// Running digests of one byte stream under several algorithms.
struct Hashers(Vec<Hasher>);

enum Hasher {
    Sha256(sha2::Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Hashers {
    fn new(algorithms: &[Algorithm]) -> Hashers {
        Hashers(
            algorithms
                .iter()
                .map(|a| match a {
                    Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
                    Algorithm::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
                })
                .collect(),
        )
    }

    fn update(&mut self, bytes: &[u8]) {
        // Each piece goes through every hasher while it is still in the cache.
        for piece in bytes.chunks(1 << 20) {
            for hasher in &mut self.0 {
                match hasher {
                    Hasher::Sha256(h) => h.update(piece),
                    Hasher::Blake3(h) => {
                        h.update(piece);
                    }
                }
            }
        }
    }

    fn finish(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|h| match h {
                Hasher::Sha256(h) => hex::encode(h.finalize()),
                Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
            })
            .collect()
    }
}

/// Hashes the file's bytes in `from..to`.
fn hash_range(
    file: &std::fs::File,
    from: u64,
    to: u64,
    hashers: &mut Hashers,
) -> std::io::Result<()> {
    /// Bytes mapped at a time: the mapped pages count in the process's resident memory.
    const WINDOW: u64 = 1 << 24;
    const PAGE: u64 = 4096;
    let mut at = from;
    while at < to {
        let aligned = at - at % PAGE;
        let end = to.min(aligned + WINDOW);
        // Mapped rather than read into a buffer: the file is in the page cache (the run reads
        // it too), and copying it out costs more than mapping it. SAFETY: the run maps the same
        // file; a file changed under the CLI while it runs gives a wrong digest (as a read
        // would) or SIGBUS if truncated, as the run's own mapping does.
        let window = unsafe {
            memmap2::MmapOptions::new()
                .offset(aligned)
                .len((end - aligned) as usize)
                .populate()
                .map(file)?
        };
        hashers.update(&window[(at - aligned) as usize..]);
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(bytes: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(bytes))
    }

    fn file_sha256_in(path: &Path, cache: Option<&Path>) -> std::io::Result<String> {
        let [digest] = file_digests_in(path, [Algorithm::Sha256], cache)?;
        Ok(digest)
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
        let entry = cache.join(entry_name(&file, Algorithm::Sha256));
        assert!(entry.exists());
        // The entry is what the second run reads: a digest planted under the same stamp is
        // returned as it is.
        let planted = "ab".repeat(32);
        std::fs::write(
            &entry,
            Stamp::of(&file).unwrap().entry(Algorithm::Sha256, &planted),
        )
        .unwrap();
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
        let entry = cache.join(entry_name(&file, Algorithm::Sha256));
        let stamp = Stamp::of(&file).unwrap();
        for text in [
            String::new(),
            "garbage".to_owned(),
            stamp.entry(Algorithm::Sha256, "not hex"),
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
        assert!(cache.join(entry_name(&other, Algorithm::Sha256)).exists());
        // An unwritable cache location (a file where the folder would be) costs nothing.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        assert_eq!(
            file_sha256_in(&file, Some(&blocked.join("sub"))).unwrap(),
            plain(b"bytes")
        );
    }

    #[test]
    fn both_digests_come_from_one_read_and_are_remembered_apart() {
        // b3sum's digest of these bytes, and of nothing (the BLAKE3 paper's first test vector).
        let (_dir, cache, file) = setup(b"abc");
        let expected_blake3 = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";
        let [sha256, blake3] =
            file_digests_in(&file, [Algorithm::Sha256, Algorithm::Blake3], Some(&cache)).unwrap();
        assert_eq!(sha256, plain(b"abc"));
        assert_eq!(blake3, expected_blake3);
        let empty = file.with_extension("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            file_digests_in(&empty, [Algorithm::Blake3], None).unwrap()[0],
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        // Each algorithm has its own entry: a sha256 entry never answers for BLAKE3.
        let sha_entry = cache.join(entry_name(&file, Algorithm::Sha256));
        let blake3_entry = cache.join(entry_name(&file, Algorithm::Blake3));
        assert_ne!(sha_entry, blake3_entry);
        let stamp = Stamp::of(&file).unwrap();
        std::fs::write(&sha_entry, stamp.entry(Algorithm::Blake3, &"ef".repeat(32))).unwrap();
        assert_eq!(file_sha256_in(&file, Some(&cache)).unwrap(), sha256);
        std::fs::write(
            &blake3_entry,
            stamp.entry(Algorithm::Blake3, &"ef".repeat(32)),
        )
        .unwrap();
        assert_eq!(
            file_digests_in(&file, [Algorithm::Blake3], Some(&cache)).unwrap()[0],
            "ef".repeat(32)
        );
        // A file longer than one hashing window and one piece hashes as a whole does.
        let long: Vec<u8> = (0..(1usize << 24) + 12_345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let big = file.with_extension("big");
        std::fs::write(&big, &long).unwrap();
        let [sha256, blake3] =
            file_digests_in(&big, [Algorithm::Sha256, Algorithm::Blake3], None).unwrap();
        assert_eq!(sha256, plain(&long));
        assert_eq!(blake3, blake3::hash(&long).to_hex().to_string());
    }

    #[test]
    fn bytes_passed_in_with_gaps_or_out_of_order_give_the_whole_file_digest() {
        let long: Vec<u8> = (0..(1usize << 24) + 5_000)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        let (_dir, cache, file) = setup(&long);
        let whole = blake3::hash(&long).to_hex().to_string();
        let algorithms = [Algorithm::Blake3, Algorithm::Sha256];
        let begin = || match FileDigest::begin_in(&file, &algorithms, Some(&cache)).unwrap() {
            FileDigest::Hashing(hashing) => hashing,
            FileDigest::Remembered(_) => panic!("nothing is remembered yet"),
        };
        // A header gap, two adjacent ranges, a gap across a window's end, a tail left out.
        let mut hashing = begin();
        for range in [100..4_000, 4_000..70_000, (1 << 24) - 10..(1 << 24) + 100] {
            hashing
                .update_at(range.start as u64, &long[range.clone()])
                .unwrap();
        }
        let passed_in = hashing.finish().unwrap();
        assert_eq!(passed_in, [whole.clone(), plain(&long)]);
        // Remembered now, both digests at once.
        let Ok(FileDigest::Remembered(remembered)) =
            FileDigest::begin_in(&file, &algorithms, Some(&cache))
        else {
            panic!("the digests are remembered");
        };
        assert_eq!(remembered, passed_in);
        // A range before one already taken: the file is hashed anew at the end.
        std::fs::remove_dir_all(&cache).unwrap();
        let mut hashing = begin();
        hashing.update_at(50_000, &long[50_000..60_000]).unwrap();
        hashing.update_at(10, &long[10..20]).unwrap();
        assert_eq!(hashing.finish().unwrap(), passed_in);
    }
}
