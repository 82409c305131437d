//! The three runs of an evaluation, one per kind of model: a decoder's next-token figures over
//! the set, an encoder's embeddings, a classifier's accuracy under noise; each then times both
//! models in alternating rounds, and reports its progress with the time left.

use rayon::prelude::*;

use super::*;

/// Turns steps done into [`EvalProgress`] with an estimate of the time left.
struct Tracker<'a> {
    report: &'a dyn Fn(&EvalProgress),
    started: Instant,
    accuracy_total: u64,
    accuracy_unit: &'static str,
    latency_total: u64,
    latency_started: Option<Instant>,
    /// Seconds per accuracy step, once the accuracy pass is over.
    accuracy_pace: Option<f64>,
    budget: latency::Budget,
}

impl<'a> Tracker<'a> {
    fn new(
        inputs: &Inputs<'a>,
        accuracy_total: u64,
        accuracy_unit: &'static str,
        latency_total: u64,
    ) -> Tracker<'a> {
        let tracker = Tracker {
            report: inputs.progress,
            started: Instant::now(),
            accuracy_total,
            accuracy_unit,
            latency_total,
            latency_started: None,
            accuracy_pace: None,
            budget: inputs.limits.budget,
        };
        tracker.accuracy(0);
        tracker
    }

    /// A latency measurement's expected seconds before any has run: its target time for both
    /// models, or its minimum rounds at the pace of the accuracy pass, whichever is longer.
    fn latency_guess(&self, pace: Option<f64>) -> f64 {
        let latency::Budget {
            warmup,
            min_repeats,
            target,
            ..
        } = self.budget;
        (2.0 * target.as_secs_f64()).max(pace.unwrap_or(0.0) * (warmup + min_repeats) as f64)
    }

    fn accuracy(&self, done: u64) {
        let pace = (done > 0).then(|| self.started.elapsed().as_secs_f64() / done as f64);
        let seconds_left = pace.map(|p| {
            p * self.accuracy_total.saturating_sub(done) as f64
                + self.latency_total as f64 * self.latency_guess(Some(p))
        });
        (self.report)(&EvalProgress {
            stage: "accuracy".into(),
            done,
            total: self.accuracy_total,
            unit: self.accuracy_unit.into(),
            seconds_left,
        });
    }

    fn latency(&mut self, done: u64) {
        if self.latency_started.is_none() {
            let steps = self.accuracy_total.max(1) as f64;
            self.accuracy_pace = Some(self.started.elapsed().as_secs_f64() / steps);
            self.latency_started = Some(Instant::now());
        }
        let left = self.latency_total.saturating_sub(done) as f64;
        let per = match (done, self.latency_started) {
            (0, _) | (_, None) => self.latency_guess(self.accuracy_pace),
            (n, Some(t)) => t.elapsed().as_secs_f64() / n as f64,
        };
        (self.report)(&EvalProgress {
            stage: "latency".into(),
            done,
            total: self.latency_total,
            unit: "measurements".into(),
            seconds_left: Some(per * left),
        });
    }
}

/// Both models' timings of the latency measurements, and the speed-ups.
#[derive(Default)]
pub(super) struct Latencies {
    pub(super) original: Vec<Measure>,
    pub(super) compressed: Vec<Measure>,
    pub(super) speedups: Vec<Speedup>,
    /// Seconds spent timing.
    pub(super) seconds: f64,
}

impl Latencies {
    /// Times the original and the compressed model's `name` in alternating rounds.
    fn measure(
        &mut self,
        inputs: &Inputs<'_>,
        (name, batch, tokens): (&str, u64, Option<u64>),
        original: impl FnMut() -> Result<(), EvalError>,
        compressed: impl FnMut() -> Result<(), EvalError>,
    ) -> Result<(), EvalError> {
        let started = Instant::now();
        let paired = latency::time_pair(inputs.limits.budget, original, compressed)?;
        self.seconds += started.elapsed().as_secs_f64();
        for (side, timing) in [
            (&mut self.original, paired.a),
            (&mut self.compressed, paired.b),
        ] {
            side.push(Measure {
                name: name.into(),
                batch,
                tokens,
                median_ms: timing.median_ms,
                p90_ms: timing.p90_ms,
                repeats: timing.repeats,
            });
        }
        let (median, p10, p90) = paired.ratio;
        self.speedups.push(Speedup {
            name: name.into(),
            batch,
            tokens,
            median,
            p10,
            p90,
            rounds: paired.rounds,
        });
        Ok(())
    }
}

