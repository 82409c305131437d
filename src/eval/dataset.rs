//! Evaluation sets: parsing and validating an uploaded one as hostile input, the figures kept
//! about it (so a job can be checked against a model without reading it again), and the check
//! that a set fits a model.
//!
//! Two encodings: token sequences as JSONL, one `{"tokens": [ids...], "label"?: n}` per line
//! (a bare `[ids...]` array is accepted too), for decoders and encoders; and a safetensors file
//! with `inputs` (float, `[rows, features...]`) and `labels` (integer, `[rows]`) for
//! classifiers.

use serde::{Deserialize, Serialize};

use super::Architecture;
use crate::formats::safetensors;
use crate::numeric::Dtype;
use crate::numeric::codec;

/// Longest token sequence accepted.
pub const MAX_SEQUENCE: usize = 8192;

/// A parsed evaluation set.
#[derive(Debug, Clone)]
pub enum Dataset {
    Tokens(Vec<Sequence>),
    Tensors {
        /// `[rows × features]`, row-major.
        inputs: Vec<f32>,
        features: usize,
        labels: Vec<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    pub label: Option<u32>,
}

/// What is kept about a set beside its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetStats {
    /// `tokens` or `tensors`.
    pub kind: String,
    /// Sequences or rows.
    pub rows: u64,
    /// Tokens in all sequences (tokens sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Input features per row (tensors sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<u64>,
    /// Rows or sequences with a label.
    pub labelled: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_label: Option<u32>,
    /// What makes figures measured on this set unreliable (too few sequences, rows or tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Below these, one sequence or row more or less moves a figure visibly.
const FEW_ROWS: u64 = 32;
const FEW_TOKENS: u64 = 4096;

impl DatasetStats {
    /// Fills `warnings` from the figures.
    fn warned(mut self) -> DatasetStats {
        if self.rows < FEW_ROWS {
            self.warnings.push(format!(
                "only {} {}: accuracy and perplexity measured on so few are noisy; {FEW_ROWS} or more are advised",
                self.rows,
                if self.kind == "tokens" { "sequences" } else { "rows" }
            ));
        }
        if let Some(tokens) = self.tokens.filter(|t| *t < FEW_TOKENS) {
            self.warnings.push(format!(
                "only {tokens} tokens: a perplexity from so few is noisy; {FEW_TOKENS} or more are advised"
            ));
        }
        self
    }
}

/// Why a set was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DatasetError {
    #[error("the dataset is empty")]
    Empty,
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{0}")]
    Tensors(String),
    #[error("{0}")]
    Mismatch(String),
}

impl DatasetError {
    pub fn code(&self) -> &'static str {
        match self {
            DatasetError::Empty => "empty_dataset",
            DatasetError::Line { .. } | DatasetError::Tensors(_) => "invalid_dataset",
            DatasetError::Mismatch(_) => "dataset_mismatch",
        }
    }
}

/// `{"tokens": [...], "label": n}`. Read by its first character rather than as an untagged
/// enum, which would first copy the whole line into a generic tree (tens of bytes per id).
#[derive(Deserialize)]
struct TokenObject {
    #[serde(deserialize_with = "bounded_ids")]
    tokens: Vec<i64>,
    #[serde(default)]
    label: Option<i64>,
}

/// The message by which [`bounded_ids`] stops a line.
const TOO_LONG: &str = "tokens; at most";

/// A sequence of ids, refused at the first one past [`MAX_SEQUENCE`] (before the rest of an
/// enormous line costs memory).
fn bounded_ids<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<i64>, D::Error> {
    struct Ids;
    impl<'de> serde::de::Visitor<'de> for Ids {
        type Value = Vec<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of token ids")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
            let mut ids = Vec::new();
            while let Some(id) = seq.next_element::<i64>()? {
                if ids.len() == MAX_SEQUENCE {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_SEQUENCE} {TOO_LONG} {MAX_SEQUENCE} per sequence"
                    )));
                }
                ids.push(id);
            }
            Ok(ids)
        }
    }
    deserializer.deserialize_seq(Ids)
}

