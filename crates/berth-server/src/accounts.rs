//! Account administration: users, robots, grants, public patterns and the audit log.
//!
//! `berth admin` uses this directly on the data directory (SQLite allows it while the
//! server runs, and the server re-reads accounts within a second). Every change is
//! written to the audit log with the acting administrator.
//!
//! Creating an account also writes the "accounts enabled" marker ([`MARKER`]) in the
//! data directory: from then on a registry with no account is closed, never open (see
//! [`crate::auth`]), until an administrator creates an account or deletes the marker.

use std::sync::Arc;
use std::time::Duration;

use berth_auth::grant::GrantError;
use berth_auth::secret::{self, SecretError};
use berth_auth::{Grant, Pattern};
use berth_meta::{Account, AccountKind, AccountStore, AuditEvent, MetaError};
use berth_oci::time::now;
use serde::Serialize;

/// The file in the data directory that records that the registry has had accounts.
pub const MARKER: &str = "accounts-enabled";

/// Writes the accounts marker at `path` if it is not there (durably: it is what keeps
/// a registry that lost its accounts closed).
pub fn write_marker(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    if path.exists() {
        return Ok(());
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(
        b"This registry has had accounts, so it refuses to run open (without accounts).\n\
          Create an account with `berth admin user add`, or delete this file to make the\n\
          registry open to everyone deliberately.\n",
    )?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        // The directory entry must reach the disk too; a failure here is not fatal.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Why an administrative change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Backend(#[from] crate::backends::BackendError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("account {0:?} does not exist")]
    NoAccount(String),
    #[error("account name {0:?} is invalid: use 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")]
    BadName(String),
    #[error("{0}")]
    NotFound(String),
    #[error("cannot write the accounts marker {path}: {source}")]
    Marker {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An account as shown to administrators (never with its secret).
#[derive(Debug, Clone, Serialize)]
pub struct AccountInfo {
    pub name: String,
    pub kind: &'static str,
    pub disabled: bool,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub grants: Vec<String>,
}

/// Account administration on an [`AccountStore`].
pub struct Admin {
    store: Arc<dyn AccountStore>,
    actor: String,
    /// Where the changes come from, as the audit log records it (`cli`, or the admin
    /// API client's address).
    client: String,
    /// The accounts marker to write when an account is created.
    marker: Option<std::path::PathBuf>,
}

fn check_name(name: &str) -> Result<(), AdminError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AdminError::BadName(name.to_owned()))
    }
}

impl Admin {
    /// Administration of the metadata database `config` names, acting as `actor`. A data
    /// directory that holds no registry is refused (a typo must not administer a new,
    /// empty database while the real registry stays as it was).
    pub fn open(config: &crate::Config, actor: &str) -> Result<Admin, AdminError> {
        let stores = crate::backends::open_meta(config, crate::backends::Create::No)?;
        let mut admin = Admin::new(stores.accounts, actor);
        admin.marker = Some(config.data_dir.join(MARKER));
        Ok(admin)
    }

    /// [`Admin::open`] on the default backends of `data_dir`.
    pub fn open_dir(data_dir: &std::path::Path, actor: &str) -> Result<Admin, AdminError> {
        let config = crate::Config {
            data_dir: data_dir.to_owned(),
            ..Default::default()
        };
        Admin::open(&config, actor)
    }

    pub fn new(store: Arc<dyn AccountStore>, actor: &str) -> Admin {
        Admin {
            store,
            actor: actor.to_owned(),
            client: "cli".to_owned(),
            marker: None,
        }
    }

    /// Writes the accounts marker at `path` when an account is created (see
    /// [`crate::auth`]'s module doc).
    pub fn with_marker(mut self, path: Option<std::path::PathBuf>) -> Admin {
        self.marker = path;
        self
    }

    /// Records `client` as the origin of the changes in the audit log.
    pub fn with_client(mut self, client: impl Into<String>) -> Admin {
        self.client = client.into();
        self
    }

    async fn audit(&self, action: &str, target: &str, detail: &str) -> Result<(), AdminError> {
        tracing::info!(target: "berth::audit", actor = %self.actor, action, target, detail, "audit");
        self.store
            .audit_append(&AuditEvent {
                at: 0,
                actor: self.actor.clone(),
                action: action.to_owned(),
                target: target.to_owned(),
                detail: detail.to_owned(),
                client: self.client.clone(),
            })
            .await?;
        Ok(())
    }

    async fn create(
        &self,
        name: &str,
        kind: AccountKind,
        hash: String,
        expires_at: Option<i64>,
        grants: &[Grant],
    ) -> Result<(), AdminError> {
        check_name(name)?;
        self.store
            .account_create(&Account {
                name: name.to_owned(),
                kind,
                secret_hash: hash,
                disabled: false,
                expires_at,
                created_at: now(),
            })
            .await?;
        if let Some(path) = &self.marker {
            write_marker(path).map_err(|source| AdminError::Marker {
                path: path.clone(),
                source,
            })?;
        }
        self.audit(&format!("{}_add", kind.as_str()), name, "")
            .await?;
        for g in grants {
            self.grant(name, g).await?;
        }
        Ok(())
    }

