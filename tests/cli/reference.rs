//! Parity with the reference implementation: the Python `safetensors` package (installed from
//! PyPI by scripts/test) and `squeeze inspect` must agree on which files are valid safetensors,
//! and files written by the reference writer must read back with the same inventory.

use std::path::PathBuf;
use std::process::Command;

use crate::common::corpus::corpus;
use crate::common::python;
use crate::{data_dir, squeeze};

const REFERENCE_READER: &str = r#"
import sys, json
from safetensors import safe_open
out = {}
for path in sys.argv[1:]:
    try:
        with safe_open(path, framework="numpy") as f:
            out[path] = sorted(f.keys())
    except Exception as e:
        out[path] = None
print(json.dumps(out))
"#;

#[test]
fn squeeze_and_the_reference_reader_agree_on_the_malformed_corpus() {
    let dir = data_dir();
    let cases: Vec<(&str, PathBuf)> = corpus()
        .into_iter()
        .enumerate()
        .map(|(i, (case, _, body, _, _))| {
            let path = dir.path().join(format!("case{i}.safetensors"));
            std::fs::write(&path, body).unwrap();
            (case, path)
        })
        .collect();
    let out = Command::new(python())
        .arg("-c")
        .arg(REFERENCE_READER)
        .args(cases.iter().map(|(_, p)| p))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut stricter = Vec::new();
    for (case, path) in &cases {
        let reference_accepts = !verdicts[path.to_str().unwrap()].is_null();
        let (status, _, _) = squeeze(&["inspect", path.to_str().unwrap()]);
        if status.success() {
            assert!(
                reference_accepts,
                "{case}: squeeze accepts what the reference refuses"
            );
        } else if reference_accepts {
            stricter.push(*case);
        }
    }
    // Where squeeze is deliberately stricter than the reference: a file with no tensors is
    // valid safetensors but no model.
    assert_eq!(
        stricter,
        ["no tensors"],
        "squeeze refuses files the reference reads"
    );
}

const REFERENCE_WRITER: &str = r#"
import sys, json
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(0)
tensors = {
    "model.embed_tokens.weight": rng.standard_normal((64, 32)).astype(np.float16),
    "model.layers.0.mlp.up_proj.weight": rng.standard_normal((48, 32)).astype(np.float32),
    "model.layers.0.mlp.codes": rng.integers(-128, 127, (16, 8)).astype(np.int8),
    "model.layers.0.mask": rng.integers(0, 2, (7,)).astype(np.bool_),
    "model.scale": np.array(0.5, dtype=np.float64),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "ids": np.arange(5, dtype=np.int64),
}
save_file(tensors, sys.argv[1], metadata={"format": "pt"})
print(json.dumps({k: {"dtype": v.dtype.str, "shape": list(v.shape), "bytes": v.nbytes} for k, v in tensors.items()}))
"#;

#[test]
fn files_from_the_reference_writer_read_back_with_their_inventory() {
    let dir = data_dir();
    let path = dir.path().join("reference.safetensors");
    let out = Command::new(python())
        .arg("-c")
        .arg(REFERENCE_WRITER)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (status, stdout, stderr) = squeeze(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    let ours: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let tensors = ours["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), written.as_object().unwrap().len());
    let dtype_of = |numpy: &str| match numpy {
        "<f2" => "F16",
        "<f4" => "F32",
        "<f8" => "F64",
        "|i1" => "I8",
        "|b1" => "BOOL",
        "<i8" => "I64",
        other => panic!("unexpected numpy dtype {other}"),
    };
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let expected = &written[name];
        assert_eq!(
            t["dtype"],
            dtype_of(expected["dtype"].as_str().unwrap()),
            "{name}"
        );
        assert_eq!(t["shape"], expected["shape"], "{name}");
        assert_eq!(t["bytes"], expected["bytes"], "{name}");
    }
    assert_eq!(ours["bytes"], std::fs::metadata(&path).unwrap().len());
}

/// F32 weight-like values: uniform in ±scale, with an outlier (×30, sign flipped) every 331
/// values and an exact zero every 97, as real weights have.
fn f32_weights(n: usize, scale: f32, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .flat_map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = ((state % 2_000_001) as f32 / 1e6 - 1.0) * scale;
            let v = if i % 331 == 0 {
                -v * 30.0
            } else if i % 97 == 0 {
                0.0
            } else {
                v
            };
            v.to_le_bytes()
        })
        .collect()
}