/// Empty figures of a model.
fn figures(weights: &Weights) -> Figures {
    let (kernel, kernel_types) = match weights.kernel() {
        Kernel::Dense => ("dense".to_owned(), Vec::new()),
        Kernel::Native(types) => ("native".to_owned(), types.into_iter().collect()),
    };
    Figures {
        metrics: BTreeMap::new(),
        latency: Vec::new(),
        kernel,
        kernel_types,
        weights_bytes: weights.bytes(),
    }
}

fn token_sequences<'a>(inputs: &'a Inputs<'_>) -> Vec<&'a [u32]> {
    match inputs.dataset {
        Dataset::Tokens(seqs) => seqs
            .iter()
            .take(inputs.limits.max_sequences)
            .map(|s| &s.tokens[..s.tokens.len().min(inputs.limits.max_tokens)])
            .collect(),
        Dataset::Tensors { .. } => Vec::new(),
    }
}

/// `n` tokens taken in turn from the set (for latency prompts longer than any one sequence).
fn cycled_tokens(sequences: &[&[u32]], n: usize) -> Vec<u32> {
    sequences
        .iter()
        .flat_map(|s| s.iter().copied())
        .cycle()
        .take(n)
        .collect()
}

/// Both models' figures, the items evaluated, the timings, and whether the original's outputs
/// came from an earlier evaluation rather than a run of the original.
pub(super) type Run = (Figures, Figures, u64, Latencies, bool);

