//! Who am I, and signing a browser in with a single-use login code.

use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::state::AppState;
use crate::api::state::Peer;
use crate::auth::throttle::LOGIN_ATTEMPTS_PER_WINDOW;
use crate::auth::tokens::{self, IssuedToken};
use crate::auth::{Caller, Identity};
use crate::error::ApiError;

/// `/me` and `/login`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(login))
}

/// Who am I
///
/// The caller's identity: token id, team, admin flag.
#[utoipa::path(
    get,
    path = "/me",
    tag = "session",
    responses((status = 200, description = "The caller", body = Identity))
)]
async fn me(caller: Caller) -> Json<Identity> {
    Json(caller.0)
}

/// A single-use login code.
#[derive(Deserialize, utoipa::ToSchema)]
struct LoginRequest {
    /// The `sqzl_...` code from the login URL `squeeze serve` prints.
    code: String,
}

/// Sign in with a login code
///
/// Exchanges a single-use login code (from `squeeze serve --login-url` or `squeeze token
/// login-url`, valid 10 minutes and until the server restarts) for a new token of its team.
/// Needs no token; at most 10 attempts a minute from one address.
#[utoipa::path(
    post,
    path = "/login",
    tag = "session",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A new token; its secret is shown only now", body = IssuedToken),
        (status = 401, description = "Unknown, used or expired code"),
        (status = 429, description = "Too many attempts from this address; see `Retry-After`"),
    )
)]
async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    Json(body): Json<LoginRequest>,
) -> Result<Json<IssuedToken>, Response> {
    if let Some(Extension(ConnectInfo(address))) = peer
        && let Err(wait) = state.login_throttle.attempt(address.ip())
    {
        let seconds = wait.as_secs().max(1);
        let problem = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!(
                "at most {LOGIN_ATTEMPTS_PER_WINDOW} sign-in attempts a minute from one address; retry in {seconds} s"
            ),
        );
        return Err(([(RETRY_AFTER, seconds.to_string())], problem).into_response());
    }
    if body.code.len() > 128 {
        return Err(invalid_code().into_response());
    }
    match tokens::redeem_login_code(&state.db, &body.code).await {
        Ok(Some(issued)) => Ok(Json(issued)),
        Ok(None) => Err(invalid_code().into_response()),
        Err(err) => Err(ApiError::from(err).into_response()),
    }
}

fn invalid_code() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "invalid_login_code",
        "this login code is unknown, already used or expired; `squeeze token login-url` prints a new one, or sign in with a token",
    )
}
