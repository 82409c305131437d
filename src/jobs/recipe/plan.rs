//! A recipe on one model: which tensors it selects (`targets`/`ignore`, with bounded regular
//! expressions), the checks every rule makes against the actual tensors, the output format
//! resolved, group sizes fitted to rows that are not multiples, and each tensor's kernel steps
//! with the reason they differ from what the recipe names.

use super::*;

/// The smallest group a recipe falls back to: below it the scales cost more than the codes save.
const SMALLEST_FALLBACK_GROUP: usize = 16;

/// The largest group size, at most `wanted` and at least [`SMALLEST_FALLBACK_GROUP`] (or
/// `wanted` itself), that divides every row length.
fn fitting_group(wanted: usize, rows: impl Iterator<Item = u64>) -> Option<usize> {
    let common = rows.fold(0u64, gcd);
    if common == 0 || common.is_multiple_of(wanted as u64) {
        return Some(wanted);
    }
    (SMALLEST_FALLBACK_GROUP.min(wanted)..=wanted)
        .rev()
        .find(|g| common.is_multiple_of(*g as u64))
}

fn gcd(a: u64, b: u64) -> u64 {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    x
}

/// A recipe as it runs on one model: see [`Recipe::plan`].
#[derive(Debug, Clone)]
pub struct Plan {
    /// The recipe as it runs (format resolved, group size fitted).
    pub recipe: Recipe,
    /// The selected tensors, in model order.
    pub tensors: Vec<PlannedTensor>,
    /// Position in `tensors` by name: the pipeline and the writers look each tensor up.
    by_name: std::collections::HashMap<String, usize>,
}

/// What happens to one selected tensor.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// Its name.
    pub name: String,
    /// The kernel steps run on it, in order.
    pub steps: Vec<Step>,
    /// Why its steps differ from what the recipe names (a fallback, a rule of the format).
    pub note: Option<String>,
    /// What is done to it, for its report ("int4 sym group 96", "gguf Q8_0").
    pub scheme: String,
}

impl Plan {
    /// The recipe's stages, described.
    pub fn scheme(&self) -> String {
        self.recipe
            .stages
            .iter()
            .map(Stage::describe)
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// The plan of one tensor, if it is selected.
    pub fn tensor(&self, name: &str) -> Option<&PlannedTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
}

/// A compiled `targets`/`ignore` pattern.
#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Regex(Regex),
}

/// Most `targets` plus `ignore` entries in a recipe.
pub const MAX_PATTERNS: usize = 1024;
/// Most of them that are `re:` patterns.
pub const MAX_REGEX_PATTERNS: usize = 32;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Largest compiled program of one `re:` pattern, and the most its lazy DFA may cache, in
/// bytes: a recipe's patterns together stay under 16 MiB whatever they say.
pub const MAX_REGEX_BYTES: usize = 256 << 10;

impl Pattern {
    fn compile(text: &str) -> Result<Pattern, RecipeError> {
        let bad = |reason: String| RecipeError::BadPattern {
            pattern: text.chars().take(80).collect(),
            reason,
        };
        if text.len() > MAX_PATTERN_BYTES {
            return Err(bad(format!(
                "{} bytes; a pattern has at most {MAX_PATTERN_BYTES}",
                text.len()
            )));
        }
        if text.contains('\0') {
            return Err(bad("it holds a NUL character".into()));
        }
        match text.strip_prefix("re:") {
            Some(re) => RegexBuilder::new(&format!("^(?:{re})"))
                .size_limit(MAX_REGEX_BYTES)
                .dfa_size_limit(MAX_REGEX_BYTES)
                .build()
                .map(Pattern::Regex)
                .map_err(|e| match e {
                    regex::Error::CompiledTooBig(_) => bad(format!(
                        "it compiles to more than {} KiB; use exact names or a simpler expression",
                        MAX_REGEX_BYTES >> 10
                    )),
                    e => bad(e.to_string()),
                }),
            None => Ok(Pattern::Exact(text.to_owned())),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == name,
            Pattern::Regex(re) => re.is_match(name),
        }
    }

    fn is_exact(&self) -> bool {
        matches!(self, Pattern::Exact(_))
    }
}

