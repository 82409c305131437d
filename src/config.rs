//! Command line and configuration: every setting is a flag with a `SQUEEZE_*` environment
//! equivalent (plus `DATABASE_URL`), parsed once by clap into typed structs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

/// squeeze: compression as a service for ML models.
#[derive(Debug, Parser)]
#[command(name = "squeeze", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "SQUEEZE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and dashboard.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run compression workers against the database and data folder of a server.
    Worker(WorkerArgs),
    /// Run a recipe on local files: no server, no database.
    Compress(CompressArgs),
    /// Measure performance against a baseline taken in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// List the tensors of a safetensors file (validating it as an upload would be).
    Inspect(InspectArgs),
    /// Decode a compressed artifact file (compressed-tensors, compact safetensors, GGUF) back to
    /// a dense safetensors file of every weight.
    Decompress(DecompressArgs),
    /// Evaluate an artifact against its original on an evaluation set: accuracy and latency
    /// side by side, in candle on this CPU.
    Evaluate(EvaluateArgs),
    /// Compress and evaluate the bundled demo classifier with each demo variant, here, with no
    /// server: size, latency and accuracy side by side.
    Demo {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API (as served at /api/openapi.json).
    Openapi,
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL URL. Without it, a private cluster is created and run in <data-dir>/postgres.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Folder for the private database, uploaded models and artifacts.
    #[arg(long, env = "SQUEEZE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// `squeeze serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, env = "SQUEEZE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Database location.
    #[command(flatten)]
    pub db: DbArgs,
    /// Largest upload accepted, in bytes or with a unit (e.g. 500MiB, 64GiB).
    #[arg(long, env = "SQUEEZE_MAX_UPLOAD", default_value = "64GiB", value_parser = parse_size)]
    pub max_upload: u64,
    /// Largest evaluation set accepted (sets are parsed in memory).
    #[arg(long, env = "SQUEEZE_MAX_DATASET", default_value = "256MiB", value_parser = parse_size)]
    pub max_dataset: u64,
    /// Seconds an upload may stall before it is dropped; any other request body that stalls
    /// a moment longer is cut too.
    #[arg(long, env = "SQUEEZE_UPLOAD_IDLE_SECS", default_value_t = 60)]
    pub upload_idle_secs: u64,
    /// Connections served at once; more are answered 503 and closed (lowered to fit the
    /// open-file limit, which is raised to its hard limit at start).
    #[arg(long, env = "SQUEEZE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's head, and may sit idle between
    /// requests, before it is closed.
    #[arg(long, env = "SQUEEZE_HEADER_TIMEOUT_SECS", default_value_t = 15)]
    pub header_timeout_secs: u64,
    /// A token of your choosing for the default team's admin (environment only, so it stays out
    /// of process listings).
    #[arg(skip = std::env::var("SQUEEZE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()))]
    pub admin_token: Option<String>,
    /// Folder of the dashboard's static files (default: ./static, else the one built in).
    #[arg(long, env = "SQUEEZE_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Seconds to let running requests finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "SQUEEZE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Print a single-use dashboard sign-in URL for the default team's admin (valid 10
    /// minutes, void after a restart). Later ones: `squeeze token login-url`.
    #[arg(long, env = "SQUEEZE_LOGIN_URL")]
    pub login_url: bool,
    /// The workers running in this process.
    #[command(flatten)]
    pub worker: WorkerFlags,
}

/// The workers a process runs, for `serve` and `worker` alike.
#[derive(Debug, Clone, Args)]
pub struct WorkerFlags {
    /// Compression workers in this process (`serve --workers 0`: the API only, with
    /// `squeeze worker` running elsewhere; `worker` runs at least one).
    #[arg(long, env = "SQUEEZE_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Longest wait, in seconds, before idle workers look for queued jobs when no NOTIFY
    /// arrives (the fallback while the LISTEN connection is down).
    #[arg(long, env = "SQUEEZE_POLL_SECS", default_value_t = 2)]
    pub poll_secs: u64,
}

