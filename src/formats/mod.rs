//! File formats squeeze reads and writes. Pure parsing and serialisation over bytes and local
//! files: no HTTP, no database: safetensors headers (validation of uploads), the Hugging Face
//! model conventions (`config.json`, MLP tensor names), the compressed-tensors and GGUF layouts
//! squeeze writes, and the reader of its own artifacts (`inspect`, `decompress`).

pub mod bits;
pub mod compressed_tensors;
pub mod gguf;
pub mod hf;
pub mod meta;
pub mod reader;
pub mod safetensors;

pub use meta::TensorMeta;
