//! Streams one uploaded file from the network into a sealed temp blob, hashing and validating it
//! on the way, with memory bounded by a few chunk buffers and the safetensors header.
//!
//! The async side only moves bytes; hashing, validation and disk writes run on a blocking thread
//! fed through a bounded channel (the backpressure that keeps memory flat). A file that proves bad
//! stops the stream at once; every failure path drops the temp file.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::formats::safetensors::{ForeignFormat, Header, SafetensorsError, StreamValidator};
use crate::store::blobs::{BlobStore, SealedBlob};

/// Bytes received by uploads since the process started (for `/metrics`).
pub static UPLOADED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Largest side file (config, tokenizer, index) accepted.
pub const MAX_SIDE_FILE_BYTES: u64 = 64 << 20;
/// Largest `config.json`: it is parsed into a document and kept (real ones are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest shard index: parsed into a document (a 400-billion-parameter model's is ~100 KiB).
pub const MAX_INDEX_BYTES: u64 = 16 << 20;
/// Bytes gathered before handing a buffer to the writer thread.
const WRITE_CHUNK: usize = 1 << 20;
/// Buffers in flight between the network and the writer.
const CHANNEL_DEPTH: usize = 4;

/// What an uploaded file is, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A `.safetensors` weight file (one model or one shard).
    Safetensors,
    /// `model.safetensors.index.json`, the shard map.
    ShardIndex,
    /// `config.json`, the model configuration.
    Config,
    /// Another small file kept with the model (tokenizer, generation config).
    Side,
}

impl FileKind {
    /// Stored name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Safetensors => "safetensors",
            FileKind::ShardIndex => "index",
            FileKind::Config => "config",
            FileKind::Side => "side",
        }
    }
}

/// A file that arrived whole and passed the checks for its kind.
#[derive(Debug)]
pub struct IngestedFile {
    /// The client's file name (validated: a plain base name).
    pub name: String,
    /// What it is.
    pub kind: FileKind,
    /// The sealed temp blob.
    pub blob: SealedBlob,
    /// The validated header, for safetensors files.
    pub header: Option<Header>,
    /// The parsed document, for the JSON files we interpret (index, config).
    pub json: Option<serde_json::Value>,
    /// The floating-point tensors that hold a NaN or an infinity.
    pub non_finite: Vec<String>,
}

/// Why an upload was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the upload exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{name}: {source}")]
    Invalid {
        name: String,
        source: SafetensorsError,
    },
    #[error(
        "file name {0:?} is not allowed: use a plain name without path separators or control characters"
    )]
    BadName(String),
    #[error("{name}: {reason}")]
    Unsupported { name: String, reason: String },
    #[error("{name} is not valid JSON: {reason}")]
    BadJson { name: String, reason: String },
    #[error(
        "{name} is {len} bytes; side files are limited to {} bytes ({MAX_CONFIG_BYTES} for config.json, {MAX_INDEX_BYTES} for the shard index)",
        MAX_SIDE_FILE_BYTES
    )]
    SideFileTooLarge { name: String, len: u64 },
    #[error("reading the request body failed: {0}")]
    Body(String),
    #[error("the client sent nothing for {0:?}")]
    Idle(Duration),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

const PICKLE_HINT: &str = "pickle-based checkpoints can run code when loaded and are never read here; \
convert with `safetensors.torch.save_file(model.state_dict(), \"model.safetensors\")` (or \
`save_pretrained(..., safe_serialization=True)`) and upload the .safetensors file";

