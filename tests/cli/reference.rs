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
