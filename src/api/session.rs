//! Who am I, and signing a browser in with a single-use login code.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::tokens::{self, IssuedToken};
use crate::auth::{Caller, Identity};
use crate::error::{ApiError, ApiResult};

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
/// Exchanges a single-use login code (from the URL `serve` prints, valid for an hour) for a
/// new token of its team. Needs no token.
#[utoipa::path(
    post,
    path = "/login",
    tag = "session",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A new token; its secret is shown only now", body = IssuedToken),
        (status = 401, description = "Unknown, used or expired code"),
    )
)]
async fn login(
    State(state): State<AppState>,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Json<IssuedToken>> {
    if body.code.len() > 128 {
        return Err(invalid_code());
    }
    match tokens::redeem_login_code(&state.db, &body.code).await? {
        Some(issued) => Ok(Json(issued)),
        None => Err(invalid_code()),
    }
}

fn invalid_code() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "invalid_login_code",
        "this login code is unknown, already used or expired; restart `squeeze serve` for a new one, or sign in with a token",
    )
}
