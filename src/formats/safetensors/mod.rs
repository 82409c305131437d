//! safetensors headers, parsed as hostile input.
//!
//! Owns the rules a safetensors file must satisfy before any byte of it is trusted: every check
//! the reference crate makes (header size cap, UTF-8, schema, contiguous offsets from zero,
//! `shape × dtype = bytes`, no trailing bytes) plus a few it does not (duplicate tensor names,
//! a tensor-count cap, offsets and shapes in checked arithmetic). Validation works on a stream,
//! so an upload is checked as it arrives and memory stays bounded by the header size.
//! No I/O beyond `std::io::Read` on local files, no async, no database.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::numeric::Dtype;

mod stream;
pub mod write;

pub use stream::{ReadError, StreamValidator, read_header};

/// Largest header accepted, in bytes (the reference reader's limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Largest number of tensors accepted in one file.
pub const MAX_TENSORS: usize = 1 << 18;
/// Longest tensor name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Most dimensions a tensor may have (NumPy allows 64; real weights have at most 5).
pub const MAX_DIMENSIONS: usize = 16;

/// One tensor's entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name as written in the header.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// Byte range relative to the start of the data section.
    pub begin: u64,
    /// One past the last byte, relative to the start of the data section.
    pub end: u64,
}

impl TensorInfo {
    /// Number of elements (checked at validation, so it cannot overflow here).
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Byte length of the tensor's data.
    pub fn bytes(&self) -> u64 {
        self.end - self.begin
    }
}

/// A validated header: tensors sorted by offset, plus the optional string metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Length of the JSON header in bytes (the first 8 bytes of the file).
    pub header_len: u64,
    /// `__metadata__`, when present.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Tensors in data order.
    pub tensors: Vec<TensorInfo>,
}

impl Header {
    /// Byte offset of the data section within the file.
    pub fn data_start(&self) -> u64 {
        8 + self.header_len
    }

    /// Length of the data section.
    pub fn data_len(&self) -> u64 {
        self.tensors.last().map_or(0, |t| t.end)
    }

    /// Exact length the whole file must have.
    pub fn file_len(&self) -> u64 {
        self.data_start() + self.data_len()
    }

    /// Checks that the file is exactly as long as the header says.
    pub fn check_file_len(&self, actual: u64) -> Result<(), SafetensorsError> {
        let expected = self.file_len();
        match actual.cmp(&expected) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(SafetensorsError::Truncated { expected, actual }),
            std::cmp::Ordering::Greater => {
                Err(SafetensorsError::TrailingBytes { expected, actual })
            }
        }
    }
}

/// A file that is recognisably some other format, which we refuse to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignFormat {
    /// A raw Python pickle stream.
    Pickle,
    /// A zip archive (PyTorch `.pt`/`.bin` checkpoints are zip files holding `data.pkl`).
    Zip,
    /// gzip, 7z, tar and other archives.
    Archive,
    /// A NumPy `.npy` file.
    Numpy,
    /// A GGUF file.
    Gguf,
    /// HDF5 (Keras `.h5`).
    Hdf5,
}

impl ForeignFormat {
    /// Name for messages.
    pub fn describe(self) -> &'static str {
        match self {
            ForeignFormat::Pickle => "a Python pickle",
            ForeignFormat::Zip => "a zip archive (PyTorch checkpoints are zipped pickles)",
            ForeignFormat::Archive => "a compressed archive",
            ForeignFormat::Numpy => "a NumPy .npy file",
            ForeignFormat::Gguf => "a GGUF file",
            ForeignFormat::Hdf5 => "an HDF5 file",
        }
    }

    /// True for formats that execute code when loaded.
    pub fn is_pickle_based(self) -> bool {
        matches!(self, ForeignFormat::Pickle | ForeignFormat::Zip)
    }
}

