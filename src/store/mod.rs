//! Persistence: the database (pool, migrations, the private PostgreSQL cluster), the
//! content-addressed blob files, streaming ingestion of uploads, and the model catalog.

pub mod blobs;
pub mod datasets;
pub mod db;
pub mod embedded;
pub mod ingest;
pub mod models;