/// `squeeze worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Database and data folder (the same as the server's).
    #[command(flatten)]
    pub db: DbArgs,
    /// The workers.
    #[command(flatten)]
    pub worker: WorkerFlags,
    /// Seconds running jobs may continue after SIGTERM before they are handed back.
    #[arg(long, env = "SQUEEZE_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// Seconds a claimed job stays ours without a heartbeat; a crashed worker's jobs are
    /// requeued after it.
    #[arg(long, env = "SQUEEZE_LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,
}

/// `squeeze compress`.
#[derive(Debug, Clone, Args)]
pub struct CompressArgs {
    /// A recipe JSON file.
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    pub recipe: Option<PathBuf>,
    /// A built-in preset (see GET /api/v1/presets).
    #[arg(long)]
    pub preset: Option<String>,
    /// The model: a .safetensors file, or a folder with shards, index and config.
    pub input: PathBuf,
    /// Folder for the artifact files (created if needed).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also take each output file's sha256 as it is written, and print it, and record the
    /// input's sha256 in recipe.json beside its BLAKE3 (one more pass over the output bytes, and
    /// a slower hash of the input; the service always takes both sha256s).
    #[arg(long)]
    pub checksums: bool,
    /// Flush each output file to the disk (fsync) before it is published, as the service
    /// always does; like `cp` and `llama-quantize`, a local run otherwise leaves that to the
    /// operating system.
    #[arg(long)]
    pub sync: bool,
    /// The calibration set of a calibrated stage (wanda, sparsegpt): token sequences as JSONL,
    /// one `{"tokens": [ids...]}` per line, or UTF-8 text in a `.txt` file, tokenized with the
    /// model's tokenizer.json.
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,
}

