//! The HTTP listener: accepts connections up to a cap, serves each with hyper under a time
//! limit for reading each request's head (which also ends idle keep-alive connections), answers
//! connections past the cap with a 503 problem+json and closes them, and on shutdown lets the
//! connections finish their requests within the grace period.
//!
//! axum's own `serve` has none of these bounds: an idle, slow-header or slow-body connection
//! would be held forever, and enough of them exhaust the file descriptors and lock everyone
//! out. Bodies are bounded separately, per frame, by the router's body timeout.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Most headers a request may carry.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of header names and values a request may carry.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Longest wait for a request's head, from the connection's start or the end of the
    /// previous response (so also the longest a keep-alive connection may sit idle).
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes, then waits up to `grace` for
/// the open connections' requests to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Roomier than the router's own limits on headers, so that a request over those reaches
        // the router and gets its problem+json answer (hyper's own refusals have empty bodies).
        .max_headers(MAX_HEADERS * 4)
        .max_buf_size(MAX_HEADER_BYTES * 4)
        .keep_alive(true);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors (or a connection reset before accept): back off
                    // briefly instead of spinning; idle connections are cut meanwhile.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(
                        router.oneshot(request).await.unwrap_or_else(|e| match e {}),
                    )
                }
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "requests still running after the grace period; closing"
        );
    }
}

/// A connection past the cap: one short problem+json answer, then close.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"type":"urn:squeeze:problem:too_many_connections","title":"Service Unavailable","status":503,"code":"too_many_connections","detail":"the server is at its connection limit; retry shortly"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Raises the soft limit on open files to the hard limit, so the connection cap, not the
/// kernel's default of 1,024 descriptors, decides how many clients are served. Returns the
/// soft limit in force afterwards.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the plain struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// The connection cap that fits the open-file limit: each connection holds one descriptor,
/// and the pool, blob files, rayon and PostgreSQL's socket need some of their own.
pub fn fitting_cap(requested: usize, open_files: Option<u64>) -> usize {
    const RESERVED: u64 = 256;
    match open_files {
        Some(n) => requested.min(n.saturating_sub(RESERVED).max(16) as usize),
        None => requested,
    }
}