pub(super) fn decoder(inputs: &Inputs<'_>, cancel: &Cancel) -> Result<Run, EvalError> {
    let Architecture::Decoder { model_type, .. } = inputs.architecture else {
        unreachable!("called for decoders")
    };
    let mut config = inputs.config.clone();
    config["model_type"] = model_type.as_str().into();
    let parsed: decoder::DecoderConfig = serde_json::from_value(config)
        .map_err(|e| EvalError::Model(format!("config.json: {e}")))?;
    let (original, compressed) = rayon::join(
        || decoder::Decoder::load(parsed.clone(), inputs.original),
        || decoder::Decoder::load(parsed.clone(), inputs.compressed),
    );
    let (original, compressed) = (original?, compressed?);
    let sequences = token_sequences(inputs);
    let kept = inputs.reference.as_ref().map(|r| {
        (
            r,
            reference::key(r.weights_identity, inputs.config, &sequences),
        )
    });
    let cached = match &kept {
        Some((r, key)) => reference::Reference::load(r.path, key)?,
        None => None,
    };
    let reused = cached.is_some();
    let mut reference = cached.unwrap_or_default();
    let mut tracker = Tracker::new(inputs, sequences.len() as u64, "sequences", 2);
    let mut stats = metrics::NextToken::default();
    let vocab = parsed.vocab_size;
    // The logits are read where candle wrote them (a copy would be 100 MB per sequence for a
    // 49k vocabulary).
    let logits = |model: &decoder::Decoder, seq: &[u32], read: &mut dyn FnMut(&[f32])| {
        let rows = model.forward(seq, &mut Default::default())?;
        weights::with_values(&rows, read)
    };
    // Sequences run side by side, one per thread: candle's element-wise operations between the
    // matmuls use one thread, so one forward at a time leaves the other cores mostly idle. A
    // few per thread at a time, so that a thread done early finds more, with the progress
    // reported in between.
    let per_round = 4 * rayon::current_num_threads().max(1);
    for (c, chunk) in sequences.chunks(per_round).enumerate() {
        let first = c * per_round;
        let parts: Vec<Result<(Option<reference::Reference>, metrics::NextToken), EvalError>> =
            chunk
                .par_iter()
                .enumerate()
                .map(|(j, seq)| {
                    cancel.check()?;
                    let mut part = metrics::NextToken::default();
                    if reused {
                        logits(&compressed, seq, &mut |rows| {
                            part.add(&reference, first + j, seq, rows, vocab)
                        })?;
                        return Ok((None, part));
                    }
                    let mut own = reference::Reference::default();
                    logits(&original, seq, &mut |rows| {
                        own.add_sequence(seq, rows, vocab)
                    })?;
                    logits(&compressed, seq, &mut |rows| {
                        part.add(&own, 0, seq, rows, vocab)
                    })?;
                    Ok((Some(own), part))
                })
                .collect();
        for part in parts {
            let (own, scored) = part?;
            if let Some(own) = own {
                reference.append(own);
            }
            stats.merge(scored);
        }
        tracker.accuracy((first + chunk.len()) as u64);
    }
    if let (false, Some((r, key))) = (reused, &kept)
        && let Err(err) = reference.save(r.path, key)
    {
        tracing::warn!(path = %r.path.display(), error = %err, "could not keep the original's outputs");
    }
    let mut fo = figures(inputs.original);
    let mut fc = figures(inputs.compressed);
    fo.metrics
        .insert("perplexity".into(), stats.perplexity_original());
    fc.metrics
        .insert("perplexity".into(), stats.perplexity_compressed());
    for (f, kl_mean, kl_p99, agree) in [
        (&mut fo, 0.0, 0.0, 1.0),
        (
            &mut fc,
            stats.kl_mean(),
            stats.kl_p99(),
            stats.top1_agreement(),
        ),
    ] {
        f.metrics.insert("kl_mean".into(), kl_mean);
        f.metrics.insert("kl_p99".into(), kl_p99);
        f.metrics.insert("top1_agreement".into(), agree);
    }
    let context = cycled_tokens(&sequences, 16);
    let prompt_len = 128.min(parsed.max_position_embeddings.unwrap_or(128));
    let prompt = cycled_tokens(&sequences, prompt_len);
    let prefill = |model: &decoder::Decoder| -> Result<decoder::Cache, EvalError> {
        let mut prefilled = decoder::Cache::default();
        model.forward(&context, &mut prefilled)?;
        Ok(prefilled)
    };
    let decode = |model: &decoder::Decoder, prefilled: &decoder::Cache| {
        cancel.check()?;
        let mut cache = prefilled.clone();
        model.forward(&[context[0]], &mut cache).map(|_| ())
    };
    let whole = |model: &decoder::Decoder| {
        cancel.check()?;
        model.forward(&prompt, &mut Default::default()).map(|_| ())
    };
    let mut latencies = Latencies::default();
    let (prefilled_o, prefilled_c) = (prefill(&original)?, prefill(&compressed)?);
    tracker.latency(0);
    latencies.measure(
        inputs,
        ("decode_token", 1, Some(1)),
        || decode(&original, &prefilled_o),
        || decode(&compressed, &prefilled_c),
    )?;
    tracker.latency(1);
    latencies.measure(
        inputs,
        ("prompt", 1, Some(prompt.len() as u64)),
        || whole(&original),
        || whole(&compressed),
    )?;
    tracker.latency(2);
    Ok((fo, fc, sequences.len() as u64, latencies, reused))
}

/// Sizes of the larger batch in batch latency.
const LARGE_BATCH: usize = 16;

