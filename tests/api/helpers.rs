//! `spawn_app`: the service built through the same `Application::build` as `squeeze serve`,
//! bound to port 0, with its own database and data folder.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use squeeze::api::state::AppState;
use squeeze::app::Application;
use squeeze::config::{DbArgs, ServeArgs};
use tempfile::TempDir;

use crate::common;

pub struct TestApp {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub _data_dir: TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub struct Options {
    pub max_upload: u64,
    pub max_dataset: u64,
    pub upload_idle: Duration,
    pub workers: usize,
    /// Idle workers' poll interval (the fallback to NOTIFY).
    pub poll_secs: u64,
    pub max_connections: usize,
    pub header_timeout_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_upload: 1 << 30,
            max_dataset: 1 << 20,
            upload_idle: Duration::from_secs(60),
            workers: 1,
            poll_secs: 2,
            max_connections: 4096,
            header_timeout_secs: 15,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        squeeze::cli::init_tracing(squeeze::config::LogFormat::Text);
    }
    let data_dir = tempfile::tempdir().unwrap();
    let token = squeeze::auth::tokens::generate();
    let args = ServeArgs {
        addr: "127.0.0.1:0".parse().unwrap(),
        db: DbArgs {
            database_url: Some(common::fresh_database_url().await),
            data_dir: data_dir.path().to_path_buf(),
        },
        max_upload: options.max_upload,
        max_dataset: options.max_dataset,
        upload_idle_secs: options.upload_idle.as_secs(),
        max_connections: options.max_connections,
        header_timeout_secs: options.header_timeout_secs,
        admin_token: Some(token.clone()),
        static_dir: None,
        shutdown_grace_secs: 1,
        login_url: false,
        worker: squeeze::config::WorkerFlags {
            workers: options.workers,
            poll_secs: options.poll_secs,
        },
    };
    let app = Application::build(args).await.expect("the app builds");
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        base,
        token,
        client: reqwest::Client::new(),
        state,
        _data_dir: data_dir,
        _shutdown: tx,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A raw (octet-stream) upload with the admin token.
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.upload_as(&self.token, name, bytes).await
    }

    pub async fn upload_as(&self, token: &str, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/models"))
            .query(&[("name", name)])
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    /// A multipart upload (as a browser sends it) with the admin token.
    pub async fn upload_multipart(&self, form: reqwest::multipart::Form) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/models"))
            .header(AUTHORIZATION, self.bearer())
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// DELETE `path` (under the server's root) with the admin token.
    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .header("authorization", self.bearer())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.get_as(&self.token, path).await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// GET without a token; the JSON body of a 200.
    pub async fn json_unauthenticated(&self, path: &str) -> serde_json::Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Ids of the team's models (first page).
    pub async fn model_ids(&self) -> Vec<String> {
        self.json("/api/v1/models?limit=100").await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until no temp upload file is left (the writer thread may still be unwinding).
    pub async fn assert_no_temp_files(&self) {
        for _ in 0..50 {
            if self.state.blobs.temp_file_count().unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} temp files left behind",
            self.state.blobs.temp_file_count().unwrap()
        );
    }

    /// A token of another team.
    pub async fn token_of(&self, team: &str) -> String {
        squeeze::auth::tokens::create(&self.state.db, team, "test", false)
            .await
            .unwrap()
            .token
    }
}

pub fn is_problem(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/problem+json"))
}
