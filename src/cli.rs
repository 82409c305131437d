//! The subcommands: `serve`, `worker`, `compress`, `migrate`, `token`, `inspect`, `decompress`,
//! `bench`, `openapi`. Output for people goes to stdout;
//! logs go to stderr; a failure is one line on stderr and a non-zero exit.

use std::io::{IsTerminal, Write};

use anyhow::Context;

use crate::app::{self, Application};
use crate::auth::tokens;
use crate::config::{
    Command, CompressArgs, DbArgs, InspectArgs, LogFormat, ServeArgs, TokenCommand, WorkerArgs,
};
use crate::formats::safetensors;
use crate::store::db::Database;

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
        Command::Serve(args) => serve(args).await,
        Command::Migrate(db) => {
            let database = open(&db).await?;
            database.migrate().await?;
            println!("migrations applied");
            database.close().await
        }
        Command::Token(cmd) => token(cmd).await,
        Command::Inspect(args) => inspect(&args),
        Command::Decompress(args) => tokio::task::spawn_blocking(move || decompress(&args)).await?,
        Command::Evaluate(args) => tokio::task::spawn_blocking(move || evaluate(&args)).await?,
        Command::Demo { json } => tokio::task::spawn_blocking(move || demo(json)).await?,
        Command::Worker(args) => worker(args).await,
        Command::Compress(args) => compress(args).await,
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let app = Application::build(args).await?;
    let addr = app.local_addr();
    // Scripts read these lines: keep their shape.
    println!("squeeze listening on http://{addr}");
    match app.login_url() {
        Some(url) => println!("dashboard sign-in (single use, valid 10 minutes): {url}"),
        None => println!(
            "dashboard sign-in: `squeeze token login-url` prints a single-use link (or start with --login-url)"
        ),
    }
    if let Some(path) = app.admin_token_file() {
        println!("admin token written to {}", path.display());
    }
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, "serving");
    app.run_until(app::shutdown_signal()).await
}

async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::LoginUrl { team, base_url, db } => {
            crate::auth::teams::validate_name(&team).map_err(anyhow::Error::msg)?;
            let database = open(&db).await?;
            database.migrate().await?;
            let code =
                tokens::create_login_code(&database.pool, &team, crate::auth::LOGIN_CODE_TTL).await;
            database.close().await?;
            println!("{}/#login={}", base_url.trim_end_matches('/'), code?);
            Ok(())
        }
        TokenCommand::Create {
            team,
            name,
            admin,
            db,
        } => {
            crate::auth::teams::validate_name(&team).map_err(anyhow::Error::msg)?;
            let database = open(&db).await?;
            database.migrate().await?;
            let issued = tokens::create(&database.pool, &team, &name, admin).await;
            database.close().await?;
            let issued = issued?;
            eprintln!(
                "token {} for team {:?} (shown once; store it now):",
                issued.id, issued.team
            );
            println!("{}", issued.token);
            Ok(())
        }
        TokenCommand::List { team, json, db } => {
            let database = open(&db).await?;
            database.migrate().await?;
            let list = tokens::list(&database.pool, team.as_deref()).await;
            database.close().await?;
            let list = list?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<16}  {:<20}  {:<12}  {:<5}  {:<20}  STATE",
                "ID", "TEAM", "NAME", "PREFIX", "ADMIN", "CREATED"
            );
            for t in list {
                let state = match t.revoked_at {
                    Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    None => "active".to_owned(),
                };
                println!(
                    "{:<36}  {:<16}  {:<20}  {:<12}  {:<5}  {:<20}  {}",
                    t.id,
                    t.team,
                    t.name,
                    t.display_prefix,
                    if t.admin { "yes" } else { "no" },
                    t.created_at.format("%Y-%m-%d %H:%M UTC"),
                    state
                );
            }
            Ok(())
        }
        TokenCommand::Revoke { id, db } => {
            let database = open(&db).await?;
            database.migrate().await?;
            let revoked = tokens::revoke(&database.pool, id).await;
            database.close().await?;
            if revoked? {
                println!("token {id} revoked");
                Ok(())
            } else {
                anyhow::bail!("no active token with id {id}")
            }
        }
    }
}

