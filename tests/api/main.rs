//! API tests: a real server on port 0 over real HTTP, against a fresh PostgreSQL database each.

#[path = "../common/mod.rs"]
mod common;

mod artifacts;
mod auth;
mod errors;
mod evaluation;
mod helpers;
mod hostile;
mod isolation;
mod jobs;
mod malformed;
mod openapi;
mod uploads;
