//! The evaluation a job asks for, checked at submission (and at a set's upload when a model is
//! named) so that a job never fails for a mismatch it could have been told about: the model's
//! architecture is recognised from its `config.json` and tensor shapes, and the set's kept
//! figures are checked against it (kind, vocabulary, lengths, features, classes, metric).

use sqlx::PgPool;
use uuid::Uuid;

use crate::eval::dataset::{DatasetError, check_fits};
use crate::eval::{Architecture, DatasetStats, EvalSpec};
use crate::formats::TensorMeta;
use crate::store::blobs::BlobStore;
use crate::store::{datasets, models};

/// Why an evaluation cannot be run as asked.
#[derive(Debug, thiserror::Error)]
pub enum EvalCheckError {
    #[error("no dataset {0} in this team")]
    NoDataset(Uuid),
    #[error("no model {0} in this team")]
    NoModel(Uuid),
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("{0}")]
    Metric(String),
    #[error("max_drop must be a finite number of at least 0")]
    MaxDrop,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl EvalCheckError {
    pub fn code(&self) -> &'static str {
        match self {
            EvalCheckError::NoDataset(_) => "dataset_not_found",
            EvalCheckError::NoModel(_) => "not_found",
            EvalCheckError::Model(_) => "not_evaluable",
            EvalCheckError::Dataset(e) => e.code(),
            EvalCheckError::Metric(_) => "bad_metric",
            EvalCheckError::MaxDrop => "bad_max_drop",
            EvalCheckError::Internal(_) => "internal",
        }
    }
}

/// The model's `config.json`, when it has one.
pub async fn model_config(
    db: &PgPool,
    blobs: &BlobStore,
    model_id: Uuid,
) -> anyhow::Result<Option<serde_json::Value>> {
    let files = models::files_for_processing(db, model_id).await?;
    let Some(file) = files.into_iter().find(|f| f.kind == "config") else {
        return Ok(None);
    };
    let bytes = tokio::fs::read(blobs.path(&file.sha256)).await?;
    // Validated as JSON at upload.
    Ok(serde_json::from_slice(&bytes).ok())
}

/// The bytes of one of the team's models' `tokenizer.json`.
pub async fn tokenizer_json(
    db: &PgPool,
    blobs: &BlobStore,
    team_id: Uuid,
    model_id: Uuid,
) -> Result<Vec<u8>, EvalCheckError> {
    let owned = models::get(db, team_id, model_id)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or(EvalCheckError::NoModel(model_id))?;
    let file = owned
        .files
        .iter()
        .find(|f| f.name == "tokenizer.json")
        .ok_or_else(|| {
            EvalCheckError::Model("the model has no tokenizer.json to tokenize text with".into())
        })?;
    Ok(tokio::fs::read(blobs.path(&file.sha256))
        .await
        .map_err(anyhow::Error::from)?)
}

/// The model's architecture as evaluation sees it.
pub async fn architecture(
    db: &PgPool,
    blobs: &BlobStore,
    model_id: Uuid,
    tensors: &[TensorMeta],
    named: Option<&str>,
) -> Result<Architecture, EvalCheckError> {
    let config = model_config(db, blobs, model_id)
        .await?
        .unwrap_or(serde_json::Value::Null);
    let shape_of = |name: &str| {
        tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.shape.clone())
    };
    Architecture::detect(&config, named, &shape_of)
        .map_err(|e| EvalCheckError::Model(e.to_string()))
}

