//! The private PostgreSQL cluster used when no `DATABASE_URL` is given.
//!
//! It lives in `<data-dir>/postgres`, is created with the system's `initdb` on first use and
//! started with `pg_ctl`, listens only on a Unix socket (no TCP port at all), and trusts only
//! connections through that socket, whose directory only the cluster's user can enter. When
//! squeeze runs as root the cluster runs as the `postgres` system user, because PostgreSQL refuses
//! to run as root. Every command that needs the database reaches the same cluster through the
//! same data folder, starting it if it is down.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;

/// Database and role created in the private cluster.
pub const DB_NAME: &str = "squeeze";
const PORT: u16 = 5432;
/// Unix socket paths are limited to 107 bytes; stay clear of it.
const MAX_SOCKET_PATH: usize = 100;

/// Errors setting up the private cluster; each message is one line a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) were found; install them (Debian/Ubuntu: \
         `sudo apt-get install postgresql`, Fedora: `sudo dnf install postgresql-server`, macOS: \
         `brew install postgresql`) or set DATABASE_URL to an existing server"
    )]
    NoBinaries,
    #[error(
        "squeeze runs as root, and PostgreSQL refuses to: create a `postgres` system user (the \
         postgresql package does) or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where the server binaries are, and who runs them.
#[derive(Debug, Clone)]
struct Runner {
    bindir: PathBuf,
    run_as: Option<(u32, u32)>,
}

impl Runner {
    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(self.bindir.join(program));
        // The cluster's user may not be able to enter the caller's working directory.
        cmd.current_dir("/");
        cmd.env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn run(&self, step: &'static str, cmd: &mut Command) -> Result<Output, EmbeddedError> {
        let out = cmd.output().map_err(|e| EmbeddedError::Step {
            step,
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(EmbeddedError::Step {
                step,
                detail: one_line(&out),
            });
        }
        Ok(out)
    }

    fn chown(&self, path: &Path) -> std::io::Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }
}

fn one_line(out: &Output) -> String {
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if line.is_empty() {
        format!("exit status {}", out.status)
    } else {
        line
    }
}

/// Finds `initdb` and `pg_ctl`: `SQUEEZE_PG_BINDIR`, then `PATH`, then the places distributions
/// install them (Debian keeps them off `PATH`, under `/usr/lib/postgresql/<major>/bin`).
pub fn locate_binaries() -> Result<PathBuf, EmbeddedError> {
    first_with_binaries(search_path())
}

/// The first folder holding both `initdb` and `pg_ctl`.
fn first_with_binaries(candidates: Vec<PathBuf>) -> Result<PathBuf, EmbeddedError> {
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .ok_or(EmbeddedError::NoBinaries)
}

fn search_path() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("SQUEEZE_PG_BINDIR") {
        candidates.push(dir.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    for parent in ["/usr/lib/postgresql", "/usr/local/lib/postgresql"] {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((major, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    if let Ok(entries) = std::fs::read_dir("/usr") {
        let mut rhel: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pgsql-"))
            .map(|e| e.path().join("bin"))
            .collect();
        rhel.sort();
        candidates.extend(rhel.into_iter().rev());
    }
    candidates.extend(
        [
            "/usr/local/pgsql/bin",
            "/opt/homebrew/bin",
            "/usr/local/bin",
        ]
        .map(PathBuf::from),
    );
    candidates
}

/// uid and gid of the `postgres` system user, read from /etc/passwd.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != "postgres" {
            return None;
        }
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a process with this pid exists (a zombie or another user's counts as alive).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A running private cluster.
#[derive(Debug)]
pub struct PostgresCluster {
    pgdata: PathBuf,
    socket_dir: PathBuf,
    runner: Runner,
    started_here: bool,
}

impl PostgresCluster {
    /// Creates the cluster on first use and starts it if it is not running. Blocking.
    pub fn ensure(data_dir: &Path) -> Result<PostgresCluster, EmbeddedError> {
        let bindir = locate_binaries()?;
        let run_as = if is_root() {
            Some(postgres_user().ok_or(EmbeddedError::NoPostgresUser)?)
        } else {
            None
        };
        let runner = Runner { bindir, run_as };
        std::fs::create_dir_all(data_dir)?;
        let data_dir = data_dir.canonicalize()?;
        if run_as.is_some() {
            // The cluster's user must be able to pass through the data folder (not list it).
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&data_dir)?.permissions().mode();
            if mode & 0o001 == 0 {
                std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(mode | 0o001))?;
            }
        }
        let pgdata = data_dir.join("postgres");
        if !pgdata.join("PG_VERSION").is_file() {
            init(&runner, &pgdata)?;
        }
        let socket_dir = socket_dir_for(&pgdata, &runner)?;
        write_settings(&pgdata, &socket_dir, &runner)?;
        let mut cluster = PostgresCluster {
            pgdata,
            socket_dir,
            runner,
            started_here: false,
        };
        if !cluster.is_running() {
            cluster.start()?;
            cluster.take_ownership()?;
        } else if cluster.owner().is_none_or(|pid| !process_alive(pid)) {
            // Left running by a process that is gone (killed, or crashed): adopt it, so it
            // is stopped by someone rather than left behind.
            cluster.take_ownership()?;
        }
        Ok(cluster)
    }

    /// The file naming the process that stops the cluster when it exits.
    fn owner_file(&self) -> PathBuf {
        self.pgdata.with_file_name("postgres.owner")
    }

    /// The pid in the owner file.
    fn owner(&self) -> Option<u32> {
        std::fs::read_to_string(self.owner_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Makes this process the one that stops the cluster.
    fn take_ownership(&self) -> std::io::Result<()> {
        self.hand_over(std::process::id())
    }

    /// Makes process `pid` the one that stops the cluster.
    pub fn hand_over(&self, pid: u32) -> std::io::Result<()> {
        let file = self.owner_file();
        let temp = file.with_extension(format!("owner.{}", std::process::id()));
        std::fs::write(&temp, pid.to_string())?;
        std::fs::rename(&temp, &file)
    }

    /// Whether this process is the one to stop the cluster: it started it, adopted it, or took
    /// it over, and no other process has since.
    pub fn owned_here(&self) -> bool {
        self.owner() == Some(std::process::id())
    }

    fn is_running(&self) -> bool {
        self.runner
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.pgdata)
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn start(&mut self) -> Result<(), EmbeddedError> {
        let log = self.pgdata.join("server.log");
        let result = self.runner.run(
            "starting PostgreSQL",
            self.runner
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.pgdata)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start"]),
        );
        match result {
            Ok(_) => {
                self.started_here = true;
                Ok(())
            }
            // Another squeeze process may have started it in the meantime.
            Err(_) if self.is_running() => Ok(()),
            Err(EmbeddedError::Step { step, detail }) => {
                let tail = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | ");
                Err(EmbeddedError::Step {
                    step,
                    detail: format!("{detail} (server log: {tail})"),
                })
            }
            Err(err) => Err(err),
        }
    }

    /// Whether this process started the server (rather than finding it running).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// The data directory of the cluster.
    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// Connection options for a database of the cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(DB_NAME)
            .database(database)
    }

    /// A libpq-style URL for a database of the cluster (for logs, psql, and `DATABASE_URL`).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{DB_NAME}@localhost/{database}?host={}",
            self.socket_dir.display()
        )
    }

    /// Stops the server, waiting for it to shut down cleanly. Blocking.
    pub fn stop(&self) -> Result<(), EmbeddedError> {
        if !self.is_running() {
            return Ok(());
        }
        self.runner
            .run(
                "stopping PostgreSQL",
                self.runner
                    .command("pg_ctl")
                    .arg("-D")
                    .arg(&self.pgdata)
                    .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            )
            .map(drop)
    }
}

