//! What every artifact writer shares: the [`ArtifactWriter`] trait the pipeline drives one
//! tensor at a time, the tensor it hands over ([`TensorOut`]), the folder it writes into
//! ([`OutputDir`]) and the file every output goes through ([`HashingFile`]: hashed as written
//! and synced when the folder asks, published by rename). Each format's
//! writer lives with its reader: `safetensors::write` (dense), `compressed_tensors::write`,
//! `compact`, `gguf::write`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::compress::encoded::Encoded;
use crate::formats::safetensors::{Header, TensorInfo};

/// What the pipeline tells a writer about one tensor.
pub struct TensorOut<'a> {
    /// Name, dtype and (possibly shrunk) shape of the output tensor.
    pub info: &'a TensorInfo,
    /// The dense bytes: compressed values decoded, or the original when unchanged.
    pub dense: &'a [u8],
    /// The stored form, for a tensor the recipe compressed.
    pub encoded: Option<&'a Encoded>,
}

/// Why a writer stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The model cannot be laid out in this format (a dtype it cannot hold, a config that is not
    /// JSON): retrying cannot help.
    #[error("{0}")]
    Input(String),
    /// Writing failed: another attempt may succeed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// One output format's layout of the artifact.
pub trait ArtifactWriter {
    /// The model's weight file `name` begins; `header` is its output header (shrunk shapes).
    fn begin_file(&mut self, name: &str, header: &Header) -> Result<(), WriteError>;
    /// One tensor of the current file; returns the bytes it takes in the artifact.
    fn tensor(&mut self, tensor: TensorOut) -> Result<u64, WriteError>;
    /// The nominal bits of the last tensor's stored form when the layout, not the scheme,
    /// decides them (zeros left out of a sparse layout); None: the scheme's own.
    fn layout_bits(&mut self) -> Option<f64> {
        None
    }
    /// The current weight file ends; returns the weight file it completes, if any (GGUF: one
    /// file, after the last).
    fn end_file(&mut self) -> Result<Option<OutputFile>, WriteError>;
    /// A side file (config, index, tokenizer) as it goes into the artifact, or None to leave it
    /// out.
    fn side_file(&mut self, name: &str, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, WriteError>;
    /// Side files the format adds once every tensor is written.
    fn finish(&mut self) -> Result<Vec<OutputFile>, WriteError>;
}

/// The folder an artifact set is written into, whether each file's sha256 is taken as it is
/// written, and whether each file is synced to the disk before it is published. The service
/// keeps artifacts by digest and reports a job done only once its files are on the disk, so
/// its worker wants both; for a local run a digest is one more pass over every output byte (a
/// tenth to a sixth of a one-pass run's CPU) and a sync waits for the disk itself (a third more
/// time for a Q8_0 run on a 2-core cloud VM), so `squeeze compress` does each only when asked.
#[derive(Debug, Clone)]
pub struct OutputDir {
    /// Where the files go (it must exist).
    pub path: PathBuf,
    /// Whether each [`OutputFile`] carries its sha256.
    pub digests: bool,
    /// Whether each file is flushed to the disk (fsync) before it is renamed into place.
    pub sync: bool,
}

impl OutputDir {
    /// A folder for the service: files hashed as they are written and synced.
    pub fn durable(path: &Path) -> OutputDir {
        OutputDir {
            path: path.to_owned(),
            digests: true,
            sync: true,
        }
    }

    /// A folder whose files are written without digests and left to the operating system to
    /// flush.
    pub fn plain(path: &Path) -> OutputDir {
        OutputDir {
            path: path.to_owned(),
            digests: false,
            sync: false,
        }
    }

