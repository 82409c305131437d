//! squeeze: compression as a service for ML models.
//!
//! See ARCHITECTURE.md for the map. The library holds everything; `main.rs` only parses the
//! command line and dispatches to [`cli`].

pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod calibrate;
pub mod cli;
pub mod compress;
pub mod config;
pub mod connections;
pub mod demo;
pub mod error;
pub mod eval;
pub mod formats;
pub mod jobs;
pub mod numeric;
pub mod pipeline;
pub mod store;
pub mod worker;
