//! The subcommands: `serve`, `migrate`, `token`, `inspect`. Output for people goes to stdout;
//! logs go to stderr; a failure is one line on stderr and a non-zero exit.

use std::io::Write;

use anyhow::Context;

use crate::app::{self, Application};
use crate::auth::tokens;
use crate::config::{Command, DbArgs, InspectArgs, LogFormat, ServeArgs, TokenCommand};
use crate::formats::safetensors;
use crate::store::db::{ClusterPolicy, Database};

/// Sets up logging to stderr; `RUST_LOG` (or `SQUEEZE_LOG`) filters, default `info`.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("SQUEEZE_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    }
}

async fn open(db: &DbArgs) -> anyhow::Result<Database> {
    std::fs::create_dir_all(&db.data_dir)
        .with_context(|| format!("creating the data folder {}", db.data_dir.display()))?;
    Database::open(
        db.database_url.as_deref(),
        &db.data_dir,
        ClusterPolicy::StopIfStarted,
        2,
    )
    .await
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let app = Application::build(args).await?;
    let addr = app.local_addr();
    // Scripts read these lines: keep their shape.
    println!("squeeze listening on http://{addr}");
    println!(
        "dashboard sign-in (single use, valid 1 hour): {}",
        app.login_url()
    );
    if let Some(path) = app.admin_token_file() {
        println!("admin token written to {}", path.display());
    }
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, "serving");
    app.run_until(app::shutdown_signal()).await
}

async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
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

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
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
    let name_width = header
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 80);
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
