//! API tokens and browser login codes: owns the `tokens` and `login_codes` tables.
//!
//! A token is `sqz_` followed by 43 base62 characters (256 random bits from the OS-seeded CSPRNG).
//! Only its sha256 is stored: a fast hash is right for a secret with that much entropy, and it
//! lets a request be authenticated with one indexed lookup.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::teams;

/// Every generated token starts with this, so secret scanners and people recognise it.
pub const TOKEN_PREFIX: &str = "sqz_";
/// Login codes start with this.
pub const LOGIN_PREFIX: &str = "sqzl_";
/// Shortest token accepted when a person chooses one (`SQUEEZE_ADMIN_TOKEN`).
pub const MIN_CHOSEN_TOKEN_LEN: usize = 20;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while out.len() < len {
        rand::fill(&mut bytes);
        // 248 = 4 × 62: rejecting larger bytes keeps every character equally likely.
        for b in bytes.iter().filter(|b| **b < 248) {
            if out.len() == len {
                break;
            }
            out.push(BASE62[usize::from(*b % 62)] as char);
        }
    }
    out
}

/// A new random token.
pub fn generate() -> String {
    format!("{TOKEN_PREFIX}{}", random_base62(43))
}

/// The stored form of a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn display_prefix(token: &str) -> String {
    token.chars().take(12).collect()
}