    /// Creates a user with a password (hashed with argon2id).
    pub async fn user_add(
        &self,
        name: &str,
        password: &str,
        grants: &[Grant],
    ) -> Result<(), AdminError> {
        let hash = secret::hash_password(password)?;
        self.create(name, AccountKind::User, hash, None, grants)
            .await
    }

    /// Creates a robot account and returns its secret, which is shown only this once.
    pub async fn robot_create(
        &self,
        name: &str,
        grants: &[Grant],
        expires_in: Option<Duration>,
    ) -> Result<String, AdminError> {
        let secret = secret::new_robot_secret()?;
        let expires_at =
            expires_in.map(|d| now().saturating_add(d.as_secs().min(i64::MAX as u64) as i64));
        self.create(
            name,
            AccountKind::Robot,
            secret::hash_robot_secret(&secret),
            expires_at,
            grants,
        )
        .await?;
        Ok(secret)
    }

    /// The robot account `name`, refusing a user (robot commands must not change one).
    async fn robot(&self, name: &str) -> Result<Account, AdminError> {
        match self.store.account_get(name).await? {
            Some(a) if a.kind == AccountKind::Robot => Ok(a),
            Some(_) => Err(AdminError::NotFound(format!(
                "account {name:?} is a user, not a robot (see `berth admin user`)"
            ))),
            None => Err(AdminError::NoAccount(name.to_owned())),
        }
    }

    /// Gives robot `name` a new secret and returns it (shown only this once). The old
    /// secret stops working at once: the server re-reads the account within
    /// `crate::auth::ACCOUNT_TTL` and drops credentials verified against the old one.
    pub async fn robot_rotate(&self, name: &str) -> Result<String, AdminError> {
        self.robot(name).await?;
        let secret = secret::new_robot_secret()?;
        if !self
            .store
            .account_set_secret(name, &secret::hash_robot_secret(&secret))
            .await?
        {
            return Err(AdminError::NoAccount(name.to_owned()));
        }
        self.audit("robot_rotate", name, "").await?;
        Ok(secret)
    }

    /// Deletes robot `name` and its grants (a user is refused: `user delete` is for them).
    pub async fn robot_delete(&self, name: &str) -> Result<(), AdminError> {
        self.robot(name).await?;
        self.delete(name).await
    }

    /// Deletes user `name` and its grants (a robot is refused: `robot delete` is for them).
    pub async fn user_delete(&self, name: &str) -> Result<(), AdminError> {
        match self.store.account_get(name).await? {
            Some(a) if a.kind == AccountKind::User => self.delete(name).await,
            Some(_) => Err(AdminError::NotFound(format!(
                "account {name:?} is a robot, not a user (see `berth admin robot`)"
            ))),
            None => Err(AdminError::NoAccount(name.to_owned())),
        }
    }

    /// The robot accounts, with their grants.
    pub async fn robot_list(&self) -> Result<Vec<AccountInfo>, AdminError> {
        let mut all = self.list().await?;
        all.retain(|a| a.kind == AccountKind::Robot.as_str());
        Ok(all)
    }