/// Writes `m.safetensors` of F32 tensors `(name, shape, scale)` filled by [`f32_weights`]
/// (scale 0 gives an all-zero tensor).
fn write_f32_model(dir: &std::path::Path, tensors: &[(&str, &[u64], f32)]) -> PathBuf {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(i, (_, shape, scale))| {
            f32_weights(shape.iter().product::<u64>() as usize, *scale, i as u64 + 1)
        })
        .collect();
    let entries: Vec<(&str, &str, &[u64], Vec<u8>)> = tensors
        .iter()
        .zip(data)
        .map(|((name, shape, _), bytes)| (*name, "F32", *shape, bytes))
        .collect();
    let path = dir.join("m.safetensors");
    std::fs::write(&path, crate::common::safetensors(&entries)).unwrap();
    path
}

/// Compresses `model` once per `(label, recipe JSON)`; returns the model followed by one
/// `label=output file` argument per recipe, for a reference script.
fn compress_each(
    dir: &std::path::Path,
    model: &std::path::Path,
    recipes: &[(String, String)],
) -> Vec<PathBuf> {
    let mut args = vec![model.to_path_buf()];
    for (label, recipe_json) in recipes {
        let recipe = dir.join(format!("{label}.json"));
        // The references compare dense values: a recipe without a format writes them dense.
        let mut parsed: serde_json::Value = serde_json::from_str(recipe_json).unwrap();
        parsed
            .as_object_mut()
            .unwrap()
            .entry("format")
            .or_insert("safetensors".into());
        std::fs::write(&recipe, parsed.to_string()).unwrap();
        let out = dir.join(format!("out-{label}"));
        let (status, _, stderr) = squeeze(&[
            "compress",
            "--recipe",
            recipe.to_str().unwrap(),
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(status.success(), "{label}: {stderr}");
        args.push(PathBuf::from(format!(
            "{label}={}",
            out.join("model.safetensors").display()
        )));
    }
    args
}

/// Runs a Python reference script from target/pyvenv with `args`; it must exit 0.
fn run_reference(script: &str, args: &[PathBuf]) {
    let check = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// FP8 E4M3 per channel and per tensor, computed by numpy with `ml_dtypes`' float8_e4m3fn cast
/// (an implementation no one here wrote): scale absmax / 448, clip to ±448, cast, multiply back.
const FP8_REFERENCE: &str = r#"
import sys
import numpy as np
import ml_dtypes
from safetensors.numpy import load_file
original = load_file(sys.argv[1])
for preset, out_path in (("fp8", sys.argv[2]), ("fp8-tensor", sys.argv[3])):
    got = load_file(out_path)
    for name, w in original.items():
        if w.ndim < 2:
            continue
        rows = w.reshape(w.shape[0], -1)
        if preset == "fp8":
            absmax = np.abs(rows).max(axis=1, keepdims=True)
        else:
            absmax = np.abs(rows).max(keepdims=True)
        scale = (absmax / np.float32(448.0)).astype(np.float32)
        scale = np.where(scale == 0, np.finfo(np.float32).eps, scale).astype(np.float32)
        q = np.clip(rows / scale, -448, 448).astype(np.float32).astype(ml_dtypes.float8_e4m3fn)
        want = (q.astype(np.float32) * scale).reshape(w.shape)
        mismatches = int((want.view(np.uint32) != got[name].view(np.uint32)).sum())
        if mismatches:
            print(f"{preset} {name}: {mismatches} of {w.size} values differ")
            sys.exit(1)
print("ok")
"#;

#[test]
fn fp8_matches_numpy_with_ml_dtypes_bit_for_bit() {
    let dir = data_dir();
    let model = write_f32_model(
        dir.path(),
        &[
            ("a.weight", &[33, 517], 0.05),
            ("b.weight", &[4, 3, 5], 3.0),
            ("zero.weight", &[2, 8], 0.0),
            ("tiny.weight", &[3, 7], 1e-6),
        ],
    );
    let mut outputs = Vec::new();
    for (preset, granularity) in [("fp8", "channel"), ("fp8-tensor", "tensor")] {
        let out = dir.path().join(preset);
        // The preset's stage, written dense: compressed-tensors would refuse the 3-D tensor.
        let recipe = dir.path().join(format!("{preset}.json"));
        std::fs::write(
            &recipe,
            format!(
                r#"{{"stages": [{{"quantize": {{"scheme": "fp8", "granularity": "{granularity}"}}}}], "format": "safetensors"}}"#
            ),
        )
        .unwrap();
        let (status, _, stderr) = squeeze(&[
            "compress",
            "--recipe",
            recipe.to_str().unwrap(),
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(status.success(), "{stderr}");
        outputs.push(out.join("model.safetensors"));
    }
    let mut args = vec![model.clone()];
    args.extend(outputs);
    run_reference(FP8_REFERENCE, &args);
}

/// llama.cpp block types, computed by the `gguf` Python package (quantize, then dequantize)
/// and compared value for value with squeeze's dense output of the same recipe.
const GGUF_REFERENCE: &str = r#"
import sys
import numpy as np
from gguf import GGMLQuantizationType, quants
from safetensors.numpy import load_file
original = load_file(sys.argv[1])
for pair in sys.argv[2:]:
    kind, path = pair.split("=", 1)
    qtype = getattr(GGMLQuantizationType, kind)
    got = load_file(path)
    for name, w in original.items():
        rows = w.reshape(w.shape[0], -1)
        want = quants.dequantize(quants.quantize(rows, qtype), qtype).reshape(w.shape)
        # Compared as numbers: for an all-zero block of -0.0 the package's scale is +0 where
        # llama.cpp's C reference (and squeeze) store -0, so the decoded zeros differ in sign only.
        mismatches = int((want.astype(np.float32) != got[name]).sum())
        if mismatches:
            print(f"{kind} {name}: {mismatches} of {w.size} values differ")
            sys.exit(1)
print("ok")
"#;

#[test]
fn gguf_block_types_match_the_gguf_package() {
    let dir = data_dir();
    let model = write_f32_model(
        dir.path(),
        &[
            ("a.weight", &[19, 320], 0.05),
            ("b.weight", &[2, 3, 64], 2.0),
            ("zero.weight", &[2, 32], 0.0),
        ],
    );
    let recipes: Vec<(String, String)> = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
        .iter()
        .map(|kind| {
            (
                kind.to_string(),
                format!(
                    r#"{{"stages": [{{"quantize": {{"scheme": "gguf", "type": "{kind}"}}}}]}}"#
                ),
            )
        })
        .collect();
    let args = compress_each(dir.path(), &model, &recipes);
    run_reference(GGUF_REFERENCE, &args);
}

/// NF4 as bitsandbytes defines it, in numpy: blocks of 64 over the flattened tensor, scaled by
/// the reciprocal of the block's absmax, level = number of midpoints strictly below.
const NF4_REFERENCE: &str = r#"
import sys
import numpy as np
from safetensors.numpy import load_file
levels = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
midpoints = ((levels[1:] + levels[:-1]) / np.float32(2)).astype(np.float32)
original = load_file(sys.argv[1])
got = load_file(sys.argv[2].split("=", 1)[1])
for name, w in original.items():
    flat = w.reshape(-1)
    out = np.empty_like(flat)
    for start in range(0, flat.size, 64):
        block = flat[start:start + 64]
        absmax = np.float32(np.abs(block).max())
        if absmax == 0:
            out[start:start + 64] = 0
            continue
        scaled = np.clip(block * (np.float32(1) / absmax), -1, 1).astype(np.float32)
        index = np.searchsorted(midpoints, scaled, side="left")
        out[start:start + 64] = levels[index] * absmax
    mismatches = int((out.view(np.uint32) != got[name].reshape(-1).view(np.uint32)).sum())
    if mismatches:
        print(f"nf4 {name}: {mismatches} of {w.size} values differ")
        sys.exit(1)
print("ok")
"#;

#[test]
fn nf4_matches_a_numpy_implementation_bit_for_bit() {
    let dir = data_dir();
    let model = write_f32_model(
        dir.path(),
        &[
            ("a.weight", &[19, 333], 0.05),
            ("b.weight", &[2, 3, 64], 2.0),
            ("zero.weight", &[2, 32], 0.0),
        ],
    );
    let recipes = [(
        "nf4".to_owned(),
        r#"{"stages": [{"quantize": {"scheme": "nf4"}}]}"#.to_owned(),
    )];
    run_reference(NF4_REFERENCE, &compress_each(dir.path(), &model, &recipes));
}

/// Pruning by sorting, in numpy: global magnitude (one stable order over all tensors in file
/// order), 2:4 and 4:8 (per group of M, stable order) and channels (rows by L1/L2 norm).
const PRUNE_REFERENCE: &str = r#"
import sys, math
import numpy as np
from safetensors.numpy import load_file
original = load_file(sys.argv[1])
names = list(original)  # file order, as squeeze visits them
def check(label, want, got):
    for name in names:
        bad = int((want[name].view(np.uint32) != got[name].view(np.uint32)).sum())
        if bad:
            print(f"{label} {name}: {bad} of {want[name].size} values differ")
            sys.exit(1)
for pair in sys.argv[2:]:
    label, path = pair.split("=", 1)
    got = load_file(path)
    if label == "global":
        flat = np.concatenate([original[n].reshape(-1) for n in names])
        k = math.floor(flat.size * 0.6)
        order = np.argsort(np.abs(flat), kind="stable")
        pruned = flat.copy()
        pruned[order[:k]] = 0
        want, start = {}, 0
        for n in names:
            size = original[n].size
            want[n] = pruned[start:start + size].reshape(original[n].shape)
            start += size
    elif label in ("2of4", "4of8"):
        n_keep, m = (2, 4) if label == "2of4" else (4, 8)
        want = {}
        for n in names:
            groups = original[n].reshape(-1, m).copy()
            order = np.argsort(np.abs(groups), axis=1, kind="stable")
            np.put_along_axis(groups, order[:, :m - n_keep], 0, axis=1)
            want[n] = groups.reshape(original[n].shape)
    else:
        norm = label
        want = {}
        for n in names:
            rows = original[n].reshape(original[n].shape[0], -1).astype(np.float64).copy()
            score = np.abs(rows).sum(axis=1) if norm == "l1" else (rows ** 2).sum(axis=1)
            order = np.argsort(score, kind="stable")
            rows[order[:math.floor(rows.shape[0] * 0.3)]] = 0
            want[n] = rows.astype(np.float32).reshape(original[n].shape)
    check(label, want, got)
print("ok")
"#;

#[test]
fn pruning_methods_match_a_numpy_sort_exactly() {
    let dir = data_dir();
    let model = write_f32_model(
        dir.path(),
        &[
            ("a.weight", &[17, 64], 0.05),
            ("b.weight", &[8, 2, 16], 2.0),
            ("c.weight", &[40, 8], 0.5),
        ],
    );
    let prune = |json: &str| format!(r#"{{"stages": [{{"prune": {json}}}]}}"#);
    let recipes = [
        (
            "global",
            prune(r#"{"method": "magnitude", "sparsity": 0.6, "scope": "global"}"#),
        ),
        (
            "2of4",
            prune(r#"{"method": "semi_structured", "pattern": "2:4"}"#),
        ),
        (
            "4of8",
            prune(r#"{"method": "semi_structured", "pattern": "4:8"}"#),
        ),
        (
            "l1",
            prune(r#"{"method": "channels", "sparsity": 0.3, "norm": "l1"}"#),
        ),
        (
            "l2",
            prune(r#"{"method": "channels", "sparsity": 0.3, "norm": "l2"}"#),
        ),
    ]
    .map(|(label, json)| (label.to_owned(), json));
    run_reference(
        PRUNE_REFERENCE,
        &compress_each(dir.path(), &model, &recipes),
    );
}

/// The shrunk MLP against the original with the removed channels zeroed, in numpy: the channel
/// choice is recomputed from the original weights (summed L2 norms of the gate row, the up row
/// and the down column; the lowest removed), and both forward passes run on random inputs.
const MLP_SHRINK_REFERENCE: &str = r#"
import sys, json, math
import numpy as np
from safetensors.numpy import load_file
original = load_file(sys.argv[1] + "/model.safetensors")
shrunk = load_file(sys.argv[2] + "/model.safetensors")
config = json.load(open(sys.argv[2] + "/config.json"))
before = json.load(open(sys.argv[1] + "/config.json"))
inter = before["intermediate_size"]
keep = inter - math.floor(inter * 0.25)
assert config["intermediate_size"] == keep, config
assert {k: v for k, v in config.items() if k != "intermediate_size"} == \
       {k: v for k, v in before.items() if k != "intermediate_size"}
rng = np.random.default_rng(0)
silu = lambda z: z / (1 + np.exp(-z))
layers = sorted({n.split(".mlp.")[0] for n in original if ".mlp." in n})
assert layers, "no MLP"
for layer in layers:
    g, u, d = (original[f"{layer}.mlp.{p}_proj.weight"].astype(np.float64) for p in ("gate", "up", "down"))
    score = np.linalg.norm(g, axis=1) + np.linalg.norm(u, axis=1) + np.linalg.norm(d, axis=0)
    removed = np.argsort(score, kind="stable")[: inter - keep]
    g0, u0, d0 = g.copy(), u.copy(), d.copy()
    g0[removed] = 0; u0[removed] = 0; d0[:, removed] = 0
    gs, us, ds = (shrunk[f"{layer}.mlp.{p}_proj.weight"].astype(np.float64) for p in ("gate", "up", "down"))
    assert gs.shape == (keep, g.shape[1]) and ds.shape == (d.shape[0], keep), (gs.shape, ds.shape)
    x = rng.standard_normal((5, g.shape[1]))
    want = (silu(x @ g0.T) * (x @ u0.T)) @ d0.T
    got = (silu(x @ gs.T) * (x @ us.T)) @ ds.T
    err = np.abs(want - got).max() / np.abs(want).max()
    if err > 1e-12:
        print(f"{layer}: forward passes differ by {err}")
        sys.exit(1)
for name, w in original.items():
    if ".mlp." not in name:
        assert (shrunk[name] == w).all(), name
print("ok")
"#;

#[test]
fn mlp_shrinking_keeps_the_forward_pass_of_the_zeroed_model() {
    let dir = data_dir();
    let model_dir = dir.path().join("llama");
    std::fs::create_dir(&model_dir).unwrap();
    let (hidden, inter) = (24u64, 40u64);
    let mut tensors: Vec<(String, Vec<u64>, f32)> = Vec::new();
    for layer in 0..2 {
        let p = format!("model.layers.{layer}");
        tensors.push((
            format!("{p}.self_attn.q_proj.weight"),
            vec![hidden, hidden],
            0.1,
        ));
        tensors.push((
            format!("{p}.mlp.gate_proj.weight"),
            vec![inter, hidden],
            0.1,
        ));
        tensors.push((format!("{p}.mlp.up_proj.weight"), vec![inter, hidden], 0.2));
        tensors.push((
            format!("{p}.mlp.down_proj.weight"),
            vec![hidden, inter],
            0.3,
        ));
    }
    let specs: Vec<(&str, &[u64], f32)> = tensors
        .iter()
        .map(|(n, s, scale)| (n.as_str(), s.as_slice(), *scale))
        .collect();
    write_f32_model(&model_dir, &specs);
    std::fs::rename(
        model_dir.join("m.safetensors"),
        model_dir.join("model.safetensors"),
    )
    .unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": 2, "torch_dtype": "float32"
    });
    std::fs::write(model_dir.join("config.json"), config.to_string()).unwrap();
    let recipe = dir.path().join("shrink.json");
    std::fs::write(
        &recipe,
        r#"{"stages": [{"prune": {"method": "mlp_channels", "sparsity": 0.25}}]}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let (status, stdout, stderr) = squeeze(&[
        "compress",
        "--recipe",
        recipe.to_str().unwrap(),
        model_dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(status.success(), "{stderr}");
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let bytes_out = result["summary"]["bytes_out"].as_u64().unwrap();
    let bytes_in = result["summary"]["bytes_in"].as_u64().unwrap();
    assert!(
        bytes_out < bytes_in,
        "{bytes_out} vs {bytes_in}: really smaller"
    );
    let down = result["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "model.layers.0.mlp.down_proj.weight")
        .unwrap();
    assert_eq!(down["shape"], serde_json::json!([24, 30]));
    assert!(
        down["rel_error"].as_f64().unwrap() > 0.0,
        "removed energy counts"
    );
    run_reference(MLP_SHRINK_REFERENCE, &[model_dir, out.clone()]);

    // Without config.json the architecture is unknown: refused in one line.
    std::fs::remove_file(dir.path().join("llama/config.json")).unwrap();
    let (status, _, stderr) = squeeze(&[
        "compress",
        "--recipe",
        recipe.to_str().unwrap(),
        dir.path().join("llama").to_str().unwrap(),
        "-o",
        dir.path().join("out2").to_str().unwrap(),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("config.json"), "{stderr}");
}

/// Truncated SVD with numpy's LAPACK: squeeze's rank-r output must equal U_r Σ_r V_rᵀ.
const LOW_RANK_REFERENCE: &str = r#"
import sys
import numpy as np
from safetensors.numpy import load_file
original = load_file(sys.argv[1])
got = load_file(sys.argv[2].split("=", 1)[1])
for name, w in original.items():
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    u, s, vt = np.linalg.svd(rows, full_matrices=False)
    want = (u[:, :3] * s[:3]) @ vt[:3]
    err = np.abs(want - got[name].reshape(rows.shape)).max() / max(np.abs(want).max(), 1e-30)
    if err > 1e-4:
        print(f"{name}: differs from numpy's truncated SVD by {err}")
        sys.exit(1)
print("ok")
"#;

#[test]
fn low_rank_matches_numpys_truncated_svd_and_refuses_growth_in_one_line() {
    let dir = data_dir();
    let model = write_f32_model(
        dir.path(),
        &[
            ("a.weight", &[40, 30], 0.05),
            ("b.weight", &[12, 2, 9], 1.0),
        ],
    );
    let recipes = [(
        "rank3".to_owned(),
        r#"{"stages": [{"low_rank": {"rank": 3, "seed": 1}}]}"#.to_owned(),
    )];
    run_reference(
        LOW_RANK_REFERENCE,
        &compress_each(dir.path(), &model, &recipes),
    );

    // Keeping all the energy of a noisy matrix needs its full rank: refused, naming the tensor.
    let recipe = dir.path().join("all.json");
    std::fs::write(
        &recipe,
        r#"{"stages": [{"low_rank": {"energy": 1.0}}], "format": "safetensors"}"#,
    )
    .unwrap();
    let (status, _, stderr) = squeeze(&[
        "compress",
        "--recipe",
        recipe.to_str().unwrap(),
        model.to_str().unwrap(),
        "-o",
        dir.path().join("out-all").to_str().unwrap(),
    ]);
    assert!(!status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("a.weight") && stderr.contains("not smaller"),
        "{stderr}"
    );
}

/// Our Q4_K / Q5_K / Q6_K blocks, decoded by the `gguf` package (which has dequantizers for the
/// K-quants but no quantizers): its values must equal ours exactly.
const K_QUANT_REFERENCE: &str = r#"
import sys
import numpy as np
from gguf import GGMLQuantizationType, quants
rows = int(sys.argv[1])
for pair in sys.argv[2:]:
    kind, stem = pair.split("=", 1)
    blocks = np.fromfile(stem + ".blocks", dtype=np.uint8).reshape(rows, -1)
    ours = np.fromfile(stem + ".f32", dtype=np.float32).reshape(rows, -1)
    theirs = quants.dequantize(blocks, getattr(GGMLQuantizationType, kind)).astype(np.float32)
    bad = int((theirs.view(np.uint32) != ours.view(np.uint32)).sum())
    if bad:
        print(f"{kind}: {bad} of {ours.size} values differ")
        sys.exit(1)
print("ok")
"#;

#[test]
fn k_quant_blocks_decode_identically_in_the_gguf_package() {
    use squeeze::compress::blocks::{self, BlockType};
    let dir = data_dir();
    let (rows, cols) = (6usize, 768usize);
    let values: Vec<f32> = f32_weights(rows * cols, 0.05, 77)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut args = vec![PathBuf::from(rows.to_string())];
    for kind in [BlockType::Q4_K, BlockType::Q5_K, BlockType::Q6_K] {
        let mut blocks = vec![0u8; rows * cols / kind.block_len() * kind.block_bytes()];
        blocks::quantize(kind, &values, &mut blocks);
        let mut decoded = vec![0f32; rows * cols];
        for (block, out) in blocks
            .chunks_exact(kind.block_bytes())
            .zip(decoded.chunks_exact_mut(kind.block_len()))
        {
            blocks::dequantize_block(kind, block, out);
        }
        let stem = dir.path().join(kind.name());
        std::fs::write(stem.with_extension("blocks"), &blocks).unwrap();
        let bytes: Vec<u8> = decoded.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(stem.with_extension("f32"), bytes).unwrap();
        args.push(PathBuf::from(format!("{}={}", kind.name(), stem.display())));
    }
    run_reference(K_QUANT_REFERENCE, &args);
}
