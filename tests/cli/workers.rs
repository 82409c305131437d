//! Workers as separate processes against one server's database: a SIGKILLed worker's job is
//! finished by another with one set of artifacts and no temp files; a running job cancels within
//! seconds; SIGTERM hands a running job back.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::bf16_model;
use crate::{Server, data_dir};

/// A `squeeze worker` process, killed if a failing test drops it still running.
struct WorkerProcess(Child);

impl std::ops::Deref for WorkerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start_worker(data: &Path, extra: &[&str]) -> WorkerProcess {
    let child = Command::new(crate::common::squeeze_bin())
        .args(["worker", "--data-dir"])
        .arg(data)
        .args(extra)
        .env_remove("DATABASE_URL")
        .env("SQUEEZE_LOG", "warn")
        .env("SQUEEZE_THREADS", "1")
        .stdout(Stdio::null())
        .spawn()
        .expect("squeeze worker starts");
    WorkerProcess(child)
}

/// A model whose [`slow_recipe`] job runs for seconds on one thread, so a test can act while
/// it runs: many small tensors (progress shows early) totalling 128 MiB of BF16.
fn slow_model(seed: u64) -> Vec<u8> {
    bf16_model(128, 512, 1024, seed)
}

/// A recipe slow by construction, whatever the kernels' speed: each magnitude stage selects its
/// threshold in three passes that re-run every earlier stage, so the work grows with the square
/// of the number of stages.
fn slow_recipe() -> Value {
    let stages: Vec<Value> = (1..=8)
        .map(|i| json!({"prune": {"method": "magnitude", "sparsity": f64::from(i) * 0.05}}))
        .chain([json!({"quantize": {"scheme": "int", "bits": 8}})])
        .collect();
    json!({ "stages": stages })
}

struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    fn new(server: &Server, data: &Path) -> Client {
        Client {
            base: server.base.clone(),
            token: std::fs::read_to_string(data.join("admin-token"))
                .unwrap()
                .trim()
                .to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn upload(&self, body: Vec<u8>) -> String {
        let r = self
            .http
            .post(format!("{}/api/v1/models?name=m", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn submit(&self, model_id: &str) -> String {
        let r = self
            .http
            .post(format!("{}/api/v1/jobs", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"model_id": model_id, "recipe": slow_recipe()}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn cancel(&self, id: &str) {
        let r = self
            .http
            .post(format!("{}/api/v1/jobs/{id}/cancel", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }

    /// Polls the job until `done` holds.
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job = self.get(&format!("/api/v1/jobs/{id}")).await;
            if done(&job) {
                return job;
            }
            assert!(Instant::now() < deadline, "job never {what}: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn running_with_progress(job: &Value) -> bool {
    job["state"] == "running" && job["progress"]["tensors_done"].as_u64().unwrap_or(0) >= 1
}

fn temp_entries(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("blobs/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn a_killed_workers_job_is_finished_by_another_with_one_artifact_set() {
    let dir = data_dir();
    let server = Server::start(dir.path(), &[("SQUEEZE_WORKERS", "0")]);
    let client = Client::new(&server, dir.path());
    let model = client.upload(slow_model(1)).await;
    let id = client.submit(&model).await;

    let mut first = start_worker(dir.path(), &["--lease-secs", "2"]);
    client.wait_for(&id, "ran", running_with_progress).await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        !temp_entries(dir.path()).is_empty(),
        "the killed worker left its partial output"
    );

    let mut second = start_worker(dir.path(), &["--lease-secs", "2"]);
    let job = client
        .wait_for(&id, "finished", |j| {
            j["state"] == "succeeded" || j["state"] == "failed"
        })
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 2);
    let files = client.get(&format!("/api/v1/jobs/{id}/files")).await;
    let names = crate::common::item_strings(&files, "name");
    // compressed-tensors, the format an int8 recipe writes: config.json holds its scheme.
    assert_eq!(names, ["config.json", "model.safetensors", "recipe.json"]);
    // The attempt's folder goes when the attempt ends, just after the job is published as
    // succeeded: give the worker a moment past that commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !temp_entries(dir.path()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        temp_entries(dir.path()).is_empty(),
        "temp files left: {:?}",
        temp_entries(dir.path())
    );
    crate::sigterm(second.id());
    assert!(second.wait().unwrap().success());
    assert!(server.terminate().success());
}

#[tokio::test]
async fn a_running_job_cancels_within_seconds_and_sigterm_hands_a_job_back() {
    let dir = data_dir();
    let server = Server::start(dir.path(), &[("SQUEEZE_WORKERS", "0")]);
    let client = Client::new(&server, dir.path());
    let model = client.upload(slow_model(2)).await;

    let mut worker = start_worker(dir.path(), &["--shutdown-grace-secs", "0"]);
    let id = client.submit(&model).await;
    client.wait_for(&id, "ran", running_with_progress).await;
    let asked = Instant::now();
    client.cancel(&id).await;
    let job = client
        .wait_for(&id, "canceled", |j| j["state"] == "canceled")
        .await;
    let seconds = asked.elapsed().as_secs_f64();
    println!("cancel of a running job took {seconds:.2} s");
    assert!(seconds < 10.0, "cancel took {seconds:.1} s");
    let files = client.get(&format!("/api/v1/jobs/{id}/files")).await;
    assert!(
        files["items"].as_array().unwrap().is_empty(),
        "a canceled job publishes nothing: {job}"
    );

    // SIGTERM with no grace: the running job goes back to the queue, its attempt not counted.
    let id = client.submit(&model).await;
    client.wait_for(&id, "ran", running_with_progress).await;
    crate::sigterm(worker.id());
    let status = worker.wait().unwrap();
    assert!(status.success(), "the worker exits cleanly: {status}");
    let job = client.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["attempt"], 0);

    let mut next = start_worker(dir.path(), &[]);
    let job = client
        .wait_for(&id, "finished", |j| j["state"] == "succeeded")
        .await;
    assert_eq!(job["attempt"], 1);
    crate::sigterm(next.id());
    assert!(next.wait().unwrap().success());
    assert!(server.terminate().success());
}
