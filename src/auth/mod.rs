//! Authentication and tenancy: teams, tokens, the `Caller` extractor that every team-scoped
//! handler takes, and the first-start bootstrap of the admin token.
//!
//! A request without a live bearer token gets 401 before any handler runs. Handlers receive the
//! caller's team id and pass it to every query; a resource of another team is then simply not
//! found (404), indistinguishable from a missing one.

pub mod teams;
pub mod throttle;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sqlx::PgPool;

use crate::error::ApiError;
pub use tokens::Identity;

/// Tokens longer than this are refused without a database lookup.
const MAX_TOKEN_LEN: usize = 256;
/// How long a printed login URL stays valid.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(600);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl std::ops::Deref for Caller {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.0
    }
}

impl<S> FromRequestParts<S> for Caller
where
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN)
            .ok_or_else(ApiError::unauthorized)?;
        let pool = PgPool::from_ref(state);
        match tokens::authenticate(&pool, token).await? {
            Some(identity) => Ok(Caller(identity)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// What the first-start bootstrap did.
#[derive(Debug)]
pub struct Bootstrap {
    /// A fresh single-use login code for the default team, when one was asked for.
    pub login_code: Option<String>,
    /// Where a newly generated admin token was written, if one was.
    pub admin_token_file: Option<PathBuf>,
}

/// Seeds the chosen admin token, or creates one on the very first start, voids the login codes
/// of earlier starts, and issues a new one when `login` asks for it.
pub async fn bootstrap(
    pool: &PgPool,
    data_dir: &Path,
    chosen: Option<&str>,
    login: bool,
) -> anyhow::Result<Bootstrap> {
    if let Some(token) = chosen {
        tokens::seed(
            pool,
            teams::DEFAULT_TEAM,
            "admin (SQUEEZE_ADMIN_TOKEN)",
            token,
        )
        .await?;
    }
    let mut admin_token_file = None;
    if tokens::count(pool).await? == 0 {
        let issued = tokens::create(pool, teams::DEFAULT_TEAM, "admin", true).await?;
        let path = data_dir.join("admin-token");
        write_secret(&path, &issued.token)?;
        admin_token_file = Some(path);
    }
    tokens::void_login_codes(pool).await?;
    let login_code = match login {
        true => Some(tokens::create_login_code(pool, teams::DEFAULT_TEAM, LOGIN_CODE_TTL).await?),
        false => None,
    };
    Ok(Bootstrap {
        login_code,
        admin_token_file,
    })
}

/// Writes a secret readable by the owner only (temp file, then rename).
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    writeln!(file, "{secret}")?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}