/// One line's ids and label.
fn parse_line(raw: &str) -> Result<(Vec<i64>, Option<i64>), serde_json::Error> {
    if raw.trim_start().starts_with('[') {
        let mut de = serde_json::Deserializer::from_str(raw);
        let ids = bounded_ids(&mut de)?;
        de.end()?;
        Ok((ids, None))
    } else {
        let object: TokenObject = serde_json::from_str(raw)?;
        Ok((object.tokens, object.label))
    }
}

/// Parses a set from its bytes, by content: safetensors when its header parses, else JSONL.
pub fn parse(bytes: &[u8]) -> Result<(Dataset, DatasetStats), DatasetError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(DatasetError::Empty);
    }
    if bytes.len() >= 8 && safetensors::looks_like_safetensors(bytes) {
        return parse_tensors(bytes);
    }
    parse_jsonl(bytes)
}

/// Calls `visit` with each non-empty line's tokens and label, checked.
fn each_sequence(
    bytes: &[u8],
    mut visit: impl FnMut(Vec<u32>, Option<u32>),
) -> Result<(), DatasetError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DatasetError::Line {
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        message: "not UTF-8 text (a token set is JSONL; a classifier set is safetensors)".into(),
    })?;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |message: String| DatasetError::Line { line, message };
        if raw.trim().is_empty() {
            continue;
        }
        let (ids, label) = parse_line(raw).map_err(|e| {
            let text = e.to_string();
            if text.contains(TOO_LONG) {
                bad(format!(
                    "more than {MAX_SEQUENCE} tokens; at most {MAX_SEQUENCE} per sequence"
                ))
            } else {
                bad(format!(
                    "expected {{\"tokens\": [ids...]}} or [ids...]: {text}"
                ))
            }
        })?;
        if ids.is_empty() {
            return Err(bad("the sequence has no tokens".into()));
        }
        let tokens = ids
            .iter()
            .map(|&t| {
                u32::try_from(t).map_err(|_| bad(format!("token id {t} is not a vocabulary index")))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let label = label
            .map(|l| u32::try_from(l).map_err(|_| bad(format!("label {l} is not a class index"))))
            .transpose()?;
        visit(tokens, label);
    }
    Ok(())
}

/// The figures of a token set, gathered line by line.
#[derive(Default)]
struct TokenFigures {
    rows: u64,
    tokens: u64,
    max_token: Option<u32>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    labelled: u64,
    max_label: Option<u32>,
}

impl TokenFigures {
    fn add(&mut self, tokens: &[u32], label: Option<u32>) {
        let length = tokens.len() as u64;
        self.rows += 1;
        self.tokens += length;
        self.max_token = self.max_token.max(tokens.iter().copied().max());
        self.min_length = Some(self.min_length.map_or(length, |m| m.min(length)));
        self.max_length = self.max_length.max(Some(length));
        if let Some(label) = label {
            self.labelled += 1;
            self.max_label = self.max_label.max(Some(label));
        }
    }

    fn stats(self) -> Result<DatasetStats, DatasetError> {
        if self.rows == 0 {
            return Err(DatasetError::Empty);
        }
        Ok(DatasetStats {
            kind: "tokens".into(),
            rows: self.rows,
            tokens: Some(self.tokens),
            max_token: self.max_token,
            min_length: self.min_length,
            max_length: self.max_length,
            features: None,
            labelled: self.labelled,
            max_label: self.max_label,
            warnings: Vec::new(),
        }
        .warned())
    }
}

fn parse_jsonl(bytes: &[u8]) -> Result<(Dataset, DatasetStats), DatasetError> {
    let mut sequences = Vec::new();
    let mut figures = TokenFigures::default();
    each_sequence(bytes, |tokens, label| {
        figures.add(&tokens, label);
        sequences.push(Sequence { tokens, label });
    })?;
    Ok((Dataset::Tokens(sequences), figures.stats()?))
}

