//! The one startup path, shared by `main` and the tests: open the database (or the private
//! cluster), migrate, bootstrap the admin token, open the blob store, build the router with its
//! middleware, bind the listener, and serve until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::http::{Request, Response, StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::api::state::{AppState, UploadLimits};
use crate::config::ServeArgs;
use crate::connections::ConnectionLimits;
use crate::connections::{MAX_HEADER_BYTES, MAX_HEADERS};
use crate::error::{ApiError, DatabaseDiskFull, PROBLEM_JSON};
use crate::jobs::events::JobEvents;
use crate::store::blobs::BlobStore;
use crate::store::db::Database;
use crate::worker::{WorkerConfig, WorkerPool};
use crate::{api, auth};

/// A built, bound, not yet serving application.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    database: Database,
    state: AppState,
    login_url: Option<String>,
    admin_token_file: Option<PathBuf>,
    grace: Duration,
    workers: WorkerPool,
    connection_limits: ConnectionLimits,
    /// Held while serving on a private cluster (see [`lock_data_dir`]).
    _serve_lock: Option<std::fs::File>,
}

impl Application {
    /// Everything `serve` does before accepting connections.
    pub async fn build(args: ServeArgs) -> anyhow::Result<Application> {
        let data_dir = &args.db.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data folder {}", data_dir.display()))?;
        let serve_lock = match args.db.database_url {
            Some(_) => None,
            None => Some(lock_data_dir(data_dir)?),
        };
        let database = Database::open(args.db.database_url.as_deref(), data_dir, 16).await?;
        database.migrate().await?;
        let blobs = BlobStore::open(&data_dir.join("blobs")).context("opening the blob store")?;
        match blobs.sweep_unowned() {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "removed temp files no live process owns"),
            Err(err) => tracing::warn!(error = %err, "could not sweep temp files"),
        }
        let boot = auth::bootstrap(
            &database.pool,
            data_dir,
            args.admin_token.as_deref(),
            args.login_url,
        )
        .await?;
        let open_files = crate::connections::raise_open_file_limit();
        let connection_limits = ConnectionLimits {
            max_connections: crate::connections::fitting_cap(args.max_connections, open_files),
            header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        };
        if connection_limits.max_connections < args.max_connections {
            tracing::warn!(
                open_files,
                max_connections = connection_limits.max_connections,
                "the open-file limit lowers the connection cap"
            );
        }
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("binding {}", args.addr))?;
        let local = listener.local_addr()?;
        let state = AppState {
            db: database.pool.clone(),
            blobs,
            limits: Arc::new(UploadLimits {
                max_upload: args.max_upload,
                max_dataset: args.max_dataset,
                upload_idle: Duration::from_secs(args.upload_idle_secs),
            }),
            events: JobEvents::start(database.pool.clone()),
            worker_count: args.worker.workers,
            login_throttle: Arc::default(),
            database_disk_full_at: Arc::default(),
        };
        let workers = WorkerPool::start(
            database.pool.clone(),
            state.blobs.clone(),
            WorkerConfig {
                count: args.worker.workers,
                poll: Duration::from_secs(args.worker.poll_secs.max(1)),
                ..WorkerConfig::default()
            },
            state.events.queued(),
        );
        let static_dir = args.static_dir.clone().unwrap_or_else(default_static_dir);
        Ok(Application {
            listener,
            router: router(state.clone(), &static_dir),
            database,
            login_url: boot
                .login_code
                .map(|code| format!("http://{}/#login={code}", browsable(local))),
            admin_token_file: boot.admin_token_file,
            state,
            grace: Duration::from_secs(args.shutdown_grace_secs),
            workers,
            connection_limits,
            _serve_lock: serve_lock,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The single-use dashboard sign-in URL issued at this start, when one was asked for.
    pub fn login_url(&self) -> Option<&str> {
        self.login_url.as_deref()
    }

    /// Where a freshly generated admin token was written (first start only).
    pub fn admin_token_file(&self) -> Option<&Path> {
        self.admin_token_file.as_deref()
    }

    /// Handler state (tests use it to reach the pool and the blob store).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, lets running requests finish within the grace
    /// period, then closes the pool and stops the private cluster.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections");
        };
        crate::connections::serve(
            self.listener,
            self.router,
            self.connection_limits,
            shutdown,
            self.grace,
        )
        .await;
        self.workers.shutdown().await;
        self.database.close().await
    }
}

