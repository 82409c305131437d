//! Content-addressed blob files under `<data-dir>/blobs`, and the `blobs` table that counts
//! their references.
//!
//! A blob is written to `tmp/` while it streams in (hashed on the fly), fsynced, and only then
//! renamed to `sha256/<aa>/<digest>`; readers therefore never see a partial file. The row in
//! `blobs` is the lock that orders an upload publishing a digest against a delete removing the
//! same digest: both take the row lock before touching the file, and a delete moves the file to
//! `trash/` inside its transaction so that it can be put back if the transaction fails.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

/// The blob directory tree.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the tree at `root`, private to the service's user.
    pub fn open(root: &Path) -> io::Result<Self> {
        for sub in ["tmp", "sha256", "trash", DERIVED] {
            create_private_dir(&root.join(sub))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Where the blob with this hex digest lives once published.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(&sha256[..2]).join(sha256)
    }

    /// The folder holding in-flight uploads.
    pub fn temp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Bytes free for an unprivileged writer on the store's file system.
    pub fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.root.as_os_str().as_bytes()).ok()?;
        let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: statvfs fills the struct for a NUL-terminated path; read only on success.
        let stats = unsafe {
            if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
                return None;
            }
            stats.assume_init()
        };
        Some(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    /// A new temp file; it is deleted when dropped unless published.
    pub fn create_temp(&self) -> io::Result<TempBlob> {
        let path = self
            .temp_dir()
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        hold_lock(&file)?;
        Ok(TempBlob {
            file,
            hasher: Sha256::new(),
            len: 0,
            guard: RemoveOnDrop(Some(path)),
        })
    }

    /// A new folder in the temp folder for one job attempt's outputs, owned by this process
    /// while the returned guard lives (a lock on its `.owner` file) and removed with it.
    /// Folders of earlier attempts of the same job are removed first.
    pub fn create_work_dir(&self, prefix: &str, name: &str) -> io::Result<WorkDir> {
        for entry in std::fs::read_dir(self.temp_dir())?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                let _ = remove_if_unowned(&entry.path(), Duration::ZERO);
            }
        }
        let dir = self.temp_dir().join(name);
        create_private_dir(&dir)?;
        let lock = std::fs::File::create(dir.join(OWNER_FILE))?;
        hold_lock(&lock)?;
        Ok(WorkDir {
            path: dir,
            _lock: lock,
        })
    }

    /// Deletes what no live process owns in the temp folder (the partial uploads and job
    /// folders of a process that was killed: their owner's lock went with it) and everything
    /// in the trash. Entries younger than a couple of seconds are left, as their creator may
    /// not have locked them yet.
    pub fn sweep_unowned(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(self.temp_dir())? {
            if remove_if_unowned(&entry?.path(), FRESH)? {
                removed += 1;
            }
        }
        for entry in std::fs::read_dir(self.root.join("trash"))? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Takes a finished file (inside the temp folder, so publishing is a rename) whose digest and
    /// length the writer computed.
    pub fn adopt(&self, path: &Path, sha256: &str, len: u64) -> io::Result<SealedBlob> {
        if !path.starts_with(self.temp_dir()) {
            return Err(io::Error::other(format!(
                "{} is outside the blob store's temp folder",
                path.display()
            )));
        }
        Ok(SealedBlob {
            sha256: sha256.to_owned(),
            len,
            guard: RemoveOnDrop(Some(path.to_path_buf())),
            // Inside a job folder, whose own lock covers it.
            _lock: None,
        })
    }

    /// Where files derived from blobs are kept: recomputable caches that no row refers to,
    /// named after the models and sets they come from (the original decoder's outputs on an
    /// evaluation set: `<model id>.<dataset id>.ref`).
    pub fn derived_dir(&self) -> PathBuf {
        self.root.join(DERIVED)
    }

    /// Removes the derived files of a deleted model or set (best effort: a file left behind is
    /// never read again, as its name holds the deleted id, and the cap evicts it), off the async
    /// runtime's threads: it scans a directory.
    pub async fn forget_derived(&self, id: uuid::Uuid) {
        let store = self.clone();
        let _ = tokio::task::spawn_blocking(move || store.remove_derived_of(id)).await;
    }

    fn remove_derived_of(&self, id: uuid::Uuid) {
        let id = id.to_string();
        let Ok(entries) = std::fs::read_dir(self.derived_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .split('.')
                .any(|part| part == id)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Removes the least recently written derived files until they hold at most `max_bytes`.
    pub fn trim_derived(&self, max_bytes: u64) -> io::Result<()> {
        let mut files: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(self.derived_dir())?
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, path) in files {
            if total <= max_bytes {
                break;
            }
            std::fs::remove_file(&path)?;
            total -= len;
        }
        Ok(())
    }

    /// Number of files in `tmp/` (tests assert that failed uploads leave none).
    pub fn temp_file_count(&self) -> io::Result<usize> {
        Ok(std::fs::read_dir(self.temp_dir())?.count())
    }
}

/// The folder of derived files.
const DERIVED: &str = "derived";
/// The file in a job folder whose lock says the folder is in use.
const OWNER_FILE: &str = ".owner";
/// How young an unlocked temp entry may be and still be left alone by a sweep.
const FRESH: Duration = Duration::from_secs(2);

/// Takes an exclusive lock on `file` without waiting, held until it is closed (or its
/// process ends); an error when another process holds it.
pub fn hold_lock(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the caller keeps open.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a live process holds the lock that marks `file` as its own.
fn locked_elsewhere(file: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(handle) = std::fs::OpenOptions::new().read(true).open(file) else {
        return false;
    };
    // SAFETY: a non-blocking flock on a descriptor opened just above; released when it closes.
    unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

/// Removes a temp file or job folder unless a live process owns it or it is younger than
/// `fresh`; whether it was removed.
fn remove_if_unowned(path: &Path, fresh: Duration) -> io::Result<bool> {
    let metadata = std::fs::symlink_metadata(path)?;
    let age = SystemTime::now()
        .duration_since(metadata.modified()?)
        .unwrap_or_default();
    if age < fresh {
        return Ok(false);
    }
    if metadata.is_dir() {
        if locked_elsewhere(&path.join(OWNER_FILE)) {
            return Ok(false);
        }
        std::fs::remove_dir_all(path)?;
    } else {
        if locked_elsewhere(path) {
            return Ok(false);
        }
        std::fs::remove_file(path)?;
    }
    Ok(true)
}

/// A job attempt's folder: locked while it lives, removed when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    _lock: std::fs::File,
}

impl WorkDir {
    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes a path when dropped, unless disarmed.
#[derive(Debug)]
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("armed")
    }

    fn disarm(&mut self) -> PathBuf {
        self.0.take().expect("armed")
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A blob being written: bytes are hashed as they are written.
#[derive(Debug)]
pub struct TempBlob {
    file: std::fs::File,
    hasher: Sha256,
    len: u64,
    guard: RemoveOnDrop,
}

impl TempBlob {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flushes to stable storage and fixes the digest.
    pub fn seal(self) -> io::Result<SealedBlob> {
        self.file.sync_all()?;
        Ok(SealedBlob {
            sha256: hex::encode(self.hasher.finalize()),
            len: self.len,
            guard: self.guard,
            _lock: Some(self.file),
        })
    }
}

/// A complete, fsynced temp file with a known digest, not yet published.
#[derive(Debug)]
pub struct SealedBlob {
    /// Hex sha256 of the content.
    pub sha256: String,
    /// Length in bytes.
    pub len: u64,
    guard: RemoveOnDrop,
    /// The temp file's handle, whose lock marks it as this process's until it is published.
    _lock: Option<std::fs::File>,
}

impl SealedBlob {
    /// The temp file's path (for reading it back before publication).
    pub fn temp_path(&self) -> &Path {
        self.guard.path()
    }
}

/// Takes a reference on a blob for the caller's transaction and makes sure its file is in place.
/// Call for each blob in ascending digest order (consistent lock order between transactions).
pub async fn acquire(
    conn: &mut PgConnection,
    store: &BlobStore,
    mut blob: SealedBlob,
) -> anyhow::Result<()> {
    // The upsert takes the row lock: a concurrent release of the same digest either finished
    // (and the row is new) or waits for us.
    sqlx::query(
        "insert into blobs (sha256, bytes, refs) values ($1, $2, 1)
         on conflict (sha256) do update set refs = blobs.refs + 1",
    )
    .bind(&blob.sha256)
    .bind(blob.len as i64)
    .execute(&mut *conn)
    .await?;
    let target = store.path(&blob.sha256);
    let temp = blob.guard.disarm();
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        let parent = target.parent().expect("blob paths have a parent");
        create_private_dir(parent)?;
        // Same content either way: replacing an existing file is harmless and repairs a
        // missing one.
        std::fs::rename(&temp, &target).inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })?;
        sync_dir(parent)
    })
    .await??;
    Ok(())
}