fn init(runner: &Runner, pgdata: &Path) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(pgdata)?;
    runner.chown(pgdata)?;
    runner.run(
        "initdb",
        runner.command("initdb").arg("-D").arg(pgdata).args([
            "-U",
            DB_NAME,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]),
    )?;
    let conf = pgdata.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf)?;
    text.push_str("\n# Written by squeeze: socket location and listening addresses.\ninclude_if_exists = 'squeeze.conf'\n");
    std::fs::write(&conf, text)?;
    Ok(())
}

/// The socket goes in the cluster's own directory, unless that path is too long for a Unix
/// socket; then in a private directory under /tmp named after the cluster's path.
fn socket_dir_for(pgdata: &Path, runner: &Runner) -> Result<PathBuf, EmbeddedError> {
    let socket = pgdata.join(format!(".s.PGSQL.{PORT}.lock"));
    if socket.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(pgdata.to_path_buf());
    }
    let digest = hex::encode(Sha256::digest(pgdata.as_os_str().as_encoded_bytes()));
    let dir = std::env::temp_dir().join(format!("squeeze-pg-{}", &digest[..16]));
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    runner.chown(&dir)?;
    Ok(dir)
}

fn write_settings(pgdata: &Path, socket_dir: &Path, runner: &Runner) -> Result<(), EmbeddedError> {
    let quoted = socket_dir.display().to_string().replace('\'', "''");
    let settings = format!(
        "# Rewritten by squeeze at every start.\nlisten_addresses = ''\nunix_socket_directories = '{quoted}'\nport = {PORT}\n"
    );
    let path = pgdata.join("squeeze.conf");
    std::fs::write(&path, settings)?;
    runner.chown(&path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_give_one_line_that_says_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let err = first_with_binaries(vec![empty.path().to_path_buf()]).unwrap_err();
        let message = err.to_string();
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
    }

    #[test]
    fn a_folder_needs_both_initdb_and_pg_ctl() {
        let half = tempfile::tempdir().unwrap();
        std::fs::write(half.path().join("initdb"), "").unwrap();
        let full = tempfile::tempdir().unwrap();
        std::fs::write(full.path().join("initdb"), "").unwrap();
        std::fs::write(full.path().join("pg_ctl"), "").unwrap();
        let found = first_with_binaries(vec![half.path().to_path_buf(), full.path().to_path_buf()])
            .unwrap();
        assert_eq!(found, full.path());
    }

    #[test]
    fn long_data_paths_put_the_socket_in_a_short_private_folder() {
        let runner = Runner {
            bindir: PathBuf::new(),
            run_as: None,
        };
        let short = Path::new("/tmp/x/postgres");
        assert_eq!(socket_dir_for(short, &runner).unwrap(), short);
        let long = PathBuf::from(format!("/tmp/{}/postgres", "d".repeat(120)));
        let dir = socket_dir_for(&long, &runner).unwrap();
        assert!(dir.as_os_str().len() < 60, "{}", dir.display());
        assert_eq!(
            dir,
            socket_dir_for(&long, &runner).unwrap(),
            "stable across runs"
        );
    }
}