/// Everything that can be wrong with a safetensors file. Each variant has a stable `code()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetensorsError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is {len} bytes; a safetensors file starts with an 8-byte header length")]
    HeaderTooSmall { len: u64 },
    #[error("the header length {len} exceeds the limit of {MAX_HEADER_BYTES} bytes")]
    HeaderTooLarge { len: u64 },
    #[error("the header length {header_len} runs past the end of the {file_len}-byte file")]
    HeaderPastEnd { header_len: u64, file_len: u64 },
    #[error("the header is not valid UTF-8 (byte {at})")]
    HeaderNotUtf8 { at: usize },
    #[error("the header is not a valid safetensors JSON object: {reason}")]
    HeaderNotJson { reason: String },
    #[error("tensor name {name:?} appears more than once")]
    DuplicateTensor { name: String },
    #[error("__metadata__ value for key {key:?} is not a string")]
    MetadataNotString { key: String },
    #[error(
        "tensor name {name:?} (its start) is longer than {MAX_NAME_BYTES} bytes or holds a NUL character"
    )]
    BadName { name: String },
    #[error("tensor {name:?} has more than {MAX_DIMENSIONS} dimensions")]
    TooManyDimensions { name: String },
    #[error("tensor {name:?} has unknown dtype {dtype:?}")]
    UnknownDtype { name: String, dtype: String },
    #[error("tensor {name:?}: shape product overflows")]
    ShapeOverflow { name: String },
    #[error("tensor {name:?}: {elements} elements of {dtype} do not fill whole bytes")]
    MisalignedTensor {
        name: String,
        elements: u64,
        dtype: Dtype,
    },
    #[error("tensor {name:?}: data_offsets end {end} is before begin {begin}")]
    OffsetsReversed { name: String, begin: u64, end: u64 },
    #[error("tensor {name:?} starts at {begin} but the previous tensor ends at {expected}: a gap")]
    OffsetGap {
        name: String,
        begin: u64,
        expected: u64,
    },
    #[error(
        "tensor {name:?} starts at {begin} but the previous tensor ends at {expected}: overlapping data"
    )]
    OffsetOverlap {
        name: String,
        begin: u64,
        expected: u64,
    },
    #[error(
        "tensor {name:?}: shape {shape:?} of {dtype} needs {expected} bytes but data_offsets give {actual}"
    )]
    SizeMismatch {
        name: String,
        dtype: Dtype,
        shape: Vec<u64>,
        expected: u64,
        actual: u64,
    },
    #[error("the header lists {count} tensors; the limit is {MAX_TENSORS}")]
    TooManyTensors { count: usize },
    #[error("the header lists no tensors")]
    NoTensors,
    #[error("the file is truncated: the header promises {expected} bytes, the file has {actual}")]
    Truncated { expected: u64, actual: u64 },
    #[error(
        "the file has trailing bytes: the header accounts for {expected} bytes, the file has {actual}"
    )]
    TrailingBytes { expected: u64, actual: u64 },
    #[error("this is {}, not safetensors", .0.describe())]
    Foreign(ForeignFormat),
}

impl SafetensorsError {
    /// A stable snake_case code, part of the API contract.
    pub fn code(&self) -> &'static str {
        match self {
            SafetensorsError::Empty => "empty_file",
            SafetensorsError::HeaderTooSmall { .. } => "header_too_small",
            SafetensorsError::HeaderTooLarge { .. } => "header_too_large",
            SafetensorsError::HeaderPastEnd { .. } => "header_past_end",
            SafetensorsError::HeaderNotUtf8 { .. } => "header_not_utf8",
            SafetensorsError::HeaderNotJson { .. } => "header_not_json",
            SafetensorsError::DuplicateTensor { .. } => "duplicate_tensor",
            SafetensorsError::MetadataNotString { .. } => "metadata_not_string",
            SafetensorsError::UnknownDtype { .. } => "unknown_dtype",
            SafetensorsError::BadName { .. } => "bad_tensor_name",
            SafetensorsError::TooManyDimensions { .. } => "too_many_dimensions",
            SafetensorsError::ShapeOverflow { .. } => "shape_overflow",
            SafetensorsError::MisalignedTensor { .. } => "misaligned_tensor",
            SafetensorsError::OffsetsReversed { .. } => "offsets_reversed",
            SafetensorsError::OffsetGap { .. } => "offset_gap",
            SafetensorsError::OffsetOverlap { .. } => "offset_overlap",
            SafetensorsError::SizeMismatch { .. } => "size_mismatch",
            SafetensorsError::TooManyTensors { .. } => "too_many_tensors",
            SafetensorsError::NoTensors => "no_tensors",
            SafetensorsError::Truncated { .. } => "truncated",
            SafetensorsError::TrailingBytes { .. } => "trailing_bytes",
            SafetensorsError::Foreign(_) => "unsupported_format",
        }
    }

    /// The tensor the defect concerns, when there is one.
    pub fn tensor(&self) -> Option<&str> {
        match self {
            SafetensorsError::DuplicateTensor { name }
            | SafetensorsError::UnknownDtype { name, .. }
            | SafetensorsError::ShapeOverflow { name }
            | SafetensorsError::MisalignedTensor { name, .. }
            | SafetensorsError::OffsetsReversed { name, .. }
            | SafetensorsError::OffsetGap { name, .. }
            | SafetensorsError::OffsetOverlap { name, .. }
            | SafetensorsError::SizeMismatch { name, .. }
            | SafetensorsError::TooManyDimensions { name } => Some(name),
            _ => None,
        }
    }
}

