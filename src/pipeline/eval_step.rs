//! The evaluation step of a job: after the artifact is written, the original and the compressed
//! model run on the job's set (`eval`), the figures land in the job's summary with the step's
//! wall time and memory peak, and its progress is published as the job's. The worker fetches
//! what the step needs from the database first ([`Evaluation`]); this runs on the CPU pool.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::eval::{EvalError, EvalProgress, EvalReport, EvalSpec, Figures};
use crate::jobs::report::{CompressedSize, Progress};
use crate::numeric::Cancel;
use crate::pipeline::{InputFile, InputKind, Outcome, PipelineError, contain_panic, memory};

/// A job's evaluation, ready to run after its pipeline.
pub struct Evaluation {
    /// The spec, the set's file and the model's config.json; or why it cannot run.
    pub setup: Result<(EvalSpec, PathBuf, Option<serde_json::Value>), String>,
    /// The original's accuracy figures from an earlier job on this model, set and CPU.
    pub reuse: Option<Figures>,
    /// Where the original decoder's outputs on the set are kept, and the model's content hash
    /// that identifies its weights.
    pub reference: Option<(PathBuf, String)>,
}

impl Evaluation {
    /// An evaluation that cannot run, and why: the job keeps its artifact and says so.
    pub fn refused(reason: String) -> Evaluation {
        Evaluation {
            setup: Err(reason),
            reuse: None,
            reference: None,
        }
    }

    fn evaluate(
        self,
        inputs: &[InputFile],
        work_dir: &Path,
        cancel: &Cancel,
        progress: &dyn Fn(&EvalProgress),
    ) -> Result<EvalReport, EvalError> {
        let (spec, dataset_path, config) = self.setup.map_err(EvalError::Model)?;
        let bytes = std::fs::read(&dataset_path)?;
        let (dataset, _) = crate::eval::dataset::parse(&bytes)
            .map_err(|e| EvalError::Model(format!("the dataset no longer parses: {e}")))?;
        let weight_files: Vec<PathBuf> = inputs
            .iter()
            .filter(|f| f.kind == InputKind::Weights)
            .map(|f| f.path.clone())
            .collect();
        let original = crate::eval::files::Original {
            config: config.as_ref(),
            weight_files: &weight_files,
        };
        let reference =
            self.reference
                .as_ref()
                .map(|(path, identity)| crate::eval::ReferenceCache {
                    path,
                    weights_identity: identity,
                });
        let earlier = crate::eval::files::Earlier {
            figures: self.reuse,
            outputs: reference,
        };
        crate::eval::files::evaluate_artifact(
            &original, work_dir, &dataset, &spec, earlier, cancel, progress,
        )
    }
}

/// Runs the evaluation on the artifact in `work_dir` and records it in `outcome`'s summary:
/// the report, or why it could not run (the artifact stands either way). `compressed` is the
/// compression's last progress; each evaluation step is published on top of it. Only a
/// cancel or a defect (a contained panic) fails the job.
pub fn run(
    evaluation: Evaluation,
    outcome: &mut Outcome,
    inputs: &[InputFile],
    work_dir: &Path,
    cancel: &Cancel,
    compressed: Progress,
    publish: &dyn Fn(&Progress),
) -> Result<(), PipelineError> {
    let mut evaluating = compressed;
    evaluating.phase = Some("evaluating".into());
    let summary = &outcome.summary;
    evaluating.compressed = Some(CompressedSize {
        bytes_in: summary.bytes_in,
        bytes_out: summary.bytes_out,
        ratio: summary.ratio,
        bits_per_weight: summary.bits_per_weight,
    });
    publish(&evaluating);
    let started = Instant::now();
    let peak = memory::RssPeak::start();
    let advanced = |step: &EvalProgress| {
        let mut shown = evaluating.clone();
        shown.evaluation = Some(step.clone());
        publish(&shown);
    };
    let evaluated = contain_panic(
        || "evaluation".to_owned(),
        || Ok(evaluation.evaluate(inputs, work_dir, cancel, &advanced)),
    );
    let summary = &mut outcome.summary;
    summary.eval_seconds = Some(started.elapsed().as_secs_f64());
    summary.peak_rss_bytes = summary.peak_rss_bytes.max(peak.finish());
    match evaluated? {
        Ok(report) => summary.eval = Some(report),
        Err(EvalError::Canceled) => return Err(PipelineError::Canceled),
        Err(err) => summary.eval_error = Some(err.to_string()),
    }
    Ok(())
}
