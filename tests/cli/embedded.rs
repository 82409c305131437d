//! `squeeze serve` without DATABASE_URL: its own PostgreSQL, created once, reused, stopped.

use std::os::unix::fs::PermissionsExt;

use crate::common::{sha256_hex, small_model};
use crate::{Server, cluster_running, data_dir, squeeze};

async fn upload(base: &str, token: &str, name: &str, body: Vec<u8>) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/models?name={name}"))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn model_names(base: &str, token: &str) -> Vec<String> {
    let list: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/models"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn serve_runs_its_own_postgres_keeps_data_across_restarts_and_stops_it_on_exit() {
    let dir = data_dir();
    let server = Server::start(dir.path(), &[]);
    assert!(cluster_running(dir.path()));
    assert!(
        server
            .stdout_lines
            .iter()
            .any(|l| l.contains("/#login=sqzl_")),
        "{:?}",
        server.stdout_lines
    );
    let token_file = dir.path().join("admin-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(token.starts_with("sqz_"));
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let settings = std::fs::read_to_string(dir.path().join("postgres/squeeze.conf")).unwrap();
    assert!(
        settings.contains("listen_addresses = ''"),
        "no TCP port for the private cluster"
    );

    let file = small_model(5);
    let model = upload(&server.base, &token, "kept", file.clone()).await;
    assert_eq!(model["sha256"], sha256_hex(&file));

    // A helper command reaches the same cluster while serve runs, and leaves it running.
    let (status, stdout, stderr) = squeeze(&[
        "token",
        "create",
        "--team",
        "other",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(status.success(), "{stderr}");
    let other = stdout.trim().to_owned();
    assert!(other.starts_with("sqz_"));
    assert!(cluster_running(dir.path()));

    assert!(server.terminate().success());
    assert!(
        !cluster_running(dir.path()),
        "serve must stop its cluster on exit"
    );

    let server = Server::start(dir.path(), &[]);
    assert!(
        !server
            .stdout_lines
            .iter()
            .any(|l| l.contains("admin token written")),
        "a second start must not mint another admin token"
    );
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    assert_eq!(model_names(&server.base, &token).await, ["kept"]);
    assert!(model_names(&server.base, &other).await.is_empty());
    assert!(server.terminate().success());
    assert!(!cluster_running(dir.path()));
}

#[tokio::test]
async fn a_chosen_admin_token_is_seeded_instead_of_a_generated_one() {
    let dir = data_dir();
    let chosen = "sqz_chosen_0123456789abcdef0123";
    let server = Server::start(dir.path(), &[("SQUEEZE_ADMIN_TOKEN", chosen)]);
    assert!(!dir.path().join("admin-token").exists());
    let me: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/me", server.base))
        .bearer_auth(chosen)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["team"], "default");
    assert_eq!(me["admin"], true);
    assert!(server.terminate().success());
}

/// A `squeeze worker` on the data folder, stopped (SIGTERM) and reaped by [`stop`].
fn start_worker(dir: &std::path::Path) -> std::process::Child {
    std::process::Command::new(crate::common::squeeze_bin())
        .args(["worker", "--data-dir"])
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env("SQUEEZE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut child: std::process::Child) {
    crate::sigterm(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn owner(dir: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("postgres.owner"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[tokio::test]
async fn only_the_owner_stops_the_cluster_and_hands_it_over_while_others_use_it() {
    let dir = data_dir();
    // A worker starts the cluster; serve joins; stopping serve leaves it to the worker.
    let worker = start_worker(dir.path());
    let worker_pid = worker.id();
    wait_until("the worker starts the cluster", || {
        owner(dir.path()) == Some(worker_pid)
    });
    let server = Server::start(dir.path(), &[]);
    // A second serve on the same folder refuses at once, naming the first.
    let (status, _, stderr) = squeeze(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("another `squeeze serve` (pid {})", server.pid())),
        "{stderr}"
    );
    assert!(server.terminate().success());
    assert!(
        cluster_running(dir.path()),
        "serve stopped a cluster it did not start"
    );
    stop(worker);
    assert!(
        !cluster_running(dir.path()),
        "the worker started it and stops it"
    );

    // serve starts it; a worker joins; serve stops first and hands the cluster over.
    let server = Server::start(dir.path(), &[]);
    let worker = start_worker(dir.path());
    let worker_pid = worker.id();
    // The worker is connected once it has registered its LISTEN for queued jobs.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(server.terminate().success());
    assert!(
        cluster_running(dir.path()),
        "stopped under a connected worker"
    );
    assert_eq!(owner(dir.path()), Some(worker_pid));
    stop(worker);
    assert!(!cluster_running(dir.path()));
}