/// One `serve` per data folder when it runs the private cluster: two would share one cluster
/// that either could stop under the other. The lock (an `flock`, released by the kernel
/// however the process ends) is held in `<data-dir>/serve.lock`, which names its pid.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = data_dir.join("serve.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if crate::store::blobs::hold_lock(&file).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        anyhow::bail!(
            "another `squeeze serve` (pid {}) is using the data folder {}; stop it first, or give this one its own --data-dir",
            holder.trim(),
            data_dir.display()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// `./static` when run from the repository, else the folder next to the sources it was built from.
fn default_static_dir() -> PathBuf {
    let local = PathBuf::from("static");
    if local.join("index.html").is_file() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("static")
    }
}

/// An address a browser can open: a wildcard bind is reached through loopback.
fn browsable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// The router with its middleware: request ids, tracing, panic capture, problem+json for every
/// error including the framework's own rejections.
pub fn router(state: AppState, static_dir: &Path) -> Router {
    let body_idle = state.limits.upload_idle;
    let dashboard = ServeDir::new(static_dir).append_index_html_on_directories(true);
    let (api, _document) = api::routes().split_for_parts();
    let disk_full_at = state.database_disk_full_at.clone();
    let routes = api
        .fallback_service(dashboard)
        .with_state(state)
        .layer(middleware::map_response(move |response: Response<Body>| {
            let disk_full_at = disk_full_at.clone();
            async move {
                if response.extensions().get::<DatabaseDiskFull>().is_some() {
                    *disk_full_at
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                        Some(std::time::Instant::now());
                }
                response
            }
        }))
        .layer(middleware::from_fn(check_request_head))
        // A body that stalls is cut; uploads meet their own idle limit (408) a second sooner.
        .layer(RequestBodyTimeoutLayer::new(
            body_idle + Duration::from_secs(1),
        ))
        // Every JSON body; the upload routes lift it for their streamed bodies.
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .layer(middleware::map_response(problem_for_every_error));
    SECURITY_HEADERS
        .into_iter()
        .fold(routes, |routes, (name, value)| {
            routes.layer(security_header(name, value))
        })
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| {
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
                })
                // Server errors are logged once, where they are made (`ApiError::internal`).
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Largest request body outside the uploads: a job request with a thousand exact tensor
/// names is about 60 KiB.
pub const MAX_JSON_BODY_BYTES: usize = 256 << 10;

/// The dashboard keeps its token in `localStorage`, so no script may run but its own files:
/// no inline or foreign scripts, no framing, no sniffing, no referrer. Plot's charts carry
/// `<style>` elements and style attributes, hence inline styles only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every response (the API's included: its JSON is never a page), each
/// set only where the handler set none.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

fn security_header(name: &'static str, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(
        header::HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

/// Longest path and query.
pub const MAX_URI_BYTES: usize = 8 << 10;

/// Checks a request's head before any handler sees it: its headers' count and size (431), its
/// URI's length (414), and NUL characters in its path or query (`%00`; PostgreSQL cannot store
/// or compare them in text).
async fn check_request_head(request: Request<Body>, next: middleware::Next) -> Response<Body> {
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{} headers of {header_bytes} bytes; at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        )
        .into_response();
    }
    let uri = request.uri();
    let uri_bytes = uri.path().len() + uri.query().map_or(0, str::len);
    if uri_bytes > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the path and query are {uri_bytes} bytes; at most {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    let encoded_nul = |s: &str| {
        s.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%00"))
    };
    if encoded_nul(uri.path()) || uri.query().is_some_and(encoded_nul) {
        return ApiError::nul_character("the request's path or query").into_response();
    }
    next.run(request).await
}

/// Rewrites any error response that is not already problem+json (framework rejections, 404 of
/// unknown paths, 405) into one, so clients see one error shape everywhere.
async fn problem_for_every_error(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if status.as_u16() < 400 || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let reason = status.canonical_reason().unwrap_or("error").to_owned();
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such resource".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "method not allowed on this resource".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", text.unwrap_or(reason)),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", text.unwrap_or(reason)),
        s if s.is_server_error() => ("internal", "internal server error".to_owned()),
        _ => ("bad_request", text.unwrap_or(reason)),
    };
    let mut problem = ApiError::new(status, code, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    problem
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
