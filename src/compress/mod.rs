//! The numeric kernels: pure functions over tensor views and f32 rows. No I/O, no async, no
//! database; the worker runs them on its rayon pool and hands them a cancel flag to check
//! between chunks. `tensor` drives one tensor through its steps; the hot loops are compiled for
//! the CPU at hand by `numeric::simd`. Imports only `numeric`.

pub mod blocks;
pub mod cluster;
pub mod encoded;
pub mod fp8;
mod fused;
pub mod kquants;
pub mod lowrank;
mod measure;
pub mod nf4;
#[cfg(test)]
mod properties;
pub mod prune;
pub mod quantize;
pub(crate) mod spare;
pub mod step;
pub mod structure;
pub mod tensor;