/// Recognises formats we refuse by their leading bytes. Call only after the bytes failed to look
/// like a safetensors prefix (see [`looks_like_safetensors`]).
pub fn sniff_foreign(prefix: &[u8]) -> Option<ForeignFormat> {
    const MAGICS: &[(&[u8], ForeignFormat)] = &[
        (b"PK\x03\x04", ForeignFormat::Zip),
        (b"PK\x05\x06", ForeignFormat::Zip),
        (b"\x1f\x8b", ForeignFormat::Archive),
        (b"7z\xbc\xaf\x27\x1c", ForeignFormat::Archive),
        (b"BZh", ForeignFormat::Archive),
        (b"\xfd7zXZ\x00", ForeignFormat::Archive),
        (b"\x28\xb5\x2f\xfd", ForeignFormat::Archive),
        (b"\x93NUMPY", ForeignFormat::Numpy),
        (b"GGUF", ForeignFormat::Gguf),
        (b"\x89HDF\r\n\x1a\n", ForeignFormat::Hdf5),
    ];
    if let Some((_, format)) = MAGICS.iter().find(|(magic, _)| prefix.starts_with(magic)) {
        return Some(*format);
    }
    // Pickle protocol 2+ opens with PROTO (0x80) and the protocol number.
    if prefix.len() >= 2 && prefix[0] == 0x80 && (2..=5).contains(&prefix[1]) {
        return Some(ForeignFormat::Pickle);
    }
    // Protocol 0/1 pickles of a dict or list (`(dp0`, `}q`, `]q`): no safetensors header starts so.
    if prefix.len() >= 2 && matches!(&prefix[..2], b"(d" | b"}q" | b"]q" | b"(l") {
        return Some(ForeignFormat::Pickle);
    }
    None
}

/// Whether the first bytes can begin a safetensors file: a header length within the cap,
/// followed (when present) by the opening of a JSON object.
pub fn looks_like_safetensors(prefix: &[u8]) -> bool {
    let Some(len_bytes) = prefix.get(..8) else {
        return true;
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    if header_len > MAX_HEADER_BYTES {
        return false;
    }
    match prefix.get(8) {
        None => true,
        Some(b) => matches!(b, b'{' | b' ' | b'\t' | b'\n' | b'\r'),
    }
}

/// Parses and validates a header's JSON bytes. The file length is checked separately with
/// [`Header::check_file_len`].
pub fn parse_header(json: &[u8]) -> Result<Header, SafetensorsError> {
    if let Err(err) = std::str::from_utf8(json) {
        return Err(SafetensorsError::HeaderNotUtf8 {
            at: err.valid_up_to(),
        });
    }
    let mut defect = None;
    let seed = HeaderSeed {
        defect: &mut defect,
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed = seed.deserialize(&mut de).and_then(|raw| {
        de.end()?;
        Ok(raw)
    });
    let raw = match parsed {
        Ok(raw) => raw,
        Err(err) => {
            return Err(defect.unwrap_or_else(|| SafetensorsError::HeaderNotJson {
                reason: err.to_string(),
            }));
        }
    };
    validate_entries(json.len() as u64, raw)
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    #[serde(deserialize_with = "bounded_shape")]
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The message by which [`bounded_shape`] stops a parse.
const TOO_MANY_DIMENSIONS: &str = "more dimensions than allowed";

/// A shape of at most [`MAX_DIMENSIONS`] entries, refused at the first one past it (a
/// `Vec<u64>` would first hold all of them: 8 bytes for each of millions).
fn bounded_shape<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    struct Dims;
    impl<'de> Visitor<'de> for Dims {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of dimensions")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
            let mut dims = Vec::new();
            while let Some(d) = seq.next_element::<u64>()? {
                if dims.len() == MAX_DIMENSIONS {
                    return Err(de::Error::custom(TOO_MANY_DIMENSIONS));
                }
                dims.push(d);
            }
            Ok(dims)
        }
    }
    deserializer.deserialize_seq(Dims)
}

/// `__metadata__`: string keys to string values, without NUL characters.
struct MetadataSeed<'a> {
    defect: &'a mut Option<SafetensorsError>,
}

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut strings = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            match map.next_value::<OnlyString>() {
                Ok(OnlyString(value)) if !key.contains('\0') && !value.contains('\0') => {
                    strings.insert(key, value);
                }
                Ok(_) => {
                    *self.defect = Some(SafetensorsError::BadName {
                        name: format!(
                            "__metadata__ {:?}",
                            key.chars().take(64).collect::<String>()
                        ),
                    });
                    return Err(de::Error::custom("NUL in metadata"));
                }
                Err(err) => {
                    *self.defect = Some(SafetensorsError::MetadataNotString { key });
                    return Err(err);
                }
            }
        }
        Ok(strings)
    }
}

