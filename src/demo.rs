//! The bundled demo: a small digits classifier (trained by `scripts/train_digits.py` on
//! scikit-learn's handwritten digits, BSD-3-Clause), its held-out evaluation set, and the
//! variants a first look compares. `install` puts them into a team (model, dataset, one
//! evaluated job per variant) for the dashboard's demo button; `squeeze demo` runs the same
//! variants locally and prints the table. Owns no table: it goes through the owners.

use std::convert::Infallible;

use axum::body::Bytes;
use serde::Serialize;
use sqlx::PgPool;

use crate::eval::EvalSpec;
use crate::jobs::queue::{self, Job, NewJob};
use crate::jobs::recipe::Recipe;
use crate::store::blobs::BlobStore;
use crate::store::datasets::{self, DatasetRow};
use crate::store::ingest::{self, FileKind};
use crate::store::models::{self, Model, Owner};

pub const MODEL: &[u8] = include_bytes!("../static/demo/digits-mlp/model.safetensors");
pub const CONFIG: &[u8] = include_bytes!("../static/demo/digits-mlp/config.json");
pub const TEST_SET: &[u8] = include_bytes!("../static/demo/digits-test.safetensors");
/// What training reported (held-out accuracy among it).
pub const TRAINING: &str = include_str!("../static/demo/training.json");

pub const MODEL_NAME: &str = "digits-mlp (demo)";
pub const DATASET_NAME: &str = "digits held-out 30 % (demo)";

/// The variants compared, weakest compression first. The pruned ones leave their zeros out
/// (the bitmask layout), so the comparison shows what sparsity saves on disk.
pub fn variants() -> Vec<(&'static str, Recipe)> {
    [
        ("int8", r#"{"quantize": {"scheme": "int", "bits": 8, "granularity": "channel"}}"#, "compressed-tensors"),
        ("int4 g32", r#"{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 32}}"#, "compressed-tensors"),
        ("q4_0", r#"{"quantize": {"scheme": "gguf", "type": "Q4_0"}}"#, "gguf"),
        ("cluster-16", r#"{"cluster": {"bits": 4}}"#, "compact-safetensors"),
        ("prune-50", r#"{"prune": {"method": "magnitude", "sparsity": 0.5}}"#, "compressed-tensors"),
        ("prune-90", r#"{"prune": {"method": "magnitude", "sparsity": 0.9}}"#, "compressed-tensors"),
    ]
    .into_iter()
    .map(|(name, stage, format)| {
        let layout = if name.starts_with("prune") {
            r#", "sparse_layout": "bitmask""#
        } else {
            ""
        };
        let json = format!(
            r#"{{"stages": [{stage}], "targets": ["re:.*\\.weight$"], "format": "{format}"{layout}}}"#
        );
        let recipe = serde_json::from_str(&json).expect("demo recipes parse");
        (name, recipe)
    })
    .collect()
}

/// What `install` made.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Installed {
    pub model: Model,
    pub dataset: DatasetRow,
    pub jobs: Vec<Job>,
}

/// Uploads the demo model and set into the team and submits one evaluated job per variant.
pub async fn install(
    db: &PgPool,
    blobs: &BlobStore,
    owner: Owner,
    idle: std::time::Duration,
) -> anyhow::Result<Installed> {
    let mut files = Vec::new();
    for (name, kind, bytes) in [
        ("model.safetensors", FileKind::Safetensors, MODEL),
        ("config.json", FileKind::Config, CONFIG),
    ] {
        let stream = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from_static(bytes))]);
        let mut budget = bytes.len() as u64;
        files.push(
            ingest::ingest(
                blobs,
                name.into(),
                kind,
                stream,
                &mut budget,
                bytes.len() as u64,
                idle,
            )
            .await
            .map_err(|e| anyhow::anyhow!("the bundled demo model: {e}"))?,
        );
    }
    let plan = models::plan(files).map_err(|e| anyhow::anyhow!("the bundled demo model: {e}"))?;
    let model = models::create(db, blobs, owner, MODEL_NAME, plan).await?;
    let (_, stats) = crate::eval::dataset::parse(TEST_SET)?;
    let sealed = {
        let blobs = blobs.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut temp = blobs.create_temp()?;
            temp.write(TEST_SET)?;
            temp.seal()
        })
        .await??
    };
    let dataset = datasets::create(db, blobs, owner, DATASET_NAME, sealed, &stats).await?;
    let mut jobs = Vec::new();
    for (name, recipe) in variants() {
        let eval = EvalSpec {
            dataset_id: dataset.id,
            metric: None,
            max_drop: Some(0.01),
            architecture: None,
        };
        let (job, _) = queue::submit(
            db,
            NewJob {
                team_id: owner.team_id,
                created_by: owner.token_id,
                model_id: model.id,
                model_sha256: model.sha256.clone(),
                name: Some(format!("demo {name}")),
                recipe,
                eval: Some(eval),
                max_attempts: 1,
                idempotency: None,
            },
        )
        .await?;
        jobs.push(job);
    }
    Ok(Installed {
        model,
        dataset,
        jobs,
    })
}