pub(super) fn encoder(inputs: &Inputs<'_>, cancel: &Cancel) -> Result<Run, EvalError> {
    let original = encoder::Encoder::load(inputs.config, inputs.original)?;
    let compressed = encoder::Encoder::load(inputs.config, inputs.compressed)?;
    let limited: Vec<&[u32]> = token_sequences(inputs)
        .into_iter()
        .map(|s| &s[..s.len().min(original.max_positions())])
        .collect();
    let labels: Vec<Option<u32>> = match inputs.dataset {
        Dataset::Tokens(s) => s.iter().take(limited.len()).map(|s| s.label).collect(),
        Dataset::Tensors { .. } => Vec::new(),
    };
    let mut tracker = Tracker::new(inputs, limited.len() as u64, "sequences", 2);
    let mut cosines = Vec::new();
    let (mut right_o, mut right_c, mut labelled) = (0u64, 0u64, 0u64);
    for (i, (seq, label)) in limited.iter().zip(&labels).enumerate() {
        cancel.check()?;
        if i > 0 {
            tracker.accuracy(i as u64);
        }
        let (eo, lo) = original.embed(&[seq])?;
        let (ec, lc) = compressed.embed(&[seq])?;
        cosines.push(metrics::cosine(&eo[0], &ec[0]));
        if let (Some(y), Some(lo), Some(lc)) = (label, lo, lc) {
            labelled += 1;
            right_o += (metrics::argmax(&lo[0]) == *y as usize) as u64;
            right_c += (metrics::argmax(&lc[0]) == *y as usize) as u64;
        }
    }
    let mut fo = figures(inputs.original);
    let mut fc = figures(inputs.compressed);
    fo.metrics.insert("cosine_mean".into(), 1.0);
    fo.metrics.insert("cosine_min".into(), 1.0);
    fc.metrics.insert(
        "cosine_mean".into(),
        cosines.iter().sum::<f64>() / cosines.len().max(1) as f64,
    );
    fc.metrics.insert(
        "cosine_min".into(),
        cosines.iter().cloned().fold(f64::INFINITY, f64::min),
    );
    if labelled > 0 {
        fo.metrics
            .insert("accuracy".into(), right_o as f64 / labelled as f64);
        fc.metrics
            .insert("accuracy".into(), right_c as f64 / labelled as f64);
    }
    let sample = limited[0];
    let forward = |model: &encoder::Encoder, rows: &[&[u32]]| {
        cancel.check()?;
        model.hidden(rows).map(|_| ())
    };
    let mut latencies = Latencies::default();
    for (i, batch) in [1, LARGE_BATCH].into_iter().enumerate() {
        tracker.latency(i as u64);
        let rows = vec![sample; batch];
        latencies.measure(
            inputs,
            ("batch", batch as u64, Some(sample.len() as u64)),
            || forward(&original, &rows),
            || forward(&compressed, &rows),
        )?;
    }
    tracker.latency(2);
    Ok((fo, fc, limited.len() as u64, latencies, false))
}

pub(super) fn mlp(
    inputs: &Inputs<'_>,
    config: &mlp::MlpConfig,
    cancel: &Cancel,
) -> Result<Run, EvalError> {
    let Dataset::Tensors {
        inputs: x,
        features,
        labels,
    } = inputs.dataset
    else {
        return Err(EvalError::Model(
            "a classifier is evaluated on a tensors set".into(),
        ));
    };
    let features = *features;
    let original = mlp::Mlp::load(config, inputs.original)?;
    let compressed = mlp::Mlp::load(config, inputs.compressed)?;
    let mut fo = figures(inputs.original);
    let mut fc = figures(inputs.compressed);
    let sigma = metrics::std_dev(x);
    let levels = std::iter::once(0.0).chain(NOISE_LEVELS);
    let mut tracker = Tracker::new(inputs, 1 + NOISE_LEVELS.len() as u64, "noise levels", 2);
    for (i, level) in levels.enumerate() {
        cancel.check()?;
        if i > 0 {
            tracker.accuracy(i as u64);
        }
        let noisy = if level == 0.0 {
            x.clone()
        } else {
            metrics::with_noise(x, level * sigma, i as u64)
        };
        let name = if level == 0.0 {
            "accuracy".to_owned()
        } else {
            format!("accuracy_noise_{level}")
        };
        if inputs.reuse.is_none() {
            let acc = metrics::accuracy(&original.logits(&noisy, features)?, labels);
            fo.metrics.insert(name.clone(), acc);
        }
        let acc = metrics::accuracy(&compressed.logits(&noisy, features)?, labels);
        fc.metrics.insert(name, acc);
    }
    let rows = labels.len();
    let forward = |model: &mlp::Mlp, slice: &[f32]| {
        cancel.check()?;
        model.logits(slice, features).map(|_| ())
    };
    let mut latencies = Latencies::default();
    for (i, batch) in [1, LARGE_BATCH.min(rows).max(1)].into_iter().enumerate() {
        tracker.latency(i as u64);
        let slice = &x[..batch * features];
        latencies.measure(
            inputs,
            ("batch", batch as u64, None),
            || forward(&original, slice),
            || forward(&compressed, slice),
        )?;
    }
    tracker.latency(2);
    Ok((fo, fc, rows as u64, latencies, false))
}