/// Width of a table's name column: the longest name, within 4 to 80 characters.
fn column_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(4).clamp(4, 80)
}

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    use crate::formats::reader::{ArtifactFile, Kind};
    // Its reader names a malformed file's defect (and a missing file's error).
    let artifact = ArtifactFile::open(&args.file).with_context(|| {
        format!(
            "{} is not a valid safetensors or GGUF file",
            args.file.display()
        )
    })?;
    let file_bytes = std::fs::metadata(&args.file)?.len();
    if artifact.kind != Kind::Safetensors {
        let weights_bytes: u64 = artifact.weights.iter().map(|w| w.bytes).sum();
        let parameters: u64 = artifact
            .weights
            .iter()
            .map(|w| w.shape.iter().product::<u64>())
            .sum();
        if args.json {
            let out = serde_json::json!({
                "file": args.file, "kind": artifact.kind, "bytes": file_bytes,
                "parameters": parameters, "weights": artifact.weights,
                "bits_per_weight": file_bytes as f64 * 8.0 / parameters.max(1) as f64,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        let name_width = column_width(artifact.weights.iter().map(|w| w.name.as_str()));
        println!(
            "{:<name_width$}  {:<44}  {:<5}  {:<14}  {:>12}  {:>6}",
            "WEIGHT", "STORED AS", "DTYPE", "SHAPE", "BYTES", "BITS"
        );
        for w in &artifact.weights {
            let n = w.shape.iter().product::<u64>().max(1);
            println!(
                "{:<name_width$}  {:<44}  {:<5}  {:<14}  {:>12}  {:>6.2}",
                w.name,
                w.scheme,
                w.dtype,
                format!("{:?}", w.shape),
                w.bytes,
                w.bytes as f64 * 8.0 / n as f64
            );
        }
        println!(
            "{:?}: {} weights, {} parameters, {} bytes of weights, {} bytes in the file ({:.2} bits per parameter)",
            artifact.kind,
            artifact.weights.len(),
            parameters,
            weights_bytes,
            file_bytes,
            file_bytes as f64 * 8.0 / parameters.max(1) as f64
        );
        return Ok(());
    }
    let header = safetensors::read_header(&args.file)
        .with_context(|| format!("{} is not a valid safetensors file", args.file.display()))?;
    if args.json {
        let tensors: Vec<_> = header
            .tensors
            .iter()
            .map(|t| serde_json::json!({"name": t.name, "dtype": t.dtype.as_str(), "shape": t.shape, "bytes": t.bytes()}))
            .collect();
        let out = serde_json::json!({
            "file": args.file,
            "bytes": header.file_len(),
            "tensor_bytes": header.data_len(),
            "parameters": header.tensors.iter().map(|t| t.elements()).sum::<u64>(),
            "metadata": header.metadata,
            "tensors": tensors,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let name_width = column_width(header.tensors.iter().map(|t| t.name.as_str()));
    println!(
        "{:<name_width$}  {:<11}  {:<24}  {:>14}",
        "NAME", "DTYPE", "SHAPE", "BYTES"
    );
    for t in &header.tensors {
        let shape = format!("{:?}", t.shape);
        println!(
            "{:<name_width$}  {:<11}  {:<24}  {:>14}",
            t.name,
            t.dtype.as_str(),
            shape,
            t.bytes()
        );
    }
    let params: u64 = header.tensors.iter().map(|t| t.elements()).sum();
    println!(
        "{} tensors, {} parameters, {} bytes of tensor data, {} bytes in the file",
        header.tensors.len(),
        params,
        header.data_len(),
        header.file_len()
    );
    Ok(())
}

fn decompress(args: &crate::config::DecompressArgs) -> anyhow::Result<()> {
    use crate::formats::reader::ArtifactFile;
    use crate::formats::safetensors::TensorInfo;
    use crate::numeric::Dtype;
    let artifact = ArtifactFile::open(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    // Sizes follow from shapes, so the header goes first and one weight at a time after it.
    let mut infos = Vec::new();
    let mut offset = 0u64;
    for w in &artifact.weights {
        let dtype = Dtype::parse(&w.dtype)
            .filter(|d| crate::numeric::is_float(*d))
            .unwrap_or(Dtype::F32);
        let len = w.shape.iter().product::<u64>() * crate::numeric::float_width(dtype) as u64;
        infos.push(TensorInfo {
            name: w.name.clone(),
            dtype,
            shape: w.shape.clone(),
            begin: offset,
            end: offset + len,
        });
        offset += len;
    }
    let temp = args.output.with_extension("part");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&temp)?);
    let header = crate::pipeline::artifact::header_bytes(None, &infos);
    std::io::Write::write_all(&mut out, &header)?;
    for (w, info) in artifact.weights.iter().zip(&infos) {
        let values = artifact
            .decode(w)
            .with_context(|| format!("decoding {}", w.name))?;
        let mut bytes = vec![0u8; info.bytes() as usize];
        crate::numeric::codec::encode(info.dtype, &values, &mut bytes);
        std::io::Write::write_all(&mut out, &bytes)?;
    }
    std::io::Write::flush(&mut out)?;
    drop(out);
    std::fs::rename(&temp, &args.output)?;
    println!(
        "{} weights decoded to {} ({} bytes)",
        infos.len(),
        args.output.display(),
        header.len() as u64 + offset
    );
    Ok(())
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let database = open(&args.db).await?;
    database.migrate().await?;
    let blobs = crate::store::blobs::BlobStore::open(&args.db.data_dir.join("blobs"))
        .context("opening the blob store")?;
    match blobs.sweep_unowned() {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "removed temp files no live process owns"),
        Err(err) => tracing::warn!(error = %err, "could not sweep temp files"),
    }
    let pool = crate::worker::WorkerPool::start(
        database.pool.clone(),
        blobs,
        crate::worker::WorkerConfig {
            count: args.workers.max(1),
            grace: std::time::Duration::from_secs(args.shutdown_grace_secs),
            lease: std::time::Duration::from_secs(args.lease_secs.max(1)),
            poll: std::time::Duration::from_secs(args.poll_secs.max(1)),
        },
    );
    tracing::info!(workers = args.workers.max(1), "workers running");
    app::shutdown_signal().await;
    tracing::info!("stopping: no new jobs; running jobs finish or are handed back");
    pool.shutdown().await;
    database.close().await
}

/// The model files of a local path: one .safetensors file (named model.safetensors in the
/// output, as an upload would be), or a folder in the Hugging Face layout.
/// One line on a terminal's stderr, rewritten as the evaluation advances.
fn show_evaluation_progress(step: &crate::eval::EvalProgress) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let left = step
        .seconds_left
        .map(|s| format!(", about {} left", human_duration(s)))
        .unwrap_or_default();
    eprint!(
        "\r\x1b[2K{} {}/{} {}{left}",
        step.stage, step.done, step.total, step.unit
    );
}

/// `42 s`, `3 min 5 s`, `1 h 2 min`.
fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn evaluate(args: &crate::config::EvaluateArgs) -> anyhow::Result<()> {
    use crate::eval::{self, files};
    use crate::pipeline::InputKind;
    let inputs = local_inputs(&args.original)?;
    let weight_files: Vec<_> = inputs
        .iter()
        .filter(|f| f.kind == InputKind::Weights)
        .map(|f| f.path.clone())
        .collect();
    let config = match inputs.iter().find(|f| f.name == "config.json") {
        Some(f) => Some(
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&f.path)?)
                .with_context(|| format!("{} is not JSON", f.path.display()))?,
        ),
        None => None,
    };
    let bytes = std::fs::read(&args.dataset)
        .with_context(|| format!("reading {}", args.dataset.display()))?;
    let (dataset, stats) = eval::dataset::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.dataset.display()))?;
    let original = files::Original {
        config: config.as_ref(),
        weight_files: &weight_files,
    };
    crate::worker::cpu_pool().install(|| -> anyhow::Result<()> {
        let (arch, config, original_weights) =
            files::load_original(&original, args.architecture.as_deref())?;
        eval::dataset::check_fits(&stats, &arch)?;
        if let Some(out) = &args.outputs {
            let compressed = match &args.artifact {
                Some(dir) => eval::weights::Weights::from_artifact(
                    &files::artifact_weight_files(dir)?,
                    &original_weights.names(),
                    config["model_type"]
                        .as_str()
                        .or(args.architecture.as_deref()),
                )?,
                None => eval::weights::Weights::from_safetensors(&weight_files)?,
            };
            let mut all = std::collections::HashMap::new();
            for (side, weights) in [("original", &original_weights), ("compressed", &compressed)] {
                for (name, t) in files::outputs(&arch, &config, weights, &dataset)? {
                    all.insert(format!("{side}.{name}"), t);
                }
            }
            candle_core::safetensors::save(&all, out)
                .with_context(|| format!("writing {}", out.display()))?;
            return Ok(());
        }
        let spec = eval::EvalSpec {
            dataset_id: uuid::Uuid::nil(),
            metric: args.metric.clone(),
            max_drop: args.max_drop,
            architecture: args.architecture.clone(),
        };
        if let Some(metric) = &spec.metric {
            let allowed = arch.metrics(stats.labelled > 0);
            anyhow::ensure!(
                allowed.contains(&metric.as_str()),
                "metric {metric:?} does not apply to a {} model; use one of {}",
                arch.name(),
                allowed.join(", ")
            );
        }
        let artifact = args
            .artifact
            .clone()
            .unwrap_or_else(|| args.original.clone());
        let artifact = if artifact.is_file() {
            artifact
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default()
        } else {
            artifact
        };
        let mut report = files::evaluate_artifact(
            &original,
            &artifact,
            &dataset,
            &spec,
            None,
            &crate::numeric::Cancel::new(),
            &show_evaluation_progress,
        )?;
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        report.dataset_id = None;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", eval::render_table(&report));
        }
        Ok(())
    })
}

