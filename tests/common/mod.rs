//! Helpers shared by the integration test binaries: a real PostgreSQL for the run (the server
//! named by `SQUEEZE_TEST_DATABASE_URL`, else a private cluster started with squeeze's own
//! launcher and stopped when the test process exits), a fresh database per test, and a
//! safetensors writer independent of the code under test.

#![allow(dead_code)]

pub mod corpus;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use sqlx::ConnectOptions;
use squeeze::store::embedded::PostgresCluster;

static CLUSTER: OnceLock<PostgresCluster> = OnceLock::new();

extern "C" fn stop_test_cluster() {
    if let Some(cluster) = CLUSTER.get() {
        let _ = cluster.stop();
    }
}

/// URL of the server to create test databases in, with `{db}` where the database name goes.
fn server_url_template() -> String {
    if let Ok(url) = std::env::var("SQUEEZE_TEST_DATABASE_URL") {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b.to_owned(), format!("?{q}")),
            None => (url.clone(), String::new()),
        };
        let root = base.rsplit_once('/').map_or(base.as_str(), |(r, _)| r);
        return format!("{root}/{{db}}{query}");
    }
    let cluster = CLUSTER.get_or_init(|| {
        let name = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tests".into());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pg-{name}"));
        let cluster = PostgresCluster::ensure(&dir).expect("starting the test PostgreSQL cluster");
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { libc::atexit(stop_test_cluster) };
        cluster
    });
    cluster.url("{db}")
}

/// A URL for a new, empty database of its own.
pub async fn fresh_database_url() -> String {
    let template = server_url_template();
    let admin: sqlx::postgres::PgConnectOptions = template
        .replace("{db}", "postgres")
        .parse()
        .expect("admin URL parses");
    let mut conn = admin
        .connect()
        .await
        .expect("connecting to the test server");
    let name = format!("squeeze_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
    template.replace("{db}", &name)
}

/// The header block (length prefix and JSON, padded to 8 bytes as the reference writer pads)
/// of a safetensors file holding `(name, dtype, shape, data length)` in that order.
pub fn safetensors_header(tensors: &[(&str, &str, &[u64], usize)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, dtype, shape, len) in tensors {
        header.insert(
            (*name).into(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

/// Bytes of a safetensors file: `(name, dtype, shape, data)` in that order.
pub fn safetensors(tensors: &[(&str, &str, &[u64], Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<(&str, &str, &[u64], usize)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| (*name, *dtype, *shape, data.len()))
        .collect();
    let mut out = safetensors_header(&entries);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), so files differ between seeds.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A small two-tensor model file.
pub fn small_model(seed: u64) -> Vec<u8> {
    safetensors(&[
        (
            "layers.0.weight",
            "BF16",
            &[16, 32],
            noise(16 * 32 * 2, seed),
        ),
        ("layers.0.bias", "F32", &[16], noise(16 * 4, seed + 1)),
    ])
}

/// Hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The Python with the independent reference packages (safetensors, numpy,
/// openapi-spec-validator): `SQUEEZE_TEST_PYTHON`, else the venv scripts/test makes in
/// `target/pyvenv`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("SQUEEZE_TEST_PYTHON") {
        return python.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python");
    assert!(
        venv.is_file(),
        "no Python with the independent reference packages: run ./scripts/test (it installs them in target/pyvenv) or set SQUEEZE_TEST_PYTHON"
    );
    venv
}

/// The `squeeze` binary under test: `SQUEEZE_BIN` (e.g. a release build, for measuring), else
/// the one cargo built for this test run.
pub fn squeeze_bin() -> PathBuf {
    std::env::var_os("SQUEEZE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_squeeze")))
}

/// A model of `count` BF16 matrices `rows × cols` with small finite values.
pub fn bf16_model(count: usize, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let tensors: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            (
                format!("layers.{i}.weight"),
                weight_like_bf16(rows * cols, seed + i as u64),
            )
        })
        .collect();
    let shape = [rows as u64, cols as u64];
    let entries: Vec<(&str, &str, &[u64], Vec<u8>)> = tensors
        .iter()
        .map(|(name, bytes)| (name.as_str(), "BF16", &shape[..], bytes.clone()))
        .collect();
    safetensors(&entries)
}

/// `elements` BF16 values, little-endian: sign, exponent 2^-8..2^-1, random mantissa (finite
/// and weight-like).
pub fn weight_like_bf16(elements: usize, seed: u64) -> Vec<u8> {
    noise(elements * 2, seed)
        .chunks_exact(2)
        .flat_map(|pair| {
            let exponent = 119 + u16::from(pair[1] % 8);
            let bits =
                (u16::from(pair[1] & 0x80) << 8) | (exponent << 7) | u16::from(pair[0] & 0x7F);
            bits.to_le_bytes()
        })
        .collect()
}

/// BF16 bits of an f32, round to nearest even (written here, independently of the service).
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// The f32 a BF16 bit pattern stands for.
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// Asserts that `got` is `original` quantized to int8, symmetric, one scale per row of `cols`
/// values (amax / 127.5, round half to even), dequantized and stored as BF16, computed here in
/// f64. A neighbouring code is accepted where f32 and f64 disagree on a tie.
pub fn assert_int8_per_channel(name: &str, original: &[f32], got: &[f32], cols: usize) {
    assert_eq!(original.len(), got.len(), "{name}: length");
    for (row, (o, g)) in original.chunks(cols).zip(got.chunks(cols)).enumerate() {
        let amax = o.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
        let scale = amax / 127.5;
        for (x, y) in o.iter().zip(g) {
            let q = (f64::from(*x) / scale)
                .round_ties_even()
                .clamp(-128.0, 127.0);
            let want = f64::from(from_bf16(bf16_bits((q * scale) as f32)));
            assert!(
                (want - f64::from(*y)).abs() <= scale * 1.01,
                "{name} row {row}: {x} -> {y}, want {want}"
            );
        }
    }
}

/// The `key` field of every item of a `{items: [...]}` page, in order.
pub fn item_strings(page: &serde_json::Value, key: &str) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("a page has items")
        .iter()
        .map(|item| item[key].as_str().expect("a string field").to_owned())
        .collect()
}