/// Which tensors a recipe compresses.
#[derive(Debug, Clone)]
pub struct Selection {
    targets: Vec<Pattern>,
    ignore: Vec<Pattern>,
}

impl Selection {
    /// Whether the tensor is compressed: a target matches it, no ignore does, it is a float with
    /// at least one element, and it has two or more dimensions unless a target names it exactly.
    /// A tensor with a zero dimension has nothing to compress: every format stores it unchanged.
    pub fn selects(&self, name: &str, dtype: Dtype, shape: &[u64]) -> bool {
        if self.ignore.iter().any(|p| p.matches(name))
            || !crate::numeric::is_float(dtype)
            || shape.contains(&0)
        {
            return false;
        }
        self.targets
            .iter()
            .any(|p| p.matches(name) && (shape.len() >= 2 || p.is_exact()))
    }
}

impl Recipe {
    /// Compiles the tensor selection. In compressed-tensors, default targets leave embeddings
    /// and `lm_head` dense, as llm-compressor does: vLLM loads neither quantized.
    pub fn selection(&self) -> Result<Selection, RecipeError> {
        let given = self.targets.iter().chain(&self.ignore);
        let regexes = given.clone().filter(|p| p.starts_with("re:")).count();
        let count = given.count();
        if count > MAX_PATTERNS || regexes > MAX_REGEX_PATTERNS {
            return Err(RecipeError::TooManyPatterns { count, regexes });
        }
        let mut ignore = self.ignore.clone();
        if self.format == OutputFormat::CompressedTensors && self.targets == default_targets() {
            ignore.extend(
                COMPRESSED_TENSORS_DEFAULT_IGNORE
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
        Ok(Selection {
            targets: self
                .targets
                .iter()
                .map(|t| Pattern::compile(t))
                .collect::<Result<_, _>>()?,
            ignore: ignore
                .iter()
                .map(|t| Pattern::compile(t))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The tensors' shapes after a first `mlp_channels` stage: its projections lose the pruned
    /// share of their intermediate channels (the rows of gate and up, the columns of down).
    fn shapes_after_mlp_shrinking(&self, tensors: &[TensorMeta]) -> Vec<TensorMeta> {
        let mut shapes = tensors.to_vec();
        let Some(Stage::Prune(Prune::MlpChannels { sparsity, .. })) = self.stages.first() else {
            return shapes;
        };
        let Ok(layers) = hf::gated_mlps(tensors.iter().map(|t| (t.name.as_str(), &t.shape[..])))
        else {
            return shapes;
        };
        for layer in layers {
            let kept = layer.intermediate
                - crate::compress::prune::prune_count(layer.intermediate, *sparsity);
            for t in shapes.iter_mut() {
                if t.name == layer.gate || t.name == layer.up {
                    t.shape[0] = kept;
                } else if t.name == layer.down {
                    t.shape[1] = kept;
                }
            }
        }
        shapes
    }

    /// Checks every rule against the model's tensors; returns the names that will be compressed.
    pub fn validate(&self, tensors: &[TensorMeta]) -> Result<Vec<String>, RecipeError> {
        Ok(self
            .plan(tensors)?
            .tensors
            .into_iter()
            .map(|t| t.name)
            .collect())
    }

    /// The format an `auto` recipe writes: the one that stores what its last stage makes, when
    /// only pruning comes before it; otherwise dense safetensors (a clustered codebook then
    /// quantized, say, is stored by no compact format).
    fn natural_format(&self) -> OutputFormat {
        let Some((last, before)) = self.stages.split_last() else {
            return OutputFormat::Safetensors;
        };
        if !before.iter().all(|s| matches!(s, Stage::Prune(_))) {
            return OutputFormat::Safetensors;
        }
        match last {
            Stage::Quantize(Quantize::Int { .. } | Quantize::Fp8 { .. })
            | Stage::Prune(
                Prune::Magnitude { .. }
                | Prune::SemiStructured { .. }
                | Prune::Wanda(_)
                | Prune::SparseGpt(_),
            ) => OutputFormat::CompressedTensors,
            Stage::Quantize(Quantize::Gguf { .. }) => OutputFormat::Gguf,
            Stage::Cluster(_) | Stage::LowRank(_) => OutputFormat::CompactSafetensors,
            _ => OutputFormat::Safetensors,
        }
    }

    /// Checks every rule against the model's tensors and decides what happens to each: the
    /// recipe as it will run (an `auto` format resolved, a group size that no row allows
    /// replaced by the largest that every row allows) and each selected tensor's steps, with
    /// the reason wherever a tensor gets other steps than the recipe names.
    pub fn plan(&self, tensors: &[TensorMeta]) -> Result<Plan, RecipeError> {
        let mut recipe = self.clone();
        let mut notes = Vec::new();
        // An auto format is the natural one, with its rules: a recipe it cannot hold is
        // refused with the reason, never written dense behind the user's back.
        if recipe.format == OutputFormat::Auto {
            recipe.format = self.natural_format();
        }
        let selected = recipe.check(tensors, &mut notes)?;
        let gguf = recipe.stages.iter().find_map(|s| match s {
            Stage::Quantize(Quantize::Gguf { kind, pure }) => Some((*kind, *pure)),
            _ => None,
        });
        let choices = gguf.map(|(kind, pure)| {
            let shapes: Vec<TensorShape> = selected
                .iter()
                .map(|t| TensorShape {
                    name: &t.name,
                    row: t.shape.last().copied().unwrap_or(1),
                })
                .collect();
            let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
            crate::formats::gguf::rules::choose(kind, pure, &shapes, &names)
        });
        let planned: Vec<PlannedTensor> = selected
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut steps = recipe.steps_for(t.dtype);
                let mut note = notes
                    .iter()
                    .find(|(name, _)| *name == t.name)
                    .map(|(_, n)| n.clone());
                if let Some(choice) = choices.as_ref().map(|c| &c[i]) {
                    steps.retain_mut(|step| match step {
                        Step::Gguf(kind) => match choice.kind {
                            Some(chosen) => {
                                *kind = chosen;
                                true
                            }
                            None => false,
                        },
                        _ => true,
                    });
                    note = note.or_else(|| choice.reason.clone());
                }
                let chosen = steps.iter().find_map(|s| match s {
                    Step::Gguf(kind) => Some(kind.name()),
                    _ => None,
                });
                let scheme = recipe
                    .stages
                    .iter()
                    .map(|stage| match stage {
                        Stage::Quantize(Quantize::Gguf { .. }) => match chosen {
                            Some(kind) => format!("gguf {kind}"),
                            None => "unquantized".to_owned(),
                        },
                        other => other.describe(),
                    })
                    .collect::<Vec<_>>()
                    .join(" + ");
                PlannedTensor {
                    name: t.name.clone(),
                    steps,
                    note,
                    scheme,
                }
            })
            .collect();
        let by_name = planned
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Plan {
            recipe,
            tensors: planned,
            by_name,
        })
    }

    /// Checks every rule against the model's tensors; returns the tensors that will be
    /// compressed (with their shapes after a structural stage). A group size that does not
    /// divide some selected row is replaced by the largest that divides every one, with a note
    /// for each tensor whose rows made it so.
    fn check(
        &mut self,
        tensors: &[TensorMeta],
        notes: &mut Vec<(String, String)>,
    ) -> Result<Vec<TensorMeta>, RecipeError> {
        if self.stages.is_empty() {
            return Err(RecipeError::NoStages);
        }
        for (i, stage) in self.stages.iter().enumerate() {
            let stage_no = i + 1;
            match stage {
                Stage::Prune(
                    Prune::Magnitude { sparsity, .. }
                    | Prune::Channels { sparsity, .. }
                    | Prune::MlpChannels { sparsity, .. },
                ) => {
                    if !(0.0..1.0).contains(sparsity) {
                        return Err(RecipeError::Sparsity {
                            stage: stage_no,
                            sparsity: *sparsity,
                        });
                    }
                    if i > 0 && (stage.is_global_prune() || stage.step().is_none()) {
                        return Err(RecipeError::NotFirst { stage: stage_no });
                    }
                    if stage.step().is_none() {
                        hf::gated_mlps(tensors.iter().map(|t| (t.name.as_str(), &t.shape[..])))
                            .map_err(|e| RecipeError::Mlp(e.to_string()))?;
                    }
                }
                // Checked by parsing; the row rule needs the tensors: below.
                Stage::Prune(Prune::SemiStructured { .. }) => {}
                Stage::Prune(Prune::Wanda(amount) | Prune::SparseGpt(amount)) => {
                    let method = stage.calibrated_method().unwrap_or("calibration");
                    match amount.pattern() {
                        None => {
                            return Err(RecipeError::CalibratedAmount {
                                stage: stage_no,
                                method,
                            });
                        }
                        Some(crate::calibrate::Pattern::Unstructured(sparsity))
                            if !(0.0..1.0).contains(&sparsity) =>
                        {
                            return Err(RecipeError::Sparsity {
                                stage: stage_no,
                                sparsity,
                            });
                        }
                        Some(_) => {}
                    }
                    if i > 0 {
                        return Err(RecipeError::CalibratedNotFirst {
                            stage: stage_no,
                            method,
                        });
                    }
                }
                Stage::Quantize(Quantize::Int {
                    bits,
                    granularity,
                    group_size,
                    method,
                    ..
                }) => {
                    if *method == IntMethod::Gptq && (i > 0 || self.stages.len() > 1) {
                        return Err(RecipeError::CalibratedNotFirst {
                            stage: if i > 0 { stage_no } else { 2 },
                            method: "gptq",
                        });
                    }
                    if !(2..=8).contains(bits) {
                        return Err(RecipeError::Bits {
                            stage: stage_no,
                            bits: *bits,
                        });
                    }
                    match (granularity, group_size) {
                        (GranularityName::Group, None | Some(0)) => {
                            return Err(RecipeError::GroupSizeMissing { stage: stage_no });
                        }
                        (GranularityName::Tensor | GranularityName::Channel, Some(_)) => {
                            return Err(RecipeError::GroupSizeUnused { stage: stage_no });
                        }
                        _ => {}
                    }
                }
                Stage::Quantize(Quantize::Fp8 { granularity, .. }) => {
                    if *granularity == GranularityName::Group {
                        return Err(RecipeError::Granularity {
                            stage: stage_no,
                            method: "fp8",
                        });
                    }
                }
                // The row-length rule needs the tensors: checked below.
                Stage::Quantize(Quantize::Gguf { .. } | Quantize::Nf4 {}) => {}
                Stage::LowRank(l) => match (l.rank, l.energy) {
                    (Some(r), None) if r >= 1 => {}
                    (None, Some(e)) if e > 0.0 && e <= 1.0 => {}
                    _ => return Err(RecipeError::LowRankChoice { stage: stage_no }),
                },
                Stage::Cluster(c) => {
                    if !(1..=8).contains(&c.bits) {
                        return Err(RecipeError::ClusterBits {
                            stage: stage_no,
                            bits: c.bits,
                        });
                    }
                    if c.granularity == GranularityName::Group {
                        return Err(RecipeError::Granularity {
                            stage: stage_no,
                            method: "clustering",
                        });
                    }
                }
            }
        }
        let selection = self.selection()?;
        for (text, pattern) in self.targets.iter().zip(&selection.targets) {
            let hit = tensors.iter().find(|t| pattern.matches(&t.name));
            match hit {
                None => {
                    return Err(RecipeError::TargetMatchesNothing {
                        pattern: text.clone(),
                    });
                }
                Some(t) if pattern.is_exact() && !crate::numeric::is_float(t.dtype) => {
                    return Err(RecipeError::NotFloat {
                        tensor: t.name.clone(),
                        dtype: t.dtype,
                    });
                }
                _ => {}
            }
        }
        // The later stages see the MLP projections as a first shrinking stage leaves them.
        let shrunk = self.shapes_after_mlp_shrinking(tensors);
        let selected: Vec<&TensorMeta> = shrunk
            .iter()
            .filter(|t| selection.selects(&t.name, t.dtype, &t.shape))
            .collect();
        if selected.is_empty() {
            return Err(RecipeError::NothingSelected);
        }
        for i in 0..self.stages.len() {
            if let Stage::Quantize(Quantize::Int {
                granularity: GranularityName::Group,
                group_size: Some(n),
                ..
            }) = &mut self.stages[i]
            {
                let wanted = *n;
                let fitting = fitting_group(wanted, selected.iter().map(|t| t.row_len()));
                match fitting {
                    Some(g) if g == wanted => {}
                    Some(g) => {
                        *n = g;
                        for t in selected.iter().filter(|t| t.row_len() % wanted as u64 != 0) {
                            notes.push((
                                t.name.clone(),
                                format!(
                                    "rows of {} values are not a multiple of {wanted}: groups of {g} for every tensor",
                                    t.row_len()
                                ),
                            ));
                        }
                    }
                    None => {
                        // Name the tensor without which a group would fit, else the first
                        // whose rows the group does not divide.
                        let rows: Vec<u64> = selected.iter().map(|t| t.row_len()).collect();
                        let mut before = vec![0u64; rows.len() + 1];
                        let mut after = vec![0u64; rows.len() + 1];
                        for i in 0..rows.len() {
                            before[i + 1] = gcd(before[i], rows[i]);
                            let j = rows.len() - 1 - i;
                            after[j] = gcd(after[j + 1], rows[j]);
                        }
                        let t = (0..rows.len())
                            .find(|&i| {
                                let others = gcd(before[i], after[i + 1]);
                                fitting_group(wanted, std::iter::once(others)).is_some()
                            })
                            .map(|i| selected[i])
                            .or_else(|| {
                                selected
                                    .iter()
                                    .copied()
                                    .find(|t| t.row_len() % wanted as u64 != 0)
                            })
                            .expect("some row refuses the group size");
                        return Err(RecipeError::GroupSize {
                            stage: i + 1,
                            group_size: wanted,
                            row: t.row_len(),
                            tensor: t.name.clone(),
                        });
                    }
                }
            }
            let stage = &self.stages[i];
            if let Stage::LowRank(LowRankStage {
                rank: Some(rank), ..
            }) = stage
            {
                for t in &selected {
                    let rows = t.shape.first().copied().unwrap_or(1).max(1);
                    let cols = t.shape.iter().product::<u64>() / rows;
                    let max = max_useful_rank(rows as usize, cols as usize);
                    if *rank > max {
                        return Err(RecipeError::RankGrows {
                            stage: i + 1,
                            rank: *rank,
                            rows,
                            cols,
                            max,
                            tensor: t.name.clone(),
                        });
                    }
                }
            }
            let row_block = match stage {
                Stage::Prune(prune) if let Some(pattern) = prune.nm_pattern() => Some((
                    format!("{}:{} pruning", pattern.n, pattern.m),
                    usize::from(pattern.m),
                )),
                _ => None,
            };
            if let Some((kind, block)) = row_block
                && let Some(t) = selected.iter().find(|t| t.row_len() % block as u64 != 0)
            {
                return Err(RecipeError::BlockSize {
                    stage: i + 1,
                    kind,
                    block: block as u64,
                    row: t.row_len(),
                    tensor: t.name.clone(),
                });
            }
        }
        self.check_format(tensors, &selected)?;
        Ok(selected.into_iter().cloned().collect())
    }

    /// The steps run on a tensor stored as `dtype`: the stages' steps, with scales kept in the
    /// weight's own dtype where the format stores them so (compressed-tensors).
    pub fn steps_for(&self, dtype: Dtype) -> Vec<Step> {
        let weight_scale = weight_scale_dtype(dtype);
        let in_weight_dtype = self.format == OutputFormat::CompressedTensors;
        self.stages
            .iter()
            .filter_map(Stage::step)
            .map(|step| match step {
                Step::Int(mut scheme) if in_weight_dtype => {
                    scheme.scale_dtype = weight_scale;
                    Step::Int(scheme)
                }
                Step::Fp8 { per_channel, .. } if in_weight_dtype => Step::Fp8 {
                    per_channel,
                    scale_dtype: weight_scale,
                },
                other => other,
            })
            .collect()
    }

    /// The output format's rules: which stages it can store, last, and on which tensors.
    fn check_format(
        &self,
        tensors: &[TensorMeta],
        selected: &[&TensorMeta],
    ) -> Result<(), RecipeError> {
        let format = self.format.name();
        let stage_error = |stage: usize, what: String, hint: &'static str| {
            Err(RecipeError::FormatStage {
                stage: stage + 1,
                format,
                what,
                hint,
            })
        };
        let tensor_error = |t: &TensorMeta, reason: String| {
            Err(RecipeError::FormatTensor {
                format,
                tensor: t.name.clone(),
                reason,
            })
        };
        let last = self.stages.len() - 1;
        for (i, stage) in self.stages.iter().enumerate() {
            let what = stage.describe();
            match (self.format, stage) {
                (OutputFormat::Safetensors | OutputFormat::Auto, _)
                | (OutputFormat::CompressedTensors, Stage::Prune(_)) => {}
                (OutputFormat::CompressedTensors, Stage::Cluster(_) | Stage::LowRank(_)) => {
                    return stage_error(
                        i,
                        what,
                        "use format compact-safetensors (or safetensors for dense values)",
                    );
                }
                (
                    OutputFormat::CompressedTensors,
                    Stage::Quantize(Quantize::Gguf { .. } | Quantize::Nf4 {}),
                ) => {
                    return stage_error(
                        i,
                        what,
                        "GGUF block types go to format gguf, NF4 to format safetensors",
                    );
                }
                (OutputFormat::CompressedTensors, Stage::Quantize(q)) => {
                    if i != last {
                        return stage_error(
                            i,
                            format!("{what} followed by other stages"),
                            "its codes are what is stored, so quantize must be the last stage",
                        );
                    }
                    if let Quantize::Int {
                        scale_dtype: Some(wanted),
                        ..
                    }
                    | Quantize::Fp8 {
                        scale_dtype: Some(wanted),
                        ..
                    } = q
                        && let Some(t) = selected
                            .iter()
                            .find(|t| weight_scale_dtype(t.dtype) != *wanted)
                    {
                        return tensor_error(
                            t,
                            format!(
                                "is {}; compressed-tensors stores scales in the weight's dtype, so scale_dtype must be left out or match it",
                                t.dtype
                            ),
                        );
                    }
                }
                (OutputFormat::Gguf, Stage::Quantize(Quantize::Gguf { .. })) if i == last => {}
                (OutputFormat::Gguf, Stage::Prune(_)) => {}
                (OutputFormat::Gguf, _) => {
                    return stage_error(
                        i,
                        what,
                        "GGUF stores its own block types: end the recipe with a quantize stage of scheme gguf",
                    );
                }
                (OutputFormat::CompactSafetensors, Stage::Cluster(_) | Stage::LowRank(_))
                    if i == last => {}
                (OutputFormat::CompactSafetensors, Stage::Prune(_)) if i != last => {}
                (OutputFormat::CompactSafetensors, _) => {
                    return stage_error(
                        i,
                        what,
                        "compact-safetensors stores clustered and low-rank tensors: end the recipe with a cluster or low_rank stage",
                    );
                }
            }
        }
        match self.format {
            OutputFormat::CompressedTensors => {
                if let Some(t) = selected
                    .iter()
                    .find(|t| t.shape.len() != 2 || !t.name.ends_with(".weight"))
                {
                    return tensor_error(
                        t,
                        format!(
                            "has shape {:?}; compressed-tensors compresses the 2-D weights of linear layers (\"<module>.weight\"); leave the others out with ignore",
                            t.shape
                        ),
                    );
                }
            }
            OutputFormat::CompactSafetensors => {
                if let Some(t) = selected.iter().find(|t| t.shape.len() != 2) {
                    return tensor_error(
                        t,
                        format!(
                            "has shape {:?}; only 2-D tensors are stored factored",
                            t.shape
                        ),
                    );
                }
            }
            OutputFormat::Gguf => {
                if let Some(t) = tensors.iter().find(|t| {
                    t.shape.len() > 4 || crate::formats::gguf::dense_type(t.dtype).is_none()
                }) {
                    return tensor_error(
                        t,
                        format!(
                            "is {} with {} dimensions; GGUF holds F32, F16, BF16, F64 and signed integer tensors of at most 4 dimensions",
                            t.dtype,
                            t.shape.len()
                        ),
                    );
                }
            }
            OutputFormat::Safetensors | OutputFormat::Auto => {}
        }
        Ok(())
    }
}

/// The scale precision that matches a weight's dtype (F32 for anything but F16 and BF16).
fn weight_scale_dtype(dtype: Dtype) -> ScaleDtype {
    match dtype {
        Dtype::F16 => ScaleDtype::F16,
        Dtype::BF16 => ScaleDtype::Bf16,
        _ => ScaleDtype::F32,
    }
}