    /// A new file `name` in the folder.
    pub fn create(&self, name: &str) -> io::Result<HashingFile> {
        HashingFile::create(&self.path, name, self.digests, self.sync)
    }
}

/// One file of the artifact set.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFile {
    /// Name in the artifact folder.
    pub name: String,
    /// Where it was written.
    #[serde(skip)]
    pub path: PathBuf,
    /// Size.
    pub bytes: u64,
    /// Content digest, when the [`OutputDir`] asked for digests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A file written through a hasher (when digests are wanted), published by rename when
/// finished. A file to be synced is handed to the kernel's writeback as it is written, so the
/// final fsync waits for the last of it only; one that need not be is left in the page cache
/// for the operating system to write back, as `cp` and `llama-quantize` leave theirs.
pub struct HashingFile {
    out: BufWriter<File>,
    hasher: Option<Sha256>,
    bytes: u64,
    temp: PathBuf,
    path: PathBuf,
    /// Bytes already handed to the kernel's writeback.
    flushed: u64,
    /// Whether the file is synced before it is published.
    sync: bool,
}

/// Bytes written between hand-offs to the kernel's writeback, so that the final fsync waits
/// for the last of them only rather than for the whole file.
const WRITEBACK_EVERY: u64 = 64 << 20;

impl HashingFile {
    fn create(dir: &Path, name: &str, digest: bool, sync: bool) -> io::Result<HashingFile> {
        let path = dir.join(name);
        let temp = dir.join(format!(".{name}.part"));
        Ok(HashingFile {
            out: BufWriter::with_capacity(1 << 20, File::create(&temp)?),
            hasher: digest.then(Sha256::new),
            bytes: 0,
            temp,
            path,
            flushed: 0,
            sync,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)?;
        if self.sync && self.bytes - self.flushed >= WRITEBACK_EVERY {
            self.start_writeback()?;
        }
        Ok(())
    }

    /// Starts the disk writes of everything written so far without waiting for them.
    fn start_writeback(&mut self) -> io::Result<()> {
        self.out.flush()?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (from, len) = (self.flushed as i64, (self.bytes - self.flushed) as i64);
            // SAFETY: a plain system call on a file descriptor this writer owns; it only asks
            // the kernel to start writing that range back and touches no memory of ours.
            let done = unsafe {
                libc::sync_file_range(
                    self.out.get_ref().as_raw_fd(),
                    from,
                    len,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            if done != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        self.flushed = self.bytes;
        Ok(())
    }

    /// Appends everything `input` holds, a megabyte at a time.
    pub fn copy_from(&mut self, input: &mut impl Read) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.write(&buf[..n])?;
        }
    }

    pub fn finish(self, name: &str) -> io::Result<OutputFile> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        if self.sync {
            file.sync_all()?;
        }
        std::fs::rename(&self.temp, &self.path)?;
        Ok(OutputFile {
            name: name.to_owned(),
            path: self.path,
            bytes: self.bytes,
            sha256: self.hasher.map(|h| hex::encode(h.finalize())),
        })
    }
}

/// `v` as indented JSON with a final newline, as Hugging Face writes its side files.
pub(crate) fn pretty_json(v: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("JSON serialises");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_is_published_whole_with_its_own_digest_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(3 << 20) + 77).map(|i| (i % 251) as u8).collect();
        for dir in [OutputDir::durable(tmp.path()), OutputDir::plain(tmp.path())] {
            let _ = std::fs::remove_file(tmp.path().join("weights.bin"));
            let mut file = dir.create("weights.bin").unwrap();
            file.write(&bytes[..5]).unwrap();
            assert!(!tmp.path().join("weights.bin").exists(), "published early");
            file.write(&bytes[5..]).unwrap();
            let record = file.finish("weights.bin").unwrap();
            assert_eq!(
                std::fs::read(tmp.path().join("weights.bin")).unwrap(),
                bytes
            );
            assert!(!tmp.path().join(".weights.bin.part").exists());
            assert_eq!(record.bytes, bytes.len() as u64);
            let digest = dir.digests.then(|| hex::encode(Sha256::digest(&bytes)));
            assert_eq!(record.sha256, digest);
        }
    }
}