/// A JSON string, and nothing else: any other value is refused before it is read.
struct OnlyString(String);

impl<'de> Deserialize<'de> for OnlyString {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
        }
        deserializer.deserialize_str(Text).map(OnlyString)
    }
}

struct RawHeader {
    metadata: Option<BTreeMap<String, String>>,
    tensors: Vec<(String, RawTensor)>,
}

/// Deserialises the top-level object keeping every entry, so duplicates are seen rather than
/// silently overwritten, and records the first structural defect for a precise error.
struct HeaderSeed<'a> {
    defect: &'a mut Option<SafetensorsError>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = RawHeader;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<RawHeader, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of tensor entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let mut seen = HashSet::new();
        let mut metadata = None;
        let mut tensors = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                *self.defect = Some(SafetensorsError::DuplicateTensor { name: key.clone() });
                return Err(de::Error::custom("duplicate key"));
            }
            if key == "__metadata__" {
                // Typed all the way down: a non-string value stops the parse where it starts,
                // before an array or object inside it costs any memory.
                metadata = Some(map.next_value_seed(MetadataSeed {
                    defect: &mut *self.defect,
                })?);
                continue;
            }
            if key.len() > MAX_NAME_BYTES || key.contains('\0') {
                *self.defect = Some(SafetensorsError::BadName {
                    name: key.chars().take(64).collect(),
                });
                return Err(de::Error::custom("bad tensor name"));
            }
            if tensors.len() >= MAX_TENSORS {
                *self.defect = Some(SafetensorsError::TooManyTensors {
                    count: tensors.len() + 1,
                });
                return Err(de::Error::custom("too many tensors"));
            }
            let entry: RawTensor = map.next_value().map_err(|e| {
                if e.to_string().contains(TOO_MANY_DIMENSIONS) {
                    *self.defect = Some(SafetensorsError::TooManyDimensions { name: key.clone() });
                }
                de::Error::custom(format_args!("tensor {key:?}: {e}"))
            })?;
            tensors.push((key, entry));
        }
        Ok(RawHeader { metadata, tensors })
    }
}

fn validate_entries(header_len: u64, raw: RawHeader) -> Result<Header, SafetensorsError> {
    let mut tensors = Vec::with_capacity(raw.tensors.len());
    for (name, entry) in raw.tensors {
        let Some(dtype) = Dtype::parse(&entry.dtype) else {
            return Err(SafetensorsError::UnknownDtype {
                name,
                dtype: entry.dtype,
            });
        };
        let (begin, end) = entry.data_offsets;
        if end < begin {
            return Err(SafetensorsError::OffsetsReversed { name, begin, end });
        }
        let Some(elements) = entry
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        else {
            return Err(SafetensorsError::ShapeOverflow { name });
        };
        let Some(bits) = elements.checked_mul(dtype.bits()) else {
            return Err(SafetensorsError::ShapeOverflow { name });
        };
        if bits % 8 != 0 {
            return Err(SafetensorsError::MisalignedTensor {
                name,
                elements,
                dtype,
            });
        }
        if bits / 8 != end - begin {
            return Err(SafetensorsError::SizeMismatch {
                name,
                dtype,
                shape: entry.shape,
                expected: bits / 8,
                actual: end - begin,
            });
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape: entry.shape,
            begin,
            end,
        });
    }
    tensors.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
    let mut expected = 0u64;
    for t in &tensors {
        if t.begin > expected {
            return Err(SafetensorsError::OffsetGap {
                name: t.name.clone(),
                begin: t.begin,
                expected,
            });
        }
        if t.begin < expected {
            return Err(SafetensorsError::OffsetOverlap {
                name: t.name.clone(),
                begin: t.begin,
                expected,
            });
        }
        expected = t.end;
    }
    Ok(Header {
        header_len,
        metadata: raw.metadata,
        tensors,
    })
}

#[cfg(test)]
mod tests;
