//! File formats squeeze reads and writes, each format's reader and writer in one home:
//! `safetensors` (validation of uploads as hostile input, dense output), `compressed_tensors`
//! (vLLM and transformers), `compact` (squeeze's codebooks and low-rank factors), `gguf`
//! (llama.cpp). `writer` and `decode` hold what every writer and every reader shares; `reader`
//! opens any artifact file and decodes its weights through the format's decoder. Pure parsing
//! and serialisation over bytes and local files: no HTTP, no database, no async; below it are
//! only `compress` (the stored forms) and `numeric`.

pub mod bits;
pub mod compact;
pub mod compressed_tensors;
pub mod decode;
pub mod gguf;
pub mod hf;
pub mod meta;
pub mod reader;
pub mod safetensors;
pub mod writer;

pub use meta::TensorMeta;
