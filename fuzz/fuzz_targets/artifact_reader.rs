//! The readers of squeeze's artifacts (compressed-tensors, compact safetensors, GGUF) behind
//! `squeeze inspect`, `decompress` and evaluation: open a file and decode every weight.
//! The input is split at its first byte's position into a `config.json` and the weight file.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use squeeze::formats::reader::ArtifactFile;

fn folder() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("SQUEEZE_FUZZ_TMP")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("squeeze-fuzz-artifact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (usize::from(cut) * 8).min(rest.len());
    let (config, weights) = rest.split_at(cut);
    let dir = folder();
    let _ = std::fs::write(dir.join("config.json"), config);
    let path = dir.join("model.safetensors");
    std::fs::write(&path, weights).unwrap();
    if let Ok(file) = ArtifactFile::open(&path) {
        for weight in &file.weights {
            let _ = file.decode(weight);
        }
    }
});