/// `squeeze token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a team (creating the team if needed); prints the secret once.
    Create {
        /// Team name.
        #[arg(long)]
        team: String,
        /// A label to tell tokens apart.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Allow the token to administer the team.
        #[arg(long)]
        admin: bool,
        /// Database location.
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print a single-use dashboard sign-in URL for a team's admin, valid 10 minutes and
    /// only until the server restarts.
    LoginUrl {
        /// Team name.
        #[arg(long, default_value = "default")]
        team: String,
        /// The server's address as a browser reaches it.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base_url: String,
        /// Database location.
        #[command(flatten)]
        db: DbArgs,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this team's tokens.
        #[arg(long)]
        team: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Database location.
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a token by id; it stops working at once.
    Revoke {
        /// Token id (from `squeeze token list`).
        id: Uuid,
        /// Database location.
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `squeeze bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Pipeline throughput on a synthetic BF16 model, next to memcpy bandwidth.
    Pipeline {
        /// Model size, e.g. 1GiB.
        #[arg(long, default_value = "1GiB", value_parser = parse_size)]
        size: u64,
        /// Preset to run.
        #[arg(long, default_value = "int8")]
        preset: String,
        /// Folder for the temporary input and output.
        #[arg(long, default_value = "./data/bench")]
        work_dir: PathBuf,
    },
    /// Every kernel on an in-memory tensor (BF16 and F32), next to memcpy bandwidth.
    Kernels {
        /// Rows of the tensor.
        #[arg(long, default_value_t = 4096)]
        rows: usize,
        /// Columns of the tensor.
        #[arg(long, default_value_t = 11008)]
        cols: usize,
        /// Runs per kernel; the fastest counts.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Only kernels whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// The evaluation's products on GGUF weights (integer with AVX-512 VNNI, dense f32 on the
    /// dequantized copy, candle's quantized matmul), side by side.
    Products {
        /// Activation rows (tokens) per product.
        #[arg(long, default_value_t = 512)]
        rows: usize,
        /// Output features of the weight (SmolLM2-135M's MLP: 1536).
        #[arg(long, default_value_t = 1536)]
        outputs: usize,
        /// Input features of the weight (SmolLM2-135M's hidden size: 576).
        #[arg(long, default_value_t = 576)]
        inputs: usize,
        /// Runs per product; the fastest counts.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// The calibrated methods (GPTQ, SparseGPT, Wanda) per layer against round-to-nearest,
    /// on SmolLM2-135M's linear shapes with synthetic correlated activations.
    Calibration {
        /// Calibration tokens (llm-compressor's 8 samples of 256: 2048).
        #[arg(long, default_value_t = 2048)]
        tokens: usize,
        /// One shape instead of SmolLM2's, as OUTPUTSxINPUTS (e.g. 4096x11008).
        #[arg(long, value_parser = parse_shape)]
        shape: Option<(usize, usize)>,
    },
    /// The team event stream's fan-out to many subscribers, against one subscriber.
    Events {
        /// Subscribers on the team stream.
        #[arg(long, default_value_t = 200)]
        subscribers: usize,
        /// Job changes timed.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Folder for the temporary database and files (removed afterwards).
        #[arg(long, default_value = "./data/bench")]
        work_dir: PathBuf,
    },
    /// Job queue throughput and enqueue-to-start latency, next to database round trips, on a
    /// private PostgreSQL made for the run.
    Queue {
        /// Jobs for the queue throughput figure.
        #[arg(long, default_value_t = 2000)]
        jobs: usize,
        /// Concurrent workers.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Jobs submitted one at a time for the latency figure.
        #[arg(long, default_value_t = 100)]
        latency_samples: usize,
        /// Folder for the temporary database and files (removed afterwards).
        #[arg(long, default_value = "./data/bench")]
        work_dir: PathBuf,
    },
}

/// `squeeze inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// A .safetensors file (dense, compressed-tensors with its config.json beside it, or
    /// compact) or a .gguf file.
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `squeeze decompress`.
#[derive(Debug, Clone, Args)]
pub struct DecompressArgs {
    /// The artifact file.
    pub file: PathBuf,
    /// The dense safetensors file to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `squeeze evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The original model: a .safetensors file, or a folder with shards and config.json.
    pub original: PathBuf,
    /// The artifact folder (`squeeze compress -o`); the original itself when omitted.
    pub artifact: Option<PathBuf>,
    /// The evaluation set: JSONL token sequences or a safetensors file of inputs and labels.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Architecture, when config.json does not say (llama, mistral, qwen2, bert, mlp).
    #[arg(long)]
    pub architecture: Option<String>,
    /// The figure the budget applies to.
    #[arg(long)]
    pub metric: Option<String>,
    /// The largest acceptable drop of the metric.
    #[arg(long)]
    pub max_drop: Option<f64>,
    /// Write the raw outputs of both models on the first item to this safetensors file
    /// (`original.<name>`, `compressed.<name>`) instead of evaluating.
    #[arg(long)]
    pub outputs: Option<PathBuf>,
    /// Keep the original decoder's outputs on the set in this file, and use them on later runs
    /// with the same original, config and set instead of running the original again (as
    /// llama-perplexity's --kl-divergence-base).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses a byte size: a plain number, or a number with B, KB, MB, GB, TB (powers of 1000) or
/// KiB, MiB, GiB, TiB (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (examples: 1048576, 500MiB, 64GiB)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// `OUTPUTSxINPUTS`, both positive.
fn parse_shape(text: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match text.split_once(['x', 'X', '×']) {
        Some((a, b)) => match (parse(a), parse(b)) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(format!("{text:?} is not OUTPUTSxINPUTS with both positive")),
        },
        None => Err(format!("{text:?} is not OUTPUTSxINPUTS")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_as_outputs_by_inputs() {
        assert_eq!(parse_shape("4096x11008"), Ok((4096, 11008)));
        assert_eq!(parse_shape("576×1536"), Ok((576, 1536)));
        assert!(parse_shape("0x5").is_err());
        assert!(parse_shape("4096").is_err());
    }

    #[test]
    fn sizes_accept_decimal_and_binary_units() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        assert_eq!(parse_size("1.5 GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("64GiB").unwrap(), 64 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
