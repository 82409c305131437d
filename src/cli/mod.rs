//! The subcommands, one file each (`serve` and `worker` in serve.rs, `inspect` and `decompress`
//! in inspect.rs); `migrate`, `openapi` and `bench` dispatch here. Output for people goes to
//! stdout; logs go to stderr; a failure is one line on stderr and a non-zero exit.

use std::io::{IsTerminal, Write};

use anyhow::Context;

use crate::app::{self, Application};
use crate::auth::tokens;
use crate::config::{
    Command, CompressArgs, DbArgs, InspectArgs, LogFormat, ServeArgs, TokenCommand, WorkerArgs,
};
use crate::formats::safetensors;
use crate::formats::writer::OutputDir;
use crate::store::db::Database;
use digests::file_sha256;

mod compress;
mod demo;
mod digests;
mod evaluate;
mod inspect;
mod serve;
mod token;

/// Sets up logging to stderr; `RUST_LOG` (or `SQUEEZE_LOG`) filters, default `info`.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("SQUEEZE_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    // Colours only for a terminal: escapes in a log file are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// An error chain on one line.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}

/// Runs one subcommand.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Migrate(db) => {
            let database = open(&db).await?;
            database.migrate().await?;
            println!("migrations applied");
            database.close().await
        }
        Command::Token(cmd) => token::token(cmd).await,
        Command::Inspect(args) => inspect::inspect(&args),
        Command::Decompress(args) => {
            tokio::task::spawn_blocking(move || inspect::decompress(&args)).await?
        }
        Command::Evaluate(args) => {
            tokio::task::spawn_blocking(move || evaluate::evaluate(&args)).await?
        }
        Command::Demo { json } => tokio::task::spawn_blocking(move || demo::demo(json)).await?,
        Command::Worker(args) => serve::worker(args).await,
        Command::Compress(args) => compress::compress(args).await,
        Command::Openapi => {
            println!("{}", crate::api::openapi::document().to_pretty_json()?);
            Ok(())
        }
        Command::Bench(crate::config::BenchCommand::Pipeline {
            size,
            preset,
            work_dir,
        }) => {
            tokio::task::spawn_blocking(move || {
                crate::bench::pipeline::pipeline_bench(size, &preset, &work_dir)
            })
            .await?
        }
        Command::Bench(crate::config::BenchCommand::Kernels {
            rows,
            cols,
            repeats,
            only,
        }) => {
            tokio::task::spawn_blocking(move || {
                crate::bench::kernels::kernels_bench(rows, cols, repeats, only.as_deref())
            })
            .await?
        }
        Command::Bench(crate::config::BenchCommand::Products {
            rows,
            outputs,
            inputs,
            repeats,
        }) => {
            tokio::task::spawn_blocking(move || {
                crate::bench::products::products_bench(rows, outputs, inputs, repeats)
            })
            .await?
        }
        Command::Bench(crate::config::BenchCommand::Calibration { tokens, shape }) => {
            tokio::task::spawn_blocking(move || {
                crate::bench::calibration::calibration_bench(tokens, shape)
            })
            .await?
        }
        Command::Bench(crate::config::BenchCommand::Events {
            subscribers,
            rounds,
            work_dir,
        }) => {
            let bench = crate::bench::events::EventsBench {
                subscribers,
                rounds,
            };
            crate::bench::events::run(&bench, &work_dir).await
        }
        Command::Bench(crate::config::BenchCommand::Queue {
            jobs,
            workers,
            latency_samples,
            work_dir,
        }) => {
            let bench = crate::bench::queue::QueueBench {
                jobs,
                workers,
                latency_samples,
            };
            crate::bench::queue::run(&bench, &work_dir).await
        }
    }
}

async fn open(db: &DbArgs) -> anyhow::Result<Database> {
    std::fs::create_dir_all(&db.data_dir)
        .with_context(|| format!("creating the data folder {}", db.data_dir.display()))?;
    Database::open(db.database_url.as_deref(), &db.data_dir, 2).await
}

fn local_inputs(path: &std::path::Path) -> anyhow::Result<Vec<crate::pipeline::InputFile>> {
    use crate::pipeline::{InputFile, InputKind};
    use crate::store::ingest::{FileKind, classify};
    if path.is_file() {
        return Ok(vec![InputFile {
            name: "model.safetensors".into(),
            kind: InputKind::Weights,
            path: path.to_path_buf(),
        }]);
    }
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_file() {
            continue;
        }
        match classify(&name) {
            Ok(kind) => inputs.push(InputFile {
                kind: if kind == FileKind::Safetensors {
                    InputKind::Weights
                } else {
                    InputKind::Other
                },
                path: entry.path(),
                name,
            }),
            Err(err) => tracing::warn!(file = %name, reason = %err, "skipped"),
        }
    }
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(inputs)
}
