//! What goes in and out of a run: the model's files, what a run produced, and how it stops
//! (`PipelineError`, with panics contained to the job that raised them). A leaf of the
//! pipeline: the run and the choice of writer both import it.

use std::io;
use std::path::PathBuf;

use crate::formats::writer::{OutputFile, WriteError};
use crate::jobs::report::{Summary, TensorReport};
use crate::numeric::Canceled;

/// What a model file is to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Weights: transformed.
    Weights,
    /// Anything else (config, index, tokenizer): copied.
    Other,
    /// The calibration set a calibrated stage runs through the model: read, never copied.
    Calibration,
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

/// The model's digests for the artifact's provenance (written last): known already (a
/// worker's sha256, from the database), or being computed while the run compresses
/// (`squeeze compress`, which would otherwise read the whole input once more before starting).
pub enum ModelDigest {
    Known(InputDigests),
    /// Taken from the bytes the run maps, passed on as it goes (see [`super::feed`]).
    FromRun(Box<dyn super::feed::InputDigester>),
}

/// The input's identity as recipe.json records it: each digest that was taken (hex).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputDigests {
    pub sha256: Option<String>,
    pub blake3: Option<String>,
}

impl From<String> for ModelDigest {
    fn from(sha256: String) -> Self {
        ModelDigest::Known(InputDigests {
            sha256: Some(sha256),
            blake3: None,
        })
    }
}

impl From<&str> for ModelDigest {
    fn from(sha256: &str) -> Self {
        sha256.to_owned().into()
    }
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

impl From<WriteError> for PipelineError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Input(message) => PipelineError::Input(message),
            WriteError::Io(e) => PipelineError::Io(e),
        }
    }
}

impl From<Canceled> for PipelineError {
    fn from(_: Canceled) -> Self {
        PipelineError::Canceled
    }
}