/// Checks a client file name and tells its kind. Pickle extensions are refused with a hint.
pub fn classify(name: &str) -> Result<FileKind, IngestError> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || is_bidi_control(c));
    if bad {
        return Err(IngestError::BadName(name.to_owned()));
    }
    refuse_foreign_name(name)?;
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map_or("", |(_, ext)| ext);
    match ext {
        "safetensors" => Ok(FileKind::Safetensors),
        _ if lower.ends_with(".safetensors.index.json") => Ok(FileKind::ShardIndex),
        _ if lower == "config.json" => Ok(FileKind::Config),
        "json" | "txt" | "model" | "jinja" | "md" | "tiktoken" => Ok(FileKind::Side),
        _ => Err(IngestError::Unsupported {
            name: name.to_owned(),
            reason: "only .safetensors weights (plus config.json, the shard index and tokenizer files) are accepted".into(),
        }),
    }
}

/// Refuses a name whose extension says pickle or another format we never read.
pub fn refuse_foreign_name(name: &str) -> Result<(), IngestError> {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map_or("", |(_, ext)| ext);
    let why = match ext {
        "bin" | "pt" | "pth" | "ckpt" | "pkl" | "pickle" | "joblib" | "npy" | "npz" => PICKLE_HINT,
        "gguf" => {
            "GGUF is what squeeze writes, not what it compresses: its blocks are already \
             quantized, so upload the model's .safetensors weights (the Hugging Face folder)"
        }
        "onnx" | "h5" => {
            "only safetensors weights are read; save the model's state with \
             `save_pretrained(..., safe_serialization=True)` and upload the .safetensors files"
        }
        "zip" | "tar" | "gz" => "archives are not unpacked; upload the files inside",
        _ => return Ok(()),
    };
    Err(IngestError::Unsupported {
        name: name.to_owned(),
        reason: format!(".{ext} files are not accepted; {why}"),
    })
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// Streams `body` into a temp blob. `budget` is what the request may still send; it shrinks by
/// what this file used. `idle` bounds the wait for each chunk.
pub async fn ingest<S, E>(
    store: &BlobStore,
    name: String,
    kind: FileKind,
    mut body: S,
    budget: &mut u64,
    limit: u64,
    idle: Duration,
) -> Result<IngestedFile, IngestError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let temp = store.create_temp()?;
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let writer_name = name.clone();
    let writer = tokio::task::spawn_blocking(move || write_and_check(writer_name, kind, temp, rx));

    let mut pending = BytesMut::with_capacity(WRITE_CHUNK);
    let mut sent_all = true;
    let mut outcome = Ok(());
    loop {
        let next = match tokio::time::timeout(idle, body.next()).await {
            Ok(next) => next,
            Err(_) => {
                outcome = Err(IngestError::Idle(idle));
                break;
            }
        };
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(err)) => {
                outcome = Err(classify_body_error(err.to_string(), limit));
                break;
            }
        };
        let Some(left) = budget.checked_sub(chunk.len() as u64) else {
            outcome = Err(IngestError::TooLarge { limit });
            break;
        };
        *budget = left;
        UPLOADED_BYTES.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        pending.extend_from_slice(&chunk);
        if pending.len() >= WRITE_CHUNK && tx.send(pending.split().freeze()).await.is_err() {
            // The writer stopped: it found the file bad. Its error is the answer.
            sent_all = false;
            break;
        }
    }
    if outcome.is_ok() && sent_all && !pending.is_empty() {
        let _ = tx.send(pending.freeze()).await;
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| IngestError::Io(std::io::Error::other(e)))?;
    match outcome {
        // A bad body outranks what the writer saw of a partial file.
        Err(err) => Err(err),
        Ok(()) => written,
    }
}

fn classify_body_error(message: String, limit: u64) -> IngestError {
    if message.contains("length limit") || message.contains("too large") {
        IngestError::TooLarge { limit }
    } else {
        IngestError::Body(message)
    }
}