    pub async fn passwd(&self, name: &str, password: &str) -> Result<(), AdminError> {
        let hash = secret::hash_password(password)?;
        if !self.store.account_set_secret(name, &hash).await? {
            return Err(AdminError::NoAccount(name.to_owned()));
        }
        self.audit("passwd", name, "").await
    }

    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), AdminError> {
        if !self.store.account_set_disabled(name, disabled).await? {
            return Err(AdminError::NoAccount(name.to_owned()));
        }
        self.audit(if disabled { "disable" } else { "enable" }, name, "")
            .await
    }

    pub async fn delete(&self, name: &str) -> Result<(), AdminError> {
        if !self.store.account_delete(name).await? {
            return Err(AdminError::NoAccount(name.to_owned()));
        }
        self.audit("account_delete", name, "").await
    }

    pub async fn grant(&self, name: &str, grant: &Grant) -> Result<(), AdminError> {
        if !self
            .store
            .grant_set(name, grant.pattern.as_str(), &grant.actions.to_string())
            .await?
        {
            return Err(AdminError::NoAccount(name.to_owned()));
        }
        self.audit("grant", name, &grant.to_string()).await
    }

    pub async fn revoke(&self, name: &str, pattern: &Pattern) -> Result<(), AdminError> {
        if !self.store.grant_remove(name, pattern.as_str()).await? {
            return Err(AdminError::NotFound(format!(
                "account {name:?} has no grant on {pattern}"
            )));
        }
        self.audit("revoke", name, pattern.as_str()).await
    }

    pub async fn public_add(&self, pattern: &Pattern) -> Result<(), AdminError> {
        self.store.public_add(pattern.as_str()).await?;
        self.audit("public_add", pattern.as_str(), "").await
    }

    pub async fn public_remove(&self, pattern: &Pattern) -> Result<(), AdminError> {
        if !self.store.public_remove(pattern.as_str()).await? {
            return Err(AdminError::NotFound(format!("{pattern} is not public")));
        }
        self.audit("public_remove", pattern.as_str(), "").await
    }

    pub async fn public_list(&self) -> Result<Vec<String>, AdminError> {
        Ok(self.store.public_patterns().await?)
    }

    pub async fn list(&self) -> Result<Vec<AccountInfo>, AdminError> {
        let mut out = Vec::new();
        for a in self.store.account_list().await? {
            let grants = self
                .store
                .grants(&a.name)
                .await?
                .into_iter()
                .map(|g| format!("{}:{}", g.pattern, g.actions))
                .collect();
            out.push(AccountInfo {
                name: a.name,
                kind: a.kind.as_str(),
                disabled: a.disabled,
                expires_at: a.expires_at,
                created_at: a.created_at,
                grants,
            });
        }
        Ok(out)
    }

    pub async fn audit_log(&self, since: i64, limit: usize) -> Result<Vec<AuditEvent>, AdminError> {
        Ok(self.store.audit_list(since, limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn users_robots_grants() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        crate::backends::open_meta(&config, crate::backends::Create::Yes).unwrap();
        let admin = Admin::open(&config, "tester").unwrap();
        let g: Grant = "team/*:pull,push".parse().unwrap();
        admin
            .user_add("alice", "a long password", std::slice::from_ref(&g))
            .await
            .unwrap();
        assert!(matches!(
            admin.user_add("alice", "a long password", &[]).await,
            Err(AdminError::Meta(MetaError::Conflict(_)))
        ));
        assert!(matches!(
            admin.user_add("Bad Name", "a long password", &[]).await,
            Err(AdminError::BadName(_))
        ));
        assert!(matches!(
            admin.user_add("bob", "short", &[]).await,
            Err(AdminError::Secret(SecretError::TooShort))
        ));
        let secret = admin
            .robot_create("ci", &[g], Some(Duration::from_secs(3600)))
            .await
            .unwrap();
        assert!(secret.starts_with("berth_"));
        assert!(
            dir.path().join(MARKER).exists(),
            "creating an account records that the registry has accounts"
        );
        let list = admin.list().await.unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].grants, ["team/*:pull,push"]);
        assert!(list[1].expires_at.is_some());
        assert!(matches!(
            admin.set_disabled("nobody", true).await,
            Err(AdminError::NoAccount(_))
        ));
        let log = admin.audit_log(0, 100).await.unwrap();
        assert!(log
            .iter()
            .any(|e| e.action == "robot_add" && e.target == "ci" && e.actor == "tester"));
    }

    /// Issue 18: robots could only be created. A rotated secret replaces the old one at
    /// once, also for a server that verified (and cached) the old one moments before.
    #[tokio::test]
    async fn robot_list_rotate_delete() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        let stores = crate::backends::open_meta(&config, crate::backends::Create::Yes).unwrap();
        let admin = Admin::open(&config, "tester").unwrap();
        let g: Grant = "team/*:pull".parse().unwrap();
        admin
            .user_add("alice", "a long password", std::slice::from_ref(&g))
            .await
            .unwrap();
        let old = admin.robot_create("ci", &[g], None).await.unwrap();
        let robots = admin.robot_list().await.unwrap();
        assert_eq!(
            robots.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            ["ci"]
        );
        assert_eq!(robots[0].grants, ["team/*:pull"]);

        let auth = crate::auth::Auth::new(
            stores.accounts.clone(),
            berth_auth::token::TokenKey::from_bytes(vec![7; 32]).unwrap(),
            "test".into(),
            None,
            Duration::from_secs(300),
            false,
            crate::events::Events::default(),
        );
        let client: std::net::IpAddr = [127, 0, 0, 1].into();
        assert!(auth.login("ci", &old, client).await.unwrap().is_ok());

        let new = admin.robot_rotate("ci").await.unwrap();
        assert!(new.starts_with("berth_") && new != old);
        // The server re-reads the account after ACCOUNT_TTL; the old secret was verified
        // and cached just before the rotation, and must not outlive that re-read.
        tokio::time::sleep(crate::auth::ACCOUNT_TTL + Duration::from_millis(100)).await;
        assert!(auth.login("ci", &old, client).await.unwrap().is_err());
        assert!(auth.login("ci", &new, client).await.unwrap().is_ok());
        assert!(admin
            .audit_log(0, 100)
            .await
            .unwrap()
            .iter()
            .any(|e| e.action == "robot_rotate" && e.target == "ci"));

        // Robot commands leave users alone, and say so.
        let e = admin.robot_rotate("alice").await.unwrap_err();
        assert!(e.to_string().contains("is a user, not a robot"), "{e}");
        assert!(admin.robot_delete("alice").await.is_err());
        assert!(matches!(
            admin.robot_rotate("nobody").await,
            Err(AdminError::NoAccount(_))
        ));

        admin.robot_delete("ci").await.unwrap();
        assert!(admin.robot_list().await.unwrap().is_empty());
        assert_eq!(admin.list().await.unwrap().len(), 1, "alice stays");
        tokio::time::sleep(crate::auth::ACCOUNT_TTL + Duration::from_millis(100)).await;
        assert!(auth.login("ci", &new, client).await.unwrap().is_err());
    }
}