fn demo(json: bool) -> anyhow::Result<()> {
    use crate::eval::{dataset, files};
    use crate::pipeline::{InputFile, InputKind};
    let root = std::env::temp_dir().join(format!("squeeze-demo-{}", uuid::Uuid::new_v4().simple()));
    let model_dir = root.join("model");
    std::fs::create_dir_all(&model_dir)?;
    let result = (|| -> anyhow::Result<Vec<serde_json::Value>> {
        std::fs::write(model_dir.join("model.safetensors"), crate::demo::MODEL)?;
        std::fs::write(model_dir.join("config.json"), crate::demo::CONFIG)?;
        let inputs = vec![
            InputFile {
                name: "model.safetensors".into(),
                kind: InputKind::Weights,
                path: model_dir.join("model.safetensors"),
            },
            InputFile {
                name: "config.json".into(),
                kind: InputKind::Other,
                path: model_dir.join("config.json"),
            },
        ];
        let config: serde_json::Value = serde_json::from_slice(crate::demo::CONFIG)?;
        let weight_files = vec![model_dir.join("model.safetensors")];
        let original = files::Original {
            config: Some(&config),
            weight_files: &weight_files,
        };
        let (set, _) = dataset::parse(crate::demo::TEST_SET)?;
        let sha = file_sha256(&model_dir.join("model.safetensors"))?;
        let cancel = crate::numeric::Cancel::new();
        let mut reuse = None;
        let mut rows = Vec::new();
        for (name, recipe) in crate::demo::variants() {
            let out = root.join(name.replace(' ', "-"));
            std::fs::create_dir_all(&out)?;
            let outcome = crate::worker::cpu_pool().install(|| {
                crate::pipeline::run(&inputs, &recipe, &sha, &out, &cancel, &mut |_| {})
            })?;
            let spec = crate::eval::EvalSpec {
                dataset_id: uuid::Uuid::nil(),
                metric: None,
                max_drop: Some(0.01),
                architecture: None,
            };
            let report = crate::worker::cpu_pool().install(|| {
                files::evaluate_artifact(
                    &original,
                    &out,
                    &set,
                    &spec,
                    reuse.clone(),
                    &cancel,
                    &|_| {},
                )
            })?;
            reuse.get_or_insert_with(|| report.original.clone());
            rows.push(
                serde_json::json!({"variant": name, "summary": outcome.summary, "eval": report}),
            );
        }
        Ok(rows)
    })();
    let _ = std::fs::remove_dir_all(&root);
    let rows = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let training: serde_json::Value = serde_json::from_str(crate::demo::TRAINING)?;
    println!(
        "demo: a {}-parameter digits classifier (scikit-learn's handwritten digits, BSD-3-Clause), {} held-out images; training reported {:.2} % accuracy",
        training["parameters"],
        training["test_rows"],
        training["test_accuracy"].as_f64().unwrap_or(0.0) * 100.0
    );
    println!(
        "{:<12} {:>10} {:>7} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "variant",
        "weights",
        "ratio",
        "latency",
        "kernel",
        "accuracy",
        "σ=0.25",
        "σ=0.5",
        "σ=1",
        "accepted"
    );
    let first = &rows[0]["eval"]["original"]["metrics"];
    let pct = |m: &serde_json::Value, k: &str| {
        format!("{:.2}%", m[k].as_f64().unwrap_or(f64::NAN) * 100.0)
    };
    println!(
        "{:<12} {:>10} {:>7} {:>9.3} ms {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "original",
        format!(
            "{:.1} KiB",
            rows[0]["summary"]["bytes_in"].as_f64().unwrap_or(0.0) / 1024.0
        ),
        "1.00",
        first["latency_ms"].as_f64().unwrap_or(f64::NAN),
        "dense",
        pct(first, "accuracy"),
        pct(first, "accuracy_noise_0.25"),
        pct(first, "accuracy_noise_0.5"),
        pct(first, "accuracy_noise_1"),
        ""
    );
    for row in &rows {
        let m = &row["eval"]["compressed"]["metrics"];
        println!(
            "{:<12} {:>10} {:>7.2} {:>9.3} ms {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            row["variant"].as_str().unwrap_or(""),
            format!(
                "{:.1} KiB",
                row["summary"]["bytes_out"].as_f64().unwrap_or(0.0) / 1024.0
            ),
            row["summary"]["ratio"].as_f64().unwrap_or(f64::NAN),
            m["latency_ms"].as_f64().unwrap_or(f64::NAN),
            row["eval"]["compressed"]["kernel"].as_str().unwrap_or(""),
            pct(m, "accuracy"),
            pct(m, "accuracy_noise_0.25"),
            pct(m, "accuracy_noise_0.5"),
            pct(m, "accuracy_noise_1"),
            if row["eval"]["accepted"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
        );
    }
    println!(
        "σ: Gaussian input noise in standard deviations of the inputs; accepted: accuracy within 1 point of the original; latency: median of one-image forwards on this CPU (kernel dense: f32 weights, dequantized; native: candle's quantized matmul on the GGUF blocks)"
    );
    Ok(())
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

fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

async fn compress(args: CompressArgs) -> anyhow::Result<()> {
    use crate::jobs::recipe::{self, Recipe};
    let recipe: Recipe = match (&args.recipe, &args.preset) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            // An artifact's recipe.json holds the recipe with its provenance: take either.
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let recipe = match value.get("recipe") {
                Some(inner) if value.get("stages").is_none() => inner.clone(),
                _ => value,
            };
            serde_json::from_value(recipe)
                .with_context(|| format!("{} is not a valid recipe", path.display()))?
        }
        (None, Some(name)) => recipe::preset(name)?,
        (None, None) => anyhow::bail!("give --recipe FILE or --preset NAME"),
    };
    let inputs = local_inputs(&args.input)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let outcome = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut digests = Vec::new();
        for input in &inputs {
            digests.push(format!("{}  {}\n", file_sha256(&input.path)?, input.name));
        }
        let model_sha = if inputs.len() == 1 {
            digests[0][..64].to_owned()
        } else {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(digests.concat()))
        };
        let cancel = crate::numeric::Cancel::new();
        crate::worker::cpu_pool()
            .install(|| {
                crate::pipeline::run(
                    &inputs,
                    &recipe,
                    &model_sha,
                    &args.output,
                    &cancel,
                    &mut |_| {},
                )
            })
            .map_err(anyhow::Error::from)
    })
    .await??;
    let s = &outcome.summary;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"summary": s, "files": outcome.files, "tensors": outcome.tensors})
            )?
        );
        return Ok(());
    }
    for f in &outcome.files {
        println!("{:<40} {:>14} bytes  sha256 {}", f.name, f.bytes, f.sha256);
    }
    println!(
        "{} of {} tensors compressed; {} -> {} bytes (ratio {:.2}, {:.2} bits/weight on disk, {:.2} in theory); sparsity {:.1}%; relative error mean {:.2e}, worst {:.2e}{}; {:.2} s",
        s.compressed_tensors,
        outcome.tensors.len(),
        s.bytes_in,
        s.bytes_out,
        s.ratio,
        s.bits_per_weight,
        s.theoretical_bits_per_weight,
        s.sparsity * 100.0,
        s.mean_rel_error,
        s.worst_rel_error,
        s.worst_tensor
            .as_ref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default(),
        s.wall_seconds
    );
    Ok(())
}
