//! The numeric kernels: pure functions over tensor views and f32 rows. No I/O, no async, no
//! database; the worker runs them on its rayon pool and hands them a cancel flag to check
//! between chunks. `tensor` drives one tensor through its steps; `simd` compiles the hot loops
//! for the CPU at hand.

pub mod cluster;
pub mod encoded;
pub mod fp8;
mod fused;
pub mod gguf;
pub mod kquants;
pub mod lowrank;
mod measure;
pub mod nf4;
#[cfg(test)]
mod properties;
pub mod prune;
pub mod quantize;
pub mod simd;
pub mod structure;
pub mod tensor;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared flag a kernel polls between chunks; set to stop work early.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks running work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether stopping was asked.
    pub fn is_canceled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Canceled)` once stopping was asked.
    pub fn check(&self) -> Result<(), Canceled> {
        if self.is_canceled() {
            Err(Canceled)
        } else {
            Ok(())
        }
    }
}

/// Work stopped because its cancel flag was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("canceled")]
pub struct Canceled;
