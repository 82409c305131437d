//! GGUF version 3, the file llama.cpp loads: the header, key/value metadata, tensor infos with
//! dimensions in GGUF's reversed order (innermost first), and the tensor data, each tensor
//! aligned to `general.alignment` (32) and padded after, the last included (ggml's reader
//! requires both); and a reader of the same structure, for `squeeze inspect` and our tests.
//! The Llama-family conventions of llama.cpp's converter are in `llama`, llama-quantize's
//! per-tensor type rules in `rules`, the writer in `write`. Byte facts: shared/reference/formats.md §3.

pub mod llama;
pub mod rules;
pub mod write;

pub use llama::{
    llama_family, llama_metadata, llama_tensor_name, rotary_permutation, tokenizer_metadata,
};

use std::io::{self, Read};

use crate::compress::blocks::BlockType;
use crate::numeric::Dtype;

/// "GGUF".
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version written.
pub const VERSION: u32 = 3;
/// Data alignment (GGUF's default, so `general.alignment` is not written).
pub const ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_NAME` minus the NUL: longer tensor names fail to load.
pub const MAX_NAME: usize = 63;
/// `GGML_QNT_VERSION`, written as `general.quantization_version` when a tensor is quantized.
pub const QUANTIZATION_VERSION: u32 = 2;

/// A ggml tensor type (the ids are the format's).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
}

impl GgmlType {
    const ALL: [GgmlType; 16] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::BF16,
    ];

    /// The type with this id, if squeeze knows it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| *t as u32 == id)
    }

    /// The block type, for quantized types.
    pub fn block(self) -> Option<BlockType> {
        Some(match self {
            GgmlType::Q4_0 => BlockType::Q4_0,
            GgmlType::Q4_1 => BlockType::Q4_1,
            GgmlType::Q5_0 => BlockType::Q5_0,
            GgmlType::Q5_1 => BlockType::Q5_1,
            GgmlType::Q8_0 => BlockType::Q8_0,
            GgmlType::Q4_K => BlockType::Q4_K,
            GgmlType::Q5_K => BlockType::Q5_K,
            GgmlType::Q6_K => BlockType::Q6_K,
            _ => return None,
        })
    }

    /// (values, bytes) of one block.
    pub fn block_shape(self) -> (u64, u64) {
        match self.block() {
            Some(b) => (b.block_len() as u64, b.block_bytes() as u64),
            None => (
                1,
                match self {
                    GgmlType::I8 => 1,
                    GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => 2,
                    GgmlType::F32 | GgmlType::I32 => 4,
                    _ => 8,
                },
            ),
        }
    }

    /// Bytes of a tensor of `elements` values (a whole number of blocks).
    pub fn bytes(self, elements: u64) -> u64 {
        let (len, bytes) = self.block_shape();
        elements / len * bytes
    }

    /// The name ggml gives it.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::F64 => "F64",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::I64 => "I64",
            other => other.block().expect("quantized").name(),
        }
    }
}

impl From<BlockType> for GgmlType {
    fn from(kind: BlockType) -> GgmlType {
        match kind {
            BlockType::Q8_0 => GgmlType::Q8_0,
            BlockType::Q4_0 => GgmlType::Q4_0,
            BlockType::Q4_1 => GgmlType::Q4_1,
            BlockType::Q5_0 => GgmlType::Q5_0,
            BlockType::Q5_1 => GgmlType::Q5_1,
            BlockType::Q4_K => GgmlType::Q4_K,
            BlockType::Q5_K => GgmlType::Q5_K,
            BlockType::Q6_K => GgmlType::Q6_K,
        }
    }
}

/// The GGUF type that holds a safetensors dtype's bytes unchanged, if there is one.
pub fn dense_type(dtype: Dtype) -> Option<GgmlType> {
    Some(match dtype {
        Dtype::F32 => GgmlType::F32,
        Dtype::F16 => GgmlType::F16,
        Dtype::BF16 => GgmlType::BF16,
        Dtype::F64 => GgmlType::F64,
        Dtype::I8 => GgmlType::I8,
        Dtype::I16 => GgmlType::I16,
        Dtype::I32 => GgmlType::I32,
        Dtype::I64 => GgmlType::I64,
        _ => return None,
    })
}

/// A metadata value (the kinds squeeze writes and reads).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// An array of one scalar or string type (ggml refuses nested arrays).
    Array(Vec<Value>),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.push(*v as u8),
            Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::String(s) => write_string(out, s),
            Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Array(items) => {
                let element = items.first().map_or(8, Value::type_id);
                out.extend_from_slice(&element.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
        }
    }

    /// A short rendering for `inspect` (arrays by length).
    pub fn describe(&self) -> String {
        match self {
            Value::String(s) if s.len() > 80 => format!("{:?}…", &s[..s.floor_char_boundary(80)]),
            Value::String(s) => format!("{s:?}"),
            Value::Array(items) => format!("[{} items]", items.len()),
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
        }
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One tensor's entry: its name, shape in PyTorch order (written reversed), type and where its
/// data starts, relative to the data section.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    /// Name (at most [`MAX_NAME`] bytes).
    pub name: String,
    /// Dimensions, outermost first as in safetensors.
    pub shape: Vec<u64>,
    /// Type.
    pub kind: GgmlType,
    /// Offset in the data section.
    pub offset: u64,
}

impl GgufTensor {
    /// Bytes of its data (without padding).
    pub fn bytes(&self) -> u64 {
        self.kind.bytes(self.shape.iter().product())
    }
}

/// `n` rounded up to the alignment.
pub fn padded(n: u64) -> u64 {
    n.next_multiple_of(ALIGNMENT)
}

/// Gives each tensor its offset in order, each aligned; returns the data section's length
/// (the last tensor's padding included).
pub fn assign_offsets(tensors: &mut [GgufTensor]) -> u64 {
    let mut offset = 0;
    for t in tensors {
        t.offset = offset;
        offset += padded(t.bytes());
    }
    offset
}

/// Everything before the data: header, metadata, tensor infos, padding to the alignment.
pub fn header_bytes(metadata: &[(String, Value)], tensors: &[GgufTensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_string(&mut out, key);
        out.extend_from_slice(&value.type_id().to_le_bytes());
        value.write(&mut out);
    }
    for t in tensors {
        write_string(&mut out, &t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.kind as u32).to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out.resize(padded(out.len() as u64) as usize, 0);
    out
}

/// A GGUF file's structure.
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// Version.
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensors in file order (shape in PyTorch order).
    pub tensors: Vec<GgufTensor>,
    /// Where the data section starts.
    pub data_start: u64,
}

impl GgufFile {
    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    Version(u32),
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Strings and arrays longer than this are refused (ggml's own cap).
const MAX_LENGTH: u64 = 1 << 30;

struct Reader<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b)?;
        self.read += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn length(&mut self, what: &str) -> Result<u64, GgufError> {
        let n = self.u64()?;
        if n > MAX_LENGTH {
            return Err(GgufError::Malformed(format!(
                "{what} of {n} items is too long"
            )));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.length("string")?;
        let mut b = vec![0u8; n as usize];
        self.inner.read_exact(&mut b)?;
        self.read += n;
        String::from_utf8(b).map_err(|_| GgufError::Malformed("a string is not UTF-8".into()))
    }

    fn value(&mut self, type_id: u32, depth: u8) -> Result<Value, GgufError> {
        Ok(match type_id {
            0 => Value::U8(self.bytes::<1>()?[0]),
            1 => Value::I8(self.bytes::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 if depth == 0 => {
                let element = self.u32()?;
                let n = self.length("array")?;
                let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    items.push(self.value(element, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            other => {
                return Err(GgufError::Malformed(format!("unknown value type {other}")));
            }
        })
    }
}

/// Reads a GGUF file's header, metadata and tensor infos (not the data).
pub fn read(input: impl Read) -> Result<GgufFile, GgufError> {
    let mut r = Reader {
        inner: input,
        read: 0,
    };
    let magic = r.bytes::<4>()?;
    if magic != MAGIC {
        return Err(GgufError::Magic(magic));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensor_count = r.length("tensor list")?;
    let kv_count = r.length("metadata")?;
    let mut metadata = Vec::new();
    for _ in 0..kv_count {
        let key = r.string()?;
        let type_id = r.u32()?;
        metadata.push((key, r.value(type_id, 0)?));
    }
    let mut tensors = Vec::new();
    for _ in 0..tensor_count {
        let name = r.string()?;
        let dims = r.u32()?;
        if dims > 4 {
            return Err(GgufError::Malformed(format!(
                "tensor {name:?} has {dims} dimensions"
            )));
        }
        let mut shape = (0..dims).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
        shape.reverse();
        let id = r.u32()?;
        let kind = GgmlType::from_id(id).ok_or_else(|| {
            GgufError::Malformed(format!("tensor {name:?} has type {id}, unknown to squeeze"))
        })?;
        let offset = r.u64()?;
        // Sizes come from the file: every product is checked, so `bytes()` cannot overflow.
        let (block_len, block_bytes) = kind.block_shape();
        let elements = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        if elements
            .and_then(|n| (n / block_len).checked_mul(block_bytes))
            .is_none()
        {
            return Err(GgufError::Malformed(format!(
                "tensor {name:?} of shape {shape:?} is too large"
            )));
        }
        if shape.last().is_some_and(|row| row % block_len != 0) || shape.is_empty() && block_len > 1
        {
            return Err(GgufError::Malformed(format!(
                "tensor {name:?}: rows of {:?} values are not whole {} blocks of {block_len}",
                shape.last(),
                kind.name()
            )));
        }
        tensors.push(GgufTensor {
            name,
            shape,
            kind,
            offset,
        });
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        Some((_, Value::U32(a))) => u64::from(*a),
        _ => ALIGNMENT,
    };
    Ok(GgufFile {
        version,
        metadata,
        tensors,
        data_start: r.read.next_multiple_of(alignment.max(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_the_reader() {
        let metadata = vec![
            (
                "general.architecture".to_owned(),
                Value::String("llama".into()),
            ),
            ("llama.block_count".to_owned(), Value::U32(2)),
            (
                "tokenizer.ggml.tokens".to_owned(),
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
        ];
        let mut tensors = vec![
            GgufTensor {
                name: "a".into(),
                shape: vec![3, 64],
                kind: GgmlType::Q8_0,
                offset: 0,
            },
            GgufTensor {
                name: "b".into(),
                shape: vec![5],
                kind: GgmlType::F32,
                offset: 0,
            },
        ];
        let data = assign_offsets(&mut tensors);
        assert_eq!(tensors[1].offset, padded(3 * 2 * 34));
        assert_eq!(data, tensors[1].offset + 32);
        let header = header_bytes(&metadata, &tensors);
        assert_eq!(header.len() as u64 % ALIGNMENT, 0);
        let file = read(&header[..]).unwrap();
        assert_eq!(file.metadata, metadata);
        assert_eq!(file.tensors, tensors);
        assert_eq!(file.data_start, header.len() as u64);
    }
}
