//! The checks an upload of several files passes: each file classified by name and streamed
//! through the same ingest as the API (safetensors validated, JSON parsed), then the set
//! checked as one model (shards against their index, config.json).
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use squeeze::store::blobs::BlobStore;
use squeeze::store::ingest::{self, FileKind};

#[derive(Debug, Arbitrary)]
struct Upload {
    files: Vec<(String, Vec<u8>)>,
}

fn store() -> &'static BlobStore {
    static STORE: OnceLock<BlobStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let base = std::env::var_os("SQUEEZE_FUZZ_TMP")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        BlobStore::open(&base.join(format!("squeeze-fuzz-files-{}", std::process::id()))).unwrap()
    })
}

fuzz_target!(|upload: Upload| {
    if upload.files.len() > 4 {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut ingested = Vec::new();
    for (name, body) in upload.files {
        let Ok(kind) = ingest::classify(&name) else {
            continue;
        };
        if kind == FileKind::Safetensors && body.len() < 8 {
            continue;
        }
        let mut budget = 1 << 24;
        let stream = futures_util::stream::iter(
            body.chunks(4096)
                .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let result = runtime.block_on(ingest::ingest(
            store(),
            name,
            kind,
            stream,
            &mut budget,
            1 << 24,
            std::time::Duration::from_secs(5),
        ));
        if let Ok(file) = result {
            ingested.push(file);
        }
    }
    let _ = squeeze::store::models::plan(ingested);
});
