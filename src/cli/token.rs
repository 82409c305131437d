//! `squeeze token`: create, list and revoke API tokens, and print a dashboard sign-in link.

use super::*;

pub(super) async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::LoginUrl { team, base_url, db } => {
            crate::auth::teams::validate_name(&team).map_err(anyhow::Error::msg)?;
            let database = open(&db).await?;
            database.migrate().await?;
            let code =
                tokens::create_login_code(&database.pool, &team, crate::auth::LOGIN_CODE_TTL).await;
            database.close().await?;
            println!("{}/#login={}", base_url.trim_end_matches('/'), code?);
            Ok(())
        }
        TokenCommand::Create {
            team,
            name,
            admin,
            db,
        } => {
            crate::auth::teams::validate_name(&team).map_err(anyhow::Error::msg)?;
            let database = open(&db).await?;
            database.migrate().await?;
            let issued = tokens::create(&database.pool, &team, &name, admin).await;
            database.close().await?;
            let issued = issued?;
            eprintln!(
                "token {} for team {:?} (shown once; store it now):",
                issued.id, issued.team
            );
            println!("{}", issued.token);
            Ok(())
        }
        TokenCommand::List { team, json, db } => {
            let database = open(&db).await?;
            database.migrate().await?;
            let list = tokens::list(&database.pool, team.as_deref()).await;
            database.close().await?;
            let list = list?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<16}  {:<20}  {:<12}  {:<5}  {:<20}  STATE",
                "ID", "TEAM", "NAME", "PREFIX", "ADMIN", "CREATED"
            );
            for t in list {
                let state = match t.revoked_at {
                    Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    None => "active".to_owned(),
                };
                println!(
                    "{:<36}  {:<16}  {:<20}  {:<12}  {:<5}  {:<20}  {}",
                    t.id,
                    t.team,
                    t.name,
                    t.display_prefix,
                    if t.admin { "yes" } else { "no" },
                    t.created_at.format("%Y-%m-%d %H:%M UTC"),
                    state
                );
            }
            Ok(())
        }
        TokenCommand::Revoke { id, db } => {
            let database = open(&db).await?;
            database.migrate().await?;
            let revoked = tokens::revoke(&database.pool, id).await;
            database.close().await?;
            if revoked? {
                println!("token {id} revoked");
                Ok(())
            } else {
                anyhow::bail!("no active token with id {id}")
            }
        }
    }
}
