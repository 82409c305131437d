//! Teams: owns the `teams` table. A team is the unit of sharing: every model and job belongs to
//! one, and a token sees only its own team's rows.

use sqlx::PgConnection;
use uuid::Uuid;

/// The team created on first start.
pub const DEFAULT_TEAM: &str = "default";

/// Checks a team name: lowercase letters, digits, `.`, `_`, `-`, at most 63 characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "team name {name:?} is not allowed: use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

/// The id of the team with this name, creating it when absent.
pub async fn ensure(conn: &mut PgConnection, name: &str) -> anyhow::Result<Uuid> {
    validate_name(name).map_err(anyhow::Error::msg)?;
    sqlx::query("insert into teams (id, name) values ($1, $2) on conflict (name) do nothing")
        .bind(Uuid::now_v7())
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_scalar("select id from teams where name = $1")
        .bind(name)
        .fetch_one(&mut *conn)
        .await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn team_names_are_slugs() {
        for ok in ["default", "ml-team", "a", "team_2.prod"] {
            assert!(super::validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Team", "-x", "a b", "x/y", &"a".repeat(64)] {
            assert!(super::validate_name(bad).is_err(), "{bad}");
        }
    }
}
