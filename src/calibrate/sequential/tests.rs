use std::sync::Mutex;

use super::*;
use crate::calibrate::synthetic::noise;
use crate::eval::decoder::Decoder;

const HIDDEN: usize = 32;
const INTERMEDIATE: usize = 48;
const VOCAB: usize = 40;
const LAYERS: usize = 2;

fn config() -> DecoderConfig {
    serde_json::from_value(serde_json::json!({
        "model_type": "llama", "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0
    }))
    .unwrap()
}

/// A random tiny Llama: every tensor the forward reads, tied embeddings.
fn model() -> HashMap<String, Dense> {
    let mut tensors = HashMap::new();
    let mut seed = 10;
    let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        seed += 1;
        let values = noise(seed, shape.iter().product())
            .into_iter()
            .map(|v| v * scale + offset)
            .collect();
        tensors.insert(name, (shape, values));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, HIDDEN],
        1.0,
        0.0,
    );
    add("model.norm.weight".into(), vec![HIDDEN], 0.1, 1.0);
    let kv = HIDDEN / 2;
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        add(
            format!("{p}.input_layernorm.weight"),
            vec![HIDDEN],
            0.1,
            1.0,
        );
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![HIDDEN],
            0.1,
            1.0,
        );
        for (name, shape) in [
            ("self_attn.q_proj", vec![HIDDEN, HIDDEN]),
            ("self_attn.k_proj", vec![kv, HIDDEN]),
            ("self_attn.v_proj", vec![kv, HIDDEN]),
            ("self_attn.o_proj", vec![HIDDEN, HIDDEN]),
            ("mlp.gate_proj", vec![INTERMEDIATE, HIDDEN]),
            ("mlp.up_proj", vec![INTERMEDIATE, HIDDEN]),
            ("mlp.down_proj", vec![HIDDEN, INTERMEDIATE]),
        ] {
            add(format!("{p}.{name}.weight"), shape, 0.3, 0.0);
        }
    }
    tensors
}

struct MapSource(HashMap<String, Dense>);

impl TensorSource for MapSource {
    fn read(&self, name: &str) -> Result<Option<Dense>, CalibrationError> {
        Ok(self.0.get(name).cloned())
    }
}

fn sequences() -> Vec<Vec<u32>> {
    (0..5u32)
        .map(|s| {
            (0..7 + s * 3)
                .map(|i| (i * 7 + s * 11) % VOCAB as u32)
                .collect()
        })
        .collect()
}

/// Replaces the named projections with a fixed function of their weights, recording the
/// statistics it was given.
struct Recording {
    replace: fn(&str, &[f32]) -> Vec<f32>,
    targets: fn(&str) -> bool,
    seen: Mutex<Vec<(String, InputStats)>>,
}

fn recording(targets: fn(&str) -> bool, replace: fn(&str, &[f32]) -> Vec<f32>) -> Recording {
    Recording {
        replace,
        targets,
        seen: Mutex::new(Vec::new()),
    }
}

impl LayerMethod for Recording {
    fn targets(&self, name: &str) -> bool {
        (self.targets)(name)
    }
    fn needs_hessian(&self) -> bool {
        true
    }
    fn compress(
        &self,
        name: &str,
        weights: &[f32],
        _cols: usize,
        stats: &InputStats,
        _cancel: &Cancel,
    ) -> Result<Vec<f32>, CalibrationError> {
        self.seen
            .lock()
            .unwrap()
            .push((name.to_owned(), stats.clone()));
        Ok((self.replace)(name, weights))
    }
}

/// Logits of the decoder from hidden states before the final norm, head tied to the embedding.
fn logits_of(tensors: &HashMap<String, Dense>, hidden: &Tensor) -> Vec<f32> {
    let (_, norm) = &tensors["model.norm.weight"];
    let (_, embed) = &tensors["model.embed_tokens.weight"];
    let x = hidden.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut out = Vec::new();
    for row in x.chunks(HIDDEN) {
        let rms = (row.iter().map(|v| v * v).sum::<f32>() / HIDDEN as f32 + 1e-5).sqrt();
        let normed: Vec<f32> = row.iter().zip(norm).map(|(v, g)| v / rms * g).collect();
        for token in embed.chunks(HIDDEN) {
            out.push(normed.iter().zip(token).map(|(a, b)| a * b).sum());
        }
    }
    out
}

fn decoder_logits(tensors: &HashMap<String, Dense>, seq: &[u32]) -> Vec<f32> {
    let weights = Weights::from_values(
        tensors
            .iter()
            .map(|(n, (s, v))| (n.clone(), s.clone(), v.clone()))
            .collect(),
    )
    .unwrap();
    let decoder = Decoder::load(config(), &weights).unwrap();
    decoder
        .forward(seq, &mut Default::default())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < tolerance, "{what}: worst difference {worst}");
}

