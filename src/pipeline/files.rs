//! What goes in and out of a run: the model's files, the artifact's files (written through a
//! hasher and published by rename), what a run produced, and how it stops (`PipelineError`,
//! with panics contained to the job that raised them). A leaf of the pipeline: the run and the
//! writers both import it.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::jobs::report::{Summary, TensorReport};
use crate::numeric::Canceled;

/// What a model file is to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Weights: transformed.
    Weights,
    /// Anything else (config, index, tokenizer): copied.
    Other,
}

/// One file of the model.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Name in the model folder.
    pub name: String,
    /// Weights or other.
    pub kind: InputKind,
    /// Where its bytes are.
    pub path: PathBuf,
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
    /// Content digest.
    pub sha256: String,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// Artifact files, in name order.
    pub files: Vec<OutputFile>,
    /// Metrics of every tensor, in name order.
    pub tensors: Vec<TensorReport>,
    /// The summary.
    pub summary: Summary,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("canceled")]
    Canceled,
    /// The input or the recipe is bad: retrying cannot help.
    #[error("{0}")]
    Input(String),
    /// Reading or writing failed: another attempt may succeed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// A defect in squeeze itself (a panic, contained): the message names where it happened.
    /// Retrying the same input would hit it again.
    #[error("internal error in {0}; this is a bug in squeeze, please report it")]
    Internal(String),
}

/// Runs `work`, turning a panic inside it (on this thread or re-raised from the rayon tasks it
/// waited on) into [`PipelineError::Internal`] naming `place`, so one job's defect fails that
/// job and never unwinds into the worker pool or aborts the process.
pub fn contain_panic<T>(
    place: impl FnOnce() -> String,
    work: impl FnOnce() -> Result<T, PipelineError>,
) -> Result<T, PipelineError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(payload) => Err(PipelineError::Internal(format!(
            "{}: {}",
            place(),
            panic_message(payload.as_ref())
        ))),
    }
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

impl From<Canceled> for PipelineError {
    fn from(_: Canceled) -> Self {
        PipelineError::Canceled
    }
}

/// A file written through a hasher, published by rename when finished.
pub(crate) struct HashingFile {
    out: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
    temp: PathBuf,
    path: PathBuf,
}

impl HashingFile {
    pub(crate) fn create(dir: &Path, name: &str) -> io::Result<HashingFile> {
        let path = dir.join(name);
        let temp = dir.join(format!(".{name}.part"));
        Ok(HashingFile {
            out: BufWriter::with_capacity(1 << 20, File::create(&temp)?),
            hasher: Sha256::new(),
            bytes: 0,
            temp,
            path,
        })
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// Appends everything `input` holds, a megabyte at a time.
    pub(crate) fn copy_from(&mut self, input: &mut impl Read) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.write(&buf[..n])?;
        }
    }

    pub(crate) fn finish(self, name: &str) -> io::Result<OutputFile> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.temp, &self.path)?;
        Ok(OutputFile {
            name: name.to_owned(),
            path: self.path,
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}