fn write_and_check(
    name: String,
    kind: FileKind,
    mut temp: crate::store::blobs::TempBlob,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<IngestedFile, IngestError> {
    let mut validator = (kind == FileKind::Safetensors).then(StreamValidator::new);
    while let Some(chunk) = rx.blocking_recv() {
        if let Some(v) = validator.as_mut() {
            v.feed(&chunk).map_err(|source| invalid(&name, source))?;
        } else if temp.len() + chunk.len() as u64 > MAX_SIDE_FILE_BYTES {
            return Err(IngestError::SideFileTooLarge {
                name,
                len: temp.len() + chunk.len() as u64,
            });
        }
        temp.write(&chunk)?;
    }
    let (header, non_finite) = match validator {
        Some(v) => {
            let non_finite = v.non_finite();
            let header = v.finish().map_err(|source| invalid(&name, source))?;
            (Some(header), non_finite)
        }
        None => (None, Vec::new()),
    };
    let temp_len = temp.len();
    let blob = temp.seal()?;
    let json = match kind {
        FileKind::ShardIndex | FileKind::Config => {
            let limit = if kind == FileKind::Config {
                MAX_CONFIG_BYTES
            } else {
                MAX_INDEX_BYTES
            };
            if temp_len > limit {
                return Err(IngestError::SideFileTooLarge {
                    name,
                    len: temp_len,
                });
            }
            Some(read_json::<serde_json::Value>(&name, &blob)?)
        }
        // Checked for well-formedness only: nothing of it is kept, so nothing is built.
        FileKind::Side if name.to_ascii_lowercase().ends_with(".json") => {
            read_json::<serde::de::IgnoredAny>(&name, &blob)?;
            None
        }
        _ => None,
    };
    Ok(IngestedFile {
        name,
        kind,
        blob,
        header,
        json,
        non_finite,
    })
}

fn invalid(name: &str, source: SafetensorsError) -> IngestError {
    match source {
        SafetensorsError::Foreign(format) => IngestError::Unsupported {
            name: name.to_owned(),
            reason: foreign_reason(format),
        },
        source => IngestError::Invalid {
            name: name.to_owned(),
            source,
        },
    }
}

fn foreign_reason(format: ForeignFormat) -> String {
    if format.is_pickle_based() {
        format!(
            "this is {}, not safetensors; {PICKLE_HINT}",
            format.describe()
        )
    } else {
        format!(
            "this is {}, not safetensors; upload the weights as .safetensors",
            format.describe()
        )
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    name: &str,
    blob: &SealedBlob,
) -> Result<T, IngestError> {
    let file = std::fs::File::open(blob.temp_path())?;
    serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| IngestError::BadJson {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_paths_or_controls_are_refused() {
        for bad in [
            "../x.safetensors",
            "a/b.safetensors",
            "C:\\x.safetensors",
            "x\0.safetensors",
            "x\r\n.safetensors",
            "\u{202e}x.safetensors",
            "",
            "..",
        ] {
            assert!(
                matches!(classify(bad), Err(IngestError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_refused_name_says_why_for_its_own_format() {
        let reason = |name: &str| match refuse_foreign_name(name) {
            Err(IngestError::Unsupported { reason, .. }) => reason,
            other => panic!("{name}: {other:?}"),
        };
        assert!(reason("pytorch_model.bin").contains("pickle"));
        let gguf = reason("model.gguf");
        assert!(
            gguf.contains("already") && !gguf.contains("pickle"),
            "{gguf}"
        );
        assert!(!reason("model.onnx").contains("pickle"));
        assert!(reason("weights.tar").contains("archives"));
        assert!(refuse_foreign_name("model.safetensors").is_ok());
    }

    #[test]
    fn kinds_follow_the_hugging_face_layout() {
        assert_eq!(
            classify("model-00001-of-00002.safetensors").unwrap(),
            FileKind::Safetensors
        );
        assert_eq!(
            classify("model.safetensors.index.json").unwrap(),
            FileKind::ShardIndex
        );
        assert_eq!(classify("config.json").unwrap(), FileKind::Config);
        assert_eq!(classify("tokenizer.json").unwrap(), FileKind::Side);
        assert!(matches!(
            classify("pytorch_model.bin"),
            Err(IngestError::Unsupported { .. })
        ));
    }
}