/// Checks a job's eval section against the model; returns it normalised for storage.
pub async fn check_spec(
    db: &PgPool,
    blobs: &BlobStore,
    team_id: Uuid,
    model_id: Uuid,
    tensors: &[TensorMeta],
    spec: &EvalSpec,
) -> Result<(), EvalCheckError> {
    if spec.max_drop.is_some_and(|d| !d.is_finite() || d < 0.0) {
        return Err(EvalCheckError::MaxDrop);
    }
    let dataset = datasets::get(db, team_id, spec.dataset_id)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or(EvalCheckError::NoDataset(spec.dataset_id))?;
    let arch = architecture(db, blobs, model_id, tensors, spec.architecture.as_deref()).await?;
    check_set(&dataset.stats.0, &arch)?;
    if let Some(metric) = &spec.metric {
        let allowed = arch.metrics(dataset.stats.labelled > 0);
        if !allowed.contains(&metric.as_str()) {
            return Err(EvalCheckError::Metric(format!(
                "metric {metric:?} does not apply to a {} model on this set; use one of {}",
                arch.name(),
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// Checks a set's figures against an architecture.
pub fn check_set(stats: &DatasetStats, arch: &Architecture) -> Result<(), EvalCheckError> {
    check_fits(stats, arch).map_err(EvalCheckError::from)
}

/// How many of the team's sets the evaluation options look at (the newest).
const SETS_CONSIDERED: i64 = 200;

/// One of the team's sets, and whether a job on the model can evaluate on it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SetFit {
    pub id: Uuid,
    pub name: String,
    /// Sequences or rows.
    pub rows: u64,
    pub labelled: u64,
    pub fits: bool,
    /// Why it does not fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What makes figures on it unreliable (too small).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A budget metric a job on the model may name.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MetricChoice {
    #[serde(flatten)]
    pub figure: crate::eval::FigureInfo,
    /// Only on a labelled set.
    pub needs_labels: bool,
}

/// What a job on one model can evaluate: the architecture, the budget metrics (the default
/// first), the sets that fit and whether raw text can be uploaded for it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct EvaluationOptions {
    /// `llama`, `bert`, `mlp`, … when recognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Why the model cannot be evaluated, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_evaluable: Option<String>,
    /// `tokens` or `tensors`: the kind of set it takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_kind: Option<String>,
    /// Whether the model has a tokenizer.json, so a raw-text set can be uploaded for it.
    pub takes_text: bool,
    pub metrics: Vec<MetricChoice>,
    /// The team's newest sets, those that fit first.
    pub datasets: Vec<SetFit>,
}

/// The evaluation options of one of the team's models; `None` when there is no such model.
pub async fn options(
    db: &PgPool,
    blobs: &BlobStore,
    team_id: Uuid,
    model_id: Uuid,
) -> Result<Option<EvaluationOptions>, EvalCheckError> {
    let Some((_, tensors)) = models::tensor_metas(db, team_id, model_id)
        .await
        .map_err(anyhow::Error::from)?
    else {
        return Ok(None);
    };
    let takes_text = models::get(db, team_id, model_id)
        .await
        .map_err(anyhow::Error::from)?
        .is_some_and(|m| m.files.iter().any(|f| f.name == "tokenizer.json"));
    let sets = datasets::list(db, team_id, SETS_CONSIDERED, None)
        .await
        .map_err(anyhow::Error::from)?;
    let arch = match architecture(db, blobs, model_id, &tensors, None).await {
        Ok(arch) => arch,
        Err(EvalCheckError::Model(reason)) => {
            return Ok(Some(EvaluationOptions {
                architecture: None,
                not_evaluable: Some(reason),
                dataset_kind: None,
                takes_text,
                metrics: Vec::new(),
                datasets: Vec::new(),
            }));
        }
        Err(other) => return Err(other),
    };
    let unlabelled = arch.metrics(false);
    let metrics = arch
        .metrics(true)
        .into_iter()
        .map(|name| MetricChoice {
            figure: crate::eval::figure_info(name),
            needs_labels: !unlabelled.contains(&name),
        })
        .collect();
    let mut datasets: Vec<SetFit> = sets
        .into_iter()
        .map(|set| {
            let stats = set.stats.0;
            let reason = check_set(&stats, &arch).err().map(|e| e.to_string());
            SetFit {
                id: set.id,
                name: set.name,
                rows: stats.rows,
                labelled: stats.labelled,
                fits: reason.is_none(),
                reason,
                warnings: stats.warnings,
            }
        })
        .collect();
    datasets.sort_by_key(|s| !s.fits);
    Ok(Some(EvaluationOptions {
        architecture: Some(arch.name().to_owned()),
        not_evaluable: None,
        dataset_kind: Some(arch.dataset_kind().to_owned()),
        takes_text,
        metrics,
        datasets,
    }))
}