/// A set's figures without keeping its contents: what an upload checks and records. A token
/// set is read one line at a time, so the memory is the bytes and one line.
pub fn stats(bytes: &[u8]) -> Result<DatasetStats, DatasetError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(DatasetError::Empty);
    }
    if bytes.len() >= 8 && safetensors::looks_like_safetensors(bytes) {
        return parse_tensors(bytes).map(|(_, stats)| stats);
    }
    let mut figures = TokenFigures::default();
    each_sequence(bytes, |tokens, label| figures.add(&tokens, label))?;
    figures.stats()
}

fn parse_tensors(bytes: &[u8]) -> Result<(Dataset, DatasetStats), DatasetError> {
    let bad = |m: String| DatasetError::Tensors(m);
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| bad("the safetensors header is cut off".into()))?;
    let json = bytes
        .get(8..8usize.saturating_add(len as usize))
        .ok_or_else(|| bad("the safetensors header is cut off".into()))?;
    let header = safetensors::parse_header(json).map_err(|e| bad(e.to_string()))?;
    header
        .check_file_len(bytes.len() as u64)
        .map_err(|e| bad(e.to_string()))?;
    let find = |name: &str| {
        header
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| {
                bad(format!(
                    "a classifier set holds `inputs` and `labels`; `{name}` is missing"
                ))
            })
    };
    let (inputs, labels) = (find("inputs")?, find("labels")?);
    let data = &bytes[header.data_start() as usize..];
    if !crate::numeric::is_float(inputs.dtype) {
        return Err(bad(format!(
            "`inputs` is {}; expected F32, F16 or BF16",
            inputs.dtype.as_str()
        )));
    }
    if inputs.shape.len() < 2 {
        return Err(bad(format!(
            "`inputs` has shape {:?}; expected [rows, features...]",
            inputs.shape
        )));
    }
    let rows = inputs.shape[0];
    let features: u64 = inputs.shape[1..].iter().product();
    if rows == 0 || features == 0 {
        return Err(DatasetError::Empty);
    }
    if labels.shape != [rows] {
        return Err(bad(format!(
            "`labels` has shape {:?}; expected [{rows}], one per row of `inputs`",
            labels.shape
        )));
    }
    let mut values = vec![0f32; (rows * features) as usize];
    codec::decode(
        inputs.dtype,
        &data[inputs.begin as usize..inputs.end as usize],
        &mut values,
    );
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!(
            "`inputs` holds a non-finite value at row {}",
            i as u64 / features
        )));
    }
    let label_bytes = &data[labels.begin as usize..labels.end as usize];
    let raw: Vec<i64> = match labels.dtype {
        Dtype::U8 => label_bytes.iter().map(|&b| b as i64).collect(),
        Dtype::I8 => label_bytes.iter().map(|&b| b as i8 as i64).collect(),
        Dtype::I16 | Dtype::U16 => label_bytes
            .chunks_exact(2)
            .map(|c| {
                let b = [c[0], c[1]];
                if labels.dtype == Dtype::I16 {
                    i16::from_le_bytes(b) as i64
                } else {
                    u16::from_le_bytes(b) as i64
                }
            })
            .collect(),
        Dtype::I32 | Dtype::U32 => label_bytes
            .chunks_exact(4)
            .map(|c| {
                let b = c.try_into().expect("4 bytes");
                if labels.dtype == Dtype::I32 {
                    i32::from_le_bytes(b) as i64
                } else {
                    u32::from_le_bytes(b) as i64
                }
            })
            .collect(),
        Dtype::I64 => label_bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        other => {
            return Err(bad(format!(
                "`labels` is {}; expected an integer dtype",
                other.as_str()
            )));
        }
    };
    let labels = raw
        .iter()
        .enumerate()
        .map(|(row, &l)| {
            u32::try_from(l)
                .map_err(|_| bad(format!("label {l} at row {row} is not a class index")))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let stats = DatasetStats {
        kind: "tensors".into(),
        rows,
        tokens: None,
        max_token: None,
        min_length: None,
        max_length: None,
        features: Some(features),
        labelled: rows,
        max_label: labels.iter().copied().max(),
        warnings: Vec::new(),
    }
    .warned();
    Ok((
        Dataset::Tensors {
            inputs: values,
            features: features as usize,
            labels,
        },
        stats,
    ))
}

/// Tokenizes raw text with a model's `tokenizer.json` into JSONL token sequences of `window`
/// tokens (the last one shorter), the form sets are stored in.
pub fn tokenize_text(
    tokenizer_json: &[u8],
    text: &[u8],
    window: usize,
) -> Result<Vec<u8>, DatasetError> {
    let text = std::str::from_utf8(text)
        .map_err(|_| DatasetError::Tensors("a text set must be UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(DatasetError::Empty);
    }
    let mut tokenizer = tokenizers::Tokenizer::from_bytes(tokenizer_json).map_err(|e| {
        DatasetError::Mismatch(format!("the model's tokenizer.json does not load: {e}"))
    })?;
    // A tokenizer.json may carry the model's truncation (BERT's: 128 or 512 tokens) and
    // padding: the whole text is wanted here, cut into windows below.
    tokenizer
        .with_truncation(None)
        .map_err(|e| DatasetError::Mismatch(format!("the tokenizer's truncation: {e}")))?;
    tokenizer.with_padding(None);
    let encoding = tokenizer
        .encode(text, true)
        .map_err(|e| DatasetError::Tensors(format!("the text does not tokenize: {e}")))?;
    let ids = encoding.get_ids();
    let mut out = Vec::new();
    for chunk in ids.chunks(window.clamp(2, MAX_SEQUENCE)) {
        if chunk.len() < 2 && !out.is_empty() {
            break;
        }
        let line = serde_json::json!({ "tokens": chunk });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// Whether a set can evaluate a model of this architecture.
pub fn check_fits(stats: &DatasetStats, arch: &Architecture) -> Result<(), DatasetError> {
    let mismatch = |m: String| Err(DatasetError::Mismatch(m));
    let want = arch.dataset_kind();
    if stats.kind != want {
        return mismatch(format!(
            "a {} model is evaluated on a {want} set (JSONL token sequences for language models, safetensors inputs and labels for classifiers); this set holds {}",
            arch.name(),
            stats.kind
        ));
    }
    if let (Some(vocab), Some(max)) = (arch.vocab_size(), stats.max_token)
        && max as usize >= vocab
    {
        return mismatch(format!(
            "token id {max} is beyond the model's vocabulary of {vocab}"
        ));
    }
    match arch {
        Architecture::Decoder { .. } => {
            if stats.min_length.unwrap_or(0) < 2 {
                return mismatch(
                    "every sequence needs at least 2 tokens to score a next-token prediction"
                        .into(),
                );
            }
        }
        Architecture::Encoder {
            max_positions,
            labels,
            ..
        } => {
            if let Some(len) = stats.max_length
                && len as usize > *max_positions
            {
                return mismatch(format!(
                    "a sequence of {len} tokens is longer than the model's {max_positions} positions"
                ));
            }
            if let (Some(classes), Some(max)) = (labels, stats.max_label)
                && max as usize >= *classes
            {
                return mismatch(format!(
                    "label {max} is out of range for the model's {classes} classes"
                ));
            }
        }
        Architecture::Mlp {
            inputs, classes, ..
        } => {
            if stats.features != Some(*inputs as u64) {
                return mismatch(format!(
                    "rows have {} features; the model's first layer takes {inputs}",
                    stats.features.unwrap_or(0)
                ));
            }
            if let Some(max) = stats.max_label
                && max as usize >= *classes
            {
                return mismatch(format!(
                    "label {max} is out of range for the model's {classes} classes"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(vocab: usize) -> Architecture {
        Architecture::Decoder {
            model_type: "llama".into(),
            vocab_size: vocab,
        }
    }

    #[test]
    fn token_lines_parse_with_labels_and_blank_lines_and_bad_lines_name_their_number() {
        let (set, stats) = parse(b"{\"tokens\": [1, 2, 3], \"label\": 1}\n\n[4, 5]\n").unwrap();
        let Dataset::Tokens(seqs) = set else { panic!() };
        assert_eq!(seqs.len(), 2);
        assert_eq!(seqs[0].label, Some(1));
        assert_eq!(stats.max_token, Some(5));
        assert_eq!((stats.min_length, stats.max_length), (Some(2), Some(3)));
        assert_eq!(stats.labelled, 1);
        assert_eq!(parse(b"  \n").unwrap_err(), DatasetError::Empty);
        for (body, line) in [
            (&b"[1]\n{\"tokens\": []}\n"[..], 2),
            (b"[1]\n[2]\n[1.5]\n", 3),
            (b"{\"tokens\": [1], \"extra\": 2", 1),
            (b"[1, -3]", 1),
            (b"\xff\xfe", 1),
        ] {
            match parse(body) {
                Err(DatasetError::Line { line: l, .. }) => assert_eq!(l, line, "{body:?}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_tokenizers_own_truncation_does_not_cut_the_text() {
        let tokenizer = br#"{"version": "1.0",
            "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0},
            "padding": null, "added_tokens": [], "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "[UNK]": 2}, "unk_token": "[UNK]"}}"#;
        let text = "a b ".repeat(20);
        let jsonl = tokenize_text(tokenizer, text.as_bytes(), 16).unwrap();
        let lines: Vec<&str> = std::str::from_utf8(&jsonl).unwrap().lines().collect();
        let tokens: usize = lines
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["tokens"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(tokens, 40, "{lines:?}");
        assert_eq!(lines.len(), 3);
        // Three short windows: the set says its figures will be noisy.
        let warnings = stats(&jsonl).unwrap().warnings;
        assert!(
            warnings.iter().any(|w| w.contains("only 3 sequences")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("only 40 tokens")),
            "{warnings:?}"
        );
    }

    #[test]
    fn every_truncation_and_corruption_of_a_set_is_an_error_not_a_panic() {
        let header = br#"{"inputs":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"labels":{"dtype":"U8","shape":[2],"data_offsets":[16,18]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.extend((0..4).flat_map(|i| (i as f32).to_le_bytes()));
        file.extend([1u8, 0]);
        let (_, stats) = parse(&file).unwrap();
        assert_eq!(
            (stats.rows, stats.features, stats.max_label),
            (2, Some(2), Some(1))
        );
        for cut in 0..file.len() {
            let _ = parse(&file[..cut]);
        }
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0xff;
            let _ = parse(&bad);
        }
        let mut nan = file.clone();
        let data = 8 + header.len();
        nan[data..data + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(parse(&nan), Err(DatasetError::Tensors(m)) if m.contains("non-finite")));
    }

    #[test]
    fn fit_checks_vocabulary_length_and_kind() {
        let (_, stats) = parse(b"[1, 2, 99]\n").unwrap();
        assert!(check_fits(&stats, &decoder(100)).is_ok());
        assert!(
            matches!(check_fits(&stats, &decoder(99)), Err(DatasetError::Mismatch(m)) if m.contains("99"))
        );
        let (_, short) = parse(b"[1]\n").unwrap();
        assert!(check_fits(&short, &decoder(100)).is_err());
        let encoder = Architecture::Encoder {
            vocab_size: 100,
            max_positions: 2,
            labels: Some(2),
        };
        assert!(check_fits(&stats, &encoder).is_err());
        let (_, labelled) = parse(b"{\"tokens\": [1], \"label\": 2}\n").unwrap();
        let wide = Architecture::Encoder {
            vocab_size: 100,
            max_positions: 8,
            labels: Some(2),
        };
        assert!(
            matches!(check_fits(&labelled, &wide), Err(DatasetError::Mismatch(m)) if m.contains("label 2"))
        );
    }
}
