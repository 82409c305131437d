//! Who am I, and signing a browser in with a single-use login code.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::tokens::{self, IssuedToken};
use crate::auth::{Caller, Identity};
use crate::error::{ApiError, ApiResult};

/// `/me` and `/login`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/me", get(me))
        .route("/login", post(login))
}

/// The caller's identity: token id, team, admin flag.
async fn me(caller: Caller) -> Json<Identity> {
    Json(caller.0)
}

#[derive(Deserialize)]
struct LoginRequest {
    code: String,
}

/// Exchanges a login code (from the URL `serve` prints) for a new token of its team.
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
