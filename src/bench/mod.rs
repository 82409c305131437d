//! `squeeze bench`: measured performance, each figure printed next to a baseline measured in the
//! same run (this machine is shared and noisy, so absolute figures alone mean little).
//!
//! `kernels` and `pipeline` measure the compression kernels (in memory) and the whole pipeline
//! (with file I/O) against memory-copy bandwidth; `queue` measures the job queue and the worker
//! pool against plain database round trips; `products` measures the evaluation's matrix products on
//! GGUF weights against the dense one; `calibration` times GPTQ, SparseGPT and Wanda per layer
//! against round-to-nearest; `events` measures the team event stream's fan-out to many
//! subscribers against one.

pub mod calibration;
pub mod events;
pub mod kernels;
pub mod pipeline;
pub mod products;
pub mod queue;
