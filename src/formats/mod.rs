//! File formats squeeze reads and writes. Pure parsing and serialisation over bytes and local
//! files: no HTTP, no database. Today: safetensors headers (validation of uploads, `inspect`).

pub mod dtype;
pub mod safetensors;