/// Files moved aside by [`release`]; purge them after commit, restore them on rollback.
#[derive(Debug, Default)]
#[must_use = "purge after commit or restore after a failed commit"]
pub struct Released {
    moved: Vec<(PathBuf, PathBuf)>,
}

impl Released {
    /// The transaction committed: the files go for good.
    pub fn purge(self) {
        for (_, trash) in self.moved {
            if let Err(err) = std::fs::remove_file(&trash) {
                tracing::warn!(path = %trash.display(), error = %err, "could not remove released blob");
            }
        }
    }

    /// The transaction failed: the files go back.
    pub fn restore(self) {
        for (home, trash) in self.moved {
            if let Err(err) = std::fs::rename(&trash, &home) {
                tracing::error!(path = %home.display(), error = %err, "could not restore blob");
            }
        }
    }
}

/// Commits a transaction that released blobs: their files go for good once it committed, and
/// come back if it did not.
pub async fn commit_releasing(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    released: Released,
) -> anyhow::Result<()> {
    match tx.commit().await {
        Ok(()) => {
            released.purge();
            Ok(())
        }
        Err(err) => {
            released.restore();
            Err(err.into())
        }
    }
}

/// Drops one reference per digest (one entry per reference held) in the caller's transaction;
/// blobs left with none lose their row and their file is moved to the trash.
pub async fn release(
    conn: &mut PgConnection,
    store: &BlobStore,
    mut digests: Vec<String>,
) -> anyhow::Result<Released> {
    digests.sort();
    let mut released = Released::default();
    for sha in digests {
        let left: Option<i32> =
            sqlx::query_scalar("update blobs set refs = refs - 1 where sha256 = $1 returning refs")
                .bind(&sha)
                .fetch_optional(&mut *conn)
                .await?;
        if left != Some(0) {
            continue;
        }
        sqlx::query("delete from blobs where sha256 = $1 and refs = 0")
            .bind(&sha)
            .execute(&mut *conn)
            .await?;
        let home = store.path(&sha);
        let trash = store
            .root
            .join("trash")
            .join(format!("{sha}.{}", uuid::Uuid::new_v4().simple()));
        match std::fs::rename(&home, &trash) {
            Ok(()) => released.moved.push((home, trash)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(sha256 = %sha, "released blob had no file");
            }
            Err(err) => {
                released.restore();
                return Err(err.into());
            }
        }
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file or folder as a killed process leaves it: no lock, written a while ago.
    fn abandoned(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(10);
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(old).unwrap();
    }

    #[test]
    fn a_sweep_removes_what_no_live_process_owns_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(root.path()).unwrap();
        // Owned by this process: a partial upload and a job folder in use.
        let mut upload = store.create_temp().unwrap();
        upload.write(b"partial").unwrap();
        let work = store.create_work_dir("job-a.", "job-a.1").unwrap();
        std::fs::write(work.path().join("model.safetensors"), b"out").unwrap();
        // Old enough that only their locks keep them.
        abandoned(upload.guard.path());
        std::fs::File::open(work.path())
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        // Left by a killed process: a partial upload, and a job folder whose owner is gone.
        let left_file = store.temp_dir().join("dead.part");
        std::fs::write(&left_file, b"partial").unwrap();
        abandoned(&left_file);
        let left_dir = store.temp_dir().join("job-b.1");
        std::fs::create_dir(&left_dir).unwrap();
        std::fs::write(left_dir.join(OWNER_FILE), b"").unwrap();
        let dir_handle = std::fs::File::open(&left_dir).unwrap();
        dir_handle
            .set_modified(SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        assert_eq!(store.sweep_unowned().unwrap(), 2);
        assert!(!left_file.exists() && !left_dir.exists());
        assert_eq!(store.temp_file_count().unwrap(), 2);
        // Gone as soon as their owners are done with them.
        drop(upload);
        drop(work);
        assert_eq!(store.temp_file_count().unwrap(), 0);
    }

    #[test]
    fn derived_files_go_with_their_model_or_set_and_beyond_the_cap_oldest_first() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(root.path()).unwrap();
        let (model, set, other) = (
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
        );
        let dir = store.derived_dir();
        let file = |a: uuid::Uuid, b: uuid::Uuid, age: u64| {
            let path = dir.join(format!("{a}.{b}.ref"));
            std::fs::write(&path, [0u8; 100]).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
            path
        };
        let (of_model, of_set, of_both) = (
            file(model, other, 30),
            file(other, set, 20),
            file(model, set, 10),
        );
        let unrelated = file(other, other, 40);
        store.remove_derived_of(model);
        assert!(!of_model.exists() && !of_both.exists());
        assert!(of_set.exists() && unrelated.exists());
        store.remove_derived_of(set);
        assert!(!of_set.exists() && unrelated.exists());
        let (older, newer) = (file(model, set, 50), file(set, model, 5));
        store.trim_derived(250).unwrap();
        assert!(!older.exists() && unrelated.exists() && newer.exists());
        store.trim_derived(100).unwrap();
        assert!(!unrelated.exists() && newer.exists());
    }
}