/// Checks a token a person chose.
pub fn validate_chosen(token: &str) -> Result<(), String> {
    if token.len() < MIN_CHOSEN_TOKEN_LEN
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.~".contains(&b))
    {
        return Err(format!(
            "a chosen token needs at least {MIN_CHOSEN_TOKEN_LEN} characters from A-Z a-z 0-9 _ - . ~"
        ));
    }
    Ok(())
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenRecord {
    /// Token id (what `token revoke` takes).
    pub id: Uuid,
    /// Team name.
    pub team: String,
    /// Label.
    pub name: String,
    /// First characters of the token.
    pub display_prefix: String,
    /// May administer the team.
    pub admin: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last authenticated use (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just created: the only moment its secret exists outside the client.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// Token id.
    pub id: Uuid,
    /// Team name.
    pub team: String,
    /// The secret.
    pub token: String,
}

/// The identity behind an authenticated request.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Identity {
    /// The token used.
    pub token_id: Uuid,
    /// Its team.
    pub team_id: Uuid,
    /// The team's name.
    pub team: String,
    /// Whether the token may administer the team.
    pub admin: bool,
}

/// Creates a token for `team` (creating the team if needed).
pub async fn create(
    pool: &PgPool,
    team: &str,
    name: &str,
    admin: bool,
) -> anyhow::Result<IssuedToken> {
    let token = generate();
    let id = insert(pool, team, name, &token, admin).await?;
    Ok(IssuedToken {
        id,
        team: team.to_owned(),
        token,
    })
}

async fn insert(
    pool: &PgPool,
    team: &str,
    name: &str,
    token: &str,
    admin: bool,
) -> anyhow::Result<Uuid> {
    let mut tx = pool.begin().await?;
    let team_id = teams::ensure(&mut tx, team).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into tokens (id, team_id, name, token_hash, display_prefix, admin)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(team_id)
    .bind(name)
    .bind(hash(token))
    .bind(display_prefix(token))
    .bind(admin)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Registers a token a person chose, unless a token with that secret already exists (even a
/// revoked one: restarting with the same setting must not bring a revoked token back).
pub async fn seed(pool: &PgPool, team: &str, name: &str, token: &str) -> anyhow::Result<bool> {
    validate_chosen(token).map_err(anyhow::Error::msg)?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from tokens where token_hash = $1)")
            .bind(hash(token))
            .fetch_one(pool)
            .await?;
    if exists {
        return Ok(false);
    }
    insert(pool, team, name, token, true).await?;
    Ok(true)
}

/// Number of tokens ever created (revoked included).
pub async fn count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from tokens")
        .fetch_one(pool)
        .await
}

/// Tokens, optionally of one team, oldest first.
pub async fn list(pool: &PgPool, team: Option<&str>) -> sqlx::Result<Vec<TokenRecord>> {
    sqlx::query_as(
        "select k.id, t.name as team, k.name, k.display_prefix, k.admin, k.created_at,
                k.last_used_at, k.revoked_at
         from tokens k join teams t on t.id = k.team_id
         where $1::text is null or t.name = $1
         order by k.id",
    )
    .bind(team)
    .fetch_all(pool)
    .await
}

/// Revokes a token. `false` when no live token has that id.
pub async fn revoke(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let done =
        sqlx::query("update tokens set revoked_at = now() where id = $1 and revoked_at is null")
            .bind(id)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The identity of a live token, touching its last-use time at most once a minute.
pub async fn authenticate(pool: &PgPool, token: &str) -> sqlx::Result<Option<Identity>> {
    sqlx::query_as(
        "with hit as (
             select k.id, k.team_id, t.name, k.admin, k.last_used_at
             from tokens k join teams t on t.id = k.team_id
             where k.token_hash = $1 and k.revoked_at is null
         ), touch as (
             update tokens set last_used_at = now()
             where id in (select id from hit
                          where last_used_at is null or last_used_at < now() - interval '1 minute')
         )
         select id as token_id, team_id, name as team, admin from hit",
    )
    .bind(hash(token))
    .fetch_optional(pool)
    .await
}

/// Voids every login code not yet used: a server start makes the links of earlier ones dead.
pub async fn void_login_codes(pool: &PgPool) -> sqlx::Result<u64> {
    Ok(sqlx::query("delete from login_codes")
        .execute(pool)
        .await?
        .rows_affected())
}

/// A single-use code that signs a browser into `team`, valid for `ttl`.
pub async fn create_login_code(
    pool: &PgPool,
    team: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    let code = format!("{LOGIN_PREFIX}{}", random_base62(32));
    let mut tx = pool.begin().await?;
    let team_id = teams::ensure(&mut tx, team).await?;
    sqlx::query("delete from login_codes where expires_at < now() or used_at is not null")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into login_codes (code_hash, team_id, admin, expires_at)
         values ($1, $2, true, now() + make_interval(secs => $3))",
    )
    .bind(hash(&code))
    .bind(team_id)
    .bind(ttl.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(code)
}

/// Spends a login code: a new token for its team, or `None` if the code is unknown, used or
/// expired.
pub async fn redeem_login_code(pool: &PgPool, code: &str) -> anyhow::Result<Option<IssuedToken>> {
    let mut tx = pool.begin().await?;
    let hit: Option<(Uuid, String, bool)> = sqlx::query_as(
        "update login_codes c set used_at = now()
         from teams t
         where c.code_hash = $1 and c.used_at is null and c.expires_at > now() and t.id = c.team_id
         returning c.team_id, t.name, c.admin",
    )
    .bind(hash(code))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((team_id, team, admin)) = hit else {
        return Ok(None);
    };
    let token = generate();
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into tokens (id, team_id, name, token_hash, display_prefix, admin)
         values ($1, $2, 'dashboard login', $3, $4, $5)",
    )
    .bind(id)
    .bind(team_id)
    .bind(hash(&token))
    .bind(display_prefix(&token))
    .bind(admin)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(IssuedToken { id, team, token }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_prefixed_long_and_distinct() {
        let a = generate();
        let b = generate();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), 4 + 43);
        assert!(a[4..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert!(validate_chosen(&a).is_ok());
    }

    #[test]
    fn base62_characters_are_roughly_uniform() {
        let sample = random_base62(62 * 4000);
        let mut counts = [0usize; 62];
        for c in sample.bytes() {
            counts[BASE62.iter().position(|&x| x == c).unwrap()] += 1;
        }
        // Expected 4000 each (sd ~63); a modulo bias (256 % 62) would push eight of them to ~5000.
        assert!(
            counts.iter().all(|&n| (3700..=4300).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn chosen_tokens_need_length_and_plain_characters() {
        assert!(validate_chosen("short").is_err());
        assert!(validate_chosen("has space in it 123456789").is_err());
        assert!(validate_chosen("sqz_check_0123456789abcdef").is_ok());
    }
}
