//! A model several times larger than the memory the process may allocate compresses correctly:
//! `squeeze compress` (the pipeline jobs run) on a 1 GiB BF16 model under RLIMIT_DATA of
//! 256 MiB, with peak RSS under that too, and sampled tensors equal to an independent int8
//! computation.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::common::{
    assert_int8_per_channel, from_bf16, safetensors_header, squeeze_bin, weight_like_bf16,
};
use crate::data_dir;

/// Private writable memory the process may map (heap, anonymous maps, thread stacks). Mapped
/// model files do not count: they are shared, read-only, and released tensor by tensor.
const MEMORY_LIMIT: u64 = 256 << 20;
const ROWS: usize = 4096;
const COLS: usize = 4096;
const TENSORS: usize = 32;

fn tensor_name(i: usize) -> String {
    format!("layers.{i}.weight")
}

/// Reads tensor `i` (BF16) of a file written with [`write_model`]'s layout as f32.
fn read_tensor(path: &Path, header_len: u64, i: usize) -> Vec<f32> {
    let bytes_per = (ROWS * COLS * 2) as u64;
    let mut file = File::open(path).unwrap();
    file.seek(SeekFrom::Start(header_len + i as u64 * bytes_per))
        .unwrap();
    let mut bytes = vec![0u8; bytes_per as usize];
    file.read_exact(&mut bytes).unwrap();
    bytes
        .chunks_exact(2)
        .map(|c| from_bf16(u16::from_le_bytes([c[0], c[1]])))
        .collect()
}

fn header_len(path: &Path) -> u64 {
    let mut prefix = [0u8; 8];
    File::open(path).unwrap().read_exact(&mut prefix).unwrap();
    8 + u64::from_le_bytes(prefix)
}

fn write_model(path: &Path) {
    let names: Vec<String> = (0..TENSORS).map(tensor_name).collect();
    let shape = [ROWS as u64, COLS as u64];
    let entries: Vec<(&str, &str, &[u64], usize)> = names
        .iter()
        .map(|n| (n.as_str(), "BF16", &shape[..], ROWS * COLS * 2))
        .collect();
    let mut out = BufWriter::new(File::create(path).unwrap());
    out.write_all(&safetensors_header(&entries)).unwrap();
    for i in 0..TENSORS {
        out.write_all(&weight_like_bf16(ROWS * COLS, 1000 + i as u64))
            .unwrap();
    }
    out.flush().unwrap();
}

#[test]
fn a_model_four_times_the_memory_limit_compresses_correctly() {
    let dir = data_dir();
    let model = dir.path().join("big.safetensors");
    write_model(&model);
    let model_bytes = std::fs::metadata(&model).unwrap().len();
    assert!(model_bytes >= 4 * MEMORY_LIMIT);
    let out = dir.path().join("out");

    // int8 per channel written dense, so the values can be checked where they lie.
    let recipe = dir.path().join("int8-dense.json");
    std::fs::write(
        &recipe,
        r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "format": "safetensors"}"#,
    )
    .unwrap();
    let mut command = Command::new(squeeze_bin());
    command.args(["compress", "--json", "--recipe"]);
    command.arg(&recipe);
    command.arg(&model).arg("-o").arg(&out);
    // SAFETY: only async-signal-safe setrlimit runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let summary = &result["summary"];
    assert_eq!(summary["compressed_tensors"], TENSORS);
    let peak = summary["peak_rss_bytes"].as_u64().unwrap();
    assert!(
        peak < MEMORY_LIMIT,
        "peak RSS {} MiB for a {} MiB model",
        peak >> 20,
        model_bytes >> 20
    );
    println!(
        "{} MiB model under a {} MiB RLIMIT_DATA: peak RSS {} MiB, {:.2} s, {:.3} GB/s",
        model_bytes >> 20,
        MEMORY_LIMIT >> 20,
        peak >> 20,
        summary["wall_seconds"].as_f64().unwrap(),
        summary["throughput_bytes_per_s"].as_f64().unwrap() / 1e9
    );

    let artifact = out.join("model.safetensors");
    assert_eq!(std::fs::metadata(&artifact).unwrap().len(), model_bytes);
    let (header_in, header_out) = (header_len(&model), header_len(&artifact));
    for i in [0, TENSORS / 2, TENSORS - 1] {
        let original = read_tensor(&model, header_in, i);
        let got = read_tensor(&artifact, header_out, i);
        assert_int8_per_channel(&tensor_name(i), &original, &got, COLS);
    }
}
