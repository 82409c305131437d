//! File formats squeeze reads and writes. Pure parsing and serialisation over bytes and local
//! files: no HTTP, no database. Today: safetensors headers (validation of uploads, `inspect`),
//! dtype conversion, and the Hugging Face model conventions (`config.json`, MLP tensor names).

pub mod compressed_tensors;
pub mod dtype;
pub mod gguf;
pub mod hf;
pub mod reader;
pub mod safetensors;