/// Layer by layer with every projection kept as it was, the pipeline's last outputs give the
/// logits the whole-model forward gives.
#[test]
fn unchanged_layers_reproduce_the_whole_forward() {
    let tensors = model();
    let method = recording(|_| true, |_, w| w.to_vec());
    let (reports, hidden) = run_layers(
        config(),
        &MapSource(tensors.clone()),
        &sequences(),
        &method,
        &Cancel::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(reports.len(), LAYERS);
    assert_eq!(reports[0].compressed.len(), 7);
    assert_eq!(method.seen.lock().unwrap().len(), 7 * LAYERS);
    for (seq, h) in sequences().iter().zip(&hidden) {
        assert_close(
            &logits_of(&tensors, h),
            &decoder_logits(&tensors, seq),
            1e-3,
            "logits",
        );
    }
}

/// The statistics of layer 0's attention input are those of the normalized embedding rows,
/// computed here in f64 from the definition.
#[test]
fn first_layer_statistics_match_a_direct_computation() {
    let tensors = model();
    let method = recording(
        |name| name == "model.layers.0.self_attn.q_proj.weight",
        |_, w| w.to_vec(),
    );
    run_decoder(
        config(),
        &MapSource(tensors.clone()),
        &sequences(),
        &method,
        &Cancel::new(),
        &mut |_| {},
    )
    .unwrap();
    let seen = method.seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "only the targeted projection is compressed");
    let stats = &seen[0].1;
    let (_, embed) = &tensors["model.embed_tokens.weight"];
    let (_, gain) = &tensors["model.layers.0.input_layernorm.weight"];
    let mut square = vec![0f64; HIDDEN];
    let mut abs = vec![0f64; HIDDEN];
    let mut outer = vec![0f64; HIDDEN * HIDDEN];
    let mut count = 0;
    for seq in sequences() {
        for &token in &seq {
            let row = &embed[token as usize * HIDDEN..][..HIDDEN];
            let mean_square =
                row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / HIDDEN as f64;
            let rms = (mean_square + 1e-5).sqrt();
            let x: Vec<f64> = row
                .iter()
                .zip(gain)
                .map(|(&v, &g)| f64::from(v) / rms * f64::from(g))
                .collect();
            for i in 0..HIDDEN {
                square[i] += x[i] * x[i];
                abs[i] += x[i].abs();
                for j in 0..HIDDEN {
                    outer[i * HIDDEN + j] += x[i] * x[j];
                }
            }
            count += 1;
        }
    }
    assert_eq!(stats.count, count);
    for i in 0..HIDDEN {
        assert!((stats.square_sums[i] - square[i]).abs() < 1e-3 * square[i].max(1.0));
        assert!((stats.abs_sums[i] - abs[i]).abs() < 1e-3 * abs[i].max(1.0));
    }
    let hessian = stats.hessian.as_ref().unwrap();
    let diagonal = hessian.diagonal();
    for i in 0..HIDDEN {
        // H = 2/N Σ x xᵀ.
        let want = 2.0 * outer[i * HIDDEN + i] / count as f64;
        assert!((diagonal[i] - want).abs() < 1e-3 * want.max(1.0), "{i}");
    }
}

/// Layer 1 is observed on what the *compressed* layer 0 produces: with layer 0's down
/// projection zeroed by the method, the pipeline's outputs are those of a model whose
/// layer 0 down projection is zero, not of the original.
#[test]
fn later_layers_see_the_compressed_earlier_ones() {
    let tensors = model();
    let method = recording(
        |name| name.contains("down_proj"),
        |name, w| {
            if name.starts_with("model.layers.0.mlp.down_proj") {
                vec![0.0; w.len()]
            } else {
                w.to_vec()
            }
        },
    );
    let (_, hidden) = run_layers(
        config(),
        &MapSource(tensors.clone()),
        &sequences(),
        &method,
        &Cancel::new(),
        &mut |_| {},
    )
    .unwrap();
    let mut zeroed = tensors.clone();
    let down = zeroed
        .get_mut("model.layers.0.mlp.down_proj.weight")
        .unwrap();
    down.1.iter_mut().for_each(|v| *v = 0.0);
    let seq = &sequences()[2];
    assert_close(
        &logits_of(&tensors, &hidden[2]),
        &decoder_logits(&zeroed, seq),
        1e-3,
        "against the model with layer 0's down projection zeroed",
    );
    let original = decoder_logits(&tensors, seq);
    let differs = logits_of(&tensors, &hidden[2])
        .iter()
        .zip(&original)
        .any(|(a, b)| (a - b).abs() > 1e-2);
    assert!(differs, "zeroing a projection changed nothing");
    // Both layers' down projections went through the method.
    assert_eq!(method.seen.lock().unwrap().len(), 2);
}

#[test]
fn missing_tensors_and_tokens_outside_the_vocabulary_are_refused() {
    let mut tensors = model();
    tensors.remove("model.layers.1.mlp.up_proj.weight");
    let method = recording(|_| false, |_, w| w.to_vec());
    let run = |source: &MapSource, seqs: &[Vec<u32>]| {
        run_decoder(config(), source, seqs, &method, &Cancel::new(), &mut |_| {})
            .unwrap_err()
            .to_string()
    };
    let err = run(&MapSource(tensors), &sequences());
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
    let err = run(&MapSource(model()), &[vec![1, VOCAB as u32]]);
    assert!(err.contains("outside the model's vocabulary"), "{err}");
    let err = run(&MapSource(model()), &[vec![]]);
    assert!(err.contains("no tokens"), "{err}");
}
