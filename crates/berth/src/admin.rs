//! `berth admin`: accounts, robot tokens, grants, public repositories, the audit log and
//! the blob scrub, working directly on the data directory (also while the server runs:
//! the server re-reads accounts within a second, and a scrub only reads, moving damaged
//! blobs aside by atomic renames); garbage collection, in process on a data directory
//! no server holds, or through a running server's admin API; webhooks' delivery
//! status, on the data directory (the outbox) or through the admin API; and
//! replication's status and full syncs, on the data directory (the queue, which the
//! running server works) or through the admin API.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use berth_auth::{Grant, Pattern};
use berth_server::accounts::{AccountInfo, Admin};
use berth_server::config::Settings;
use berth_server::Config;
use clap::{Args, Subcommand};

/// Manage accounts, grants, public repositories; read the audit log.
///
/// Works on the registry's data directory (from --data-dir, --config, BERTH_DATA_DIR or
/// ./berth-data). Once an account exists, the registry requires credentials for
/// everything except pulls of public repositories.
#[derive(Args)]
#[command(after_help = "Examples:
  printf '%s' \"$PASSWORD\" | berth admin user add alice --password-stdin --grant 'team/*:pull,push'
  berth admin user list --json
  berth admin user list --registry registry.example.com    # through the admin API
  berth admin grant alice 'team/app:delete'
  berth admin revoke alice 'team/*'
  berth admin robot create ci --grant 'team/*:pull,push' --expires 90d
  berth admin robot list --json
  berth admin robot rotate ci      # a new secret; the old one stops working at once
  berth admin robot delete ci
  berth admin public 'library/*'
  berth admin audit --since 1d
  berth admin scrub --repair
  berth admin gc --dry-run
  berth admin gc --registry localhost:5000 --grace 30m
  berth admin gc --explain sha256:...
  berth admin usage --registry localhost:5000
  berth admin webhooks --json
  berth admin webhooks --registry localhost:5000 --ping ci
  berth admin replication status
  berth admin replication status --registry localhost:5000 --json
  berth admin replicate --rule dr-site --all")]
pub struct AdminArgs {
    /// Data directory of the registry [default: ./berth-data].
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Read the data directory from this config file.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Go through this running registry's admin API (HOST:PORT or URL; needs an account
    /// with admin on * in the Docker config, see `berth login`) instead of the data
    /// directory. Every command but scrub works this way.
    #[arg(long, value_name = "URL", global = true)]
    registry: Option<String>,
    #[command(flatten)]
    common: crate::cmd::Common,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Users: add, list, disable, enable, passwd, delete.
    #[command(subcommand)]
    User(UserCommand),
    /// Grant actions on a repository pattern: NAME 'PATTERN:pull,push,delete,admin'.
    Grant {
        name: String,
        #[arg(required = true)]
        grants: Vec<String>,
    },
    /// Remove an account's grant on a pattern.
    Revoke { name: String, pattern: String },
    /// Robot accounts for CI (long random secrets, shown once).
    #[command(subcommand)]
    Robot(RobotCommand),
    /// Make repository patterns public (anonymous pull), or list/remove them.
    Public {
        patterns: Vec<String>,
        /// Make the patterns private again.
        #[arg(long)]
        remove: bool,
        /// List public patterns.
        #[arg(long)]
        list: bool,
    },
    /// Show the audit log: logins, failed logins, pushes, tag moves, deletions, grants.
    Audit {
        /// Only events newer than this (e.g. 1h, 7d).
        #[arg(long, value_parser = berth_server::config::parse_duration)]
        since: Option<std::time::Duration>,
        /// At most this many events (the newest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Re-hash every stored blob and report damaged and missing ones; exits with status 1
    /// when damage is left in place (a damaged blob without --repair, or a missing one).
    Scrub {
        /// Move damaged blobs aside (to <data_dir>/quarantine) so that clients push them
        /// again; a missing blob is already in that state.
        #[arg(long)]
        repair: bool,
    },
    /// Collect garbage now: blob files and untagged manifests nothing keeps (see
    /// `gc_grace` and `[[gc]]` in the configuration), or say why something is kept.
    Gc(GcArgs),
    /// Storage used per repository (each blob once per repository, plus manifests)
    /// with its `[[quota]]`, and the distinct bytes stored. Reads the data directory
    /// (also beside a running server; the quotas of --config, else those the server
    /// recorded there) or asks the registry with --registry.
    Usage,
    /// Show the configured webhooks (`[[webhook]]`) with their delivery status: pending,
    /// failing and dead deliveries, last success, last error; or redeliver or ping one.
    Webhooks(WebhooksArgs),
    /// Replication to other registries (`[[replication]]`): `status` shows each rule's
    /// pending changes, lag, failures and dead changes.
    #[command(
        subcommand,
        after_help = "Examples:
  berth admin replication status
  berth admin replication status --registry localhost:5000 --json"
    )]
    Replication(ReplicationCommand),
    /// Queue a full sync of a replication rule: every tag of every repository it
    /// matches (tags the target holds cost one HEAD each; dead changes come alive).
    #[command(after_help = "Examples:
  berth admin replicate --rule dr-site --all
  berth admin replicate --rule dr-site --all --registry localhost:5000 --json")]
    Replicate(ReplicateArgs),
}

#[derive(Subcommand)]
enum ReplicationCommand {
    /// Per rule: the target, pending changes, lag (the oldest pending change's age),
    /// copies and failures so far, the last success and error, dead changes; then the
    /// latest failing changes with their errors.
    #[command(after_help = "Examples:
  berth admin replication status
  berth admin replication status --config berth.toml --json
  berth admin replication status --registry localhost:5000")]
    Status,
}

#[derive(Args)]
struct ReplicateArgs {
    /// The replication rule's name.
    #[arg(long, value_name = "NAME")]
    rule: String,
    /// Every tag of every matching repository (required: the one kind of sync).
    #[arg(long, required = true)]
    all: bool,
}

#[derive(Args)]
struct WebhooksArgs {
    /// Retry every delivery of this hook now, dead ones included.
    #[arg(long, value_name = "NAME", conflicts_with = "ping")]
    redeliver: Option<String>,
    /// Send this hook a `dev.berth.ping` event (delivered by the running server).
    #[arg(long, value_name = "NAME")]
    ping: Option<String>,
}

#[derive(Args)]
struct GcArgs {
    /// Only say what would be freed, per repository.
    #[arg(long)]
    dry_run: bool,
    /// Collect blobs and untagged manifests older than this (e.g. 30m) [default: gc_grace].
    #[arg(long, value_name = "DURATION", value_parser = berth_server::config::parse_duration)]
    grace: Option<std::time::Duration>,
    /// Say why this blob or manifest is kept (tag -> index -> manifest -> blob, or the
    /// referrer), or that it is garbage; collects nothing.
    #[arg(long, value_name = "DIGEST")]
    explain: Option<String>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Add {
        name: String,
        /// Read the password from standard input (required: never pass it as an argument).
        #[arg(long)]
        password_stdin: bool,
        /// Grants to give at once, e.g. 'team/*:pull,push'.
        #[arg(long = "grant", value_name = "GRANT")]
        grants: Vec<String>,
    },
    /// List accounts with their grants.
    List,
    /// Disable an account: it can no longer log in, and its issued tokens stop working within a
    /// second (the server re-reads account state at most once a second).
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
    /// Change a user's password (read from standard input).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account and its grants.
    Delete { name: String },
}

#[derive(Subcommand)]
enum RobotCommand {
    /// Create a robot account and print its secret once.
    Create {
        name: String,
        #[arg(long = "grant", value_name = "GRANT", required = true)]
        grants: Vec<String>,
        /// Expire after this long (e.g. 90d).
        #[arg(long, value_parser = berth_server::config::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List robot accounts with their grants and expiry.
    List,
    /// Give a robot a new secret, printed once; the old secret stops working at once.
    Rotate { name: String },
    /// Delete a robot account and its grants.
    Delete { name: String },
}

/// A time for people and scripts alike: RFC 3339 in UTC, never raw epoch seconds.
fn time(secs: i64) -> String {
    berth_oci::time::rfc3339(secs)
}

/// The account table of `admin user list` and `admin robot list`.
fn print_accounts(list: &[AccountRow]) {
    println!(
        "{:<24} {:<6} {:<9} {:<20} GRANTS",
        "NAME", "KIND", "STATE", "EXPIRES"
    );
    for a in list {
        let state = if a.disabled { "disabled" } else { "active" };
        let expires = a.expires_at.as_deref().unwrap_or("never");
        println!(
            "{:<24} {:<6} {:<9} {:<20} {}",
            a.name,
            a.kind,
            state,
            expires,
            a.grants.join(" ")
        );
    }
}

fn read_password(flag: bool) -> anyhow::Result<String> {
    if !flag {
        bail!("pass --password-stdin and write the password to standard input");
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    let p = s.trim_end_matches(['\n', '\r']).to_owned();
    if p.is_empty() {
        bail!("the password on standard input is empty");
    }
    Ok(p)
}

fn parse_grants(raw: &[String]) -> anyhow::Result<Vec<Grant>> {
    raw.iter()
        .map(|g| g.parse::<Grant>().with_context(|| format!("grant {g:?}")))
        .collect()
}

/// The server's configuration as `berth serve` would read it, with `--data-dir` applied.
fn config(args: &AdminArgs) -> anyhow::Result<Config> {
    crate::check_env()?;
    let env = Settings::from_env(std::env::vars_os())?;
    let mut config = Config::load(args.config.as_deref(), env)?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    Ok(config)
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    if let AdminCommand::Gc(gc_args) = &args.command {
        let remote = match &args.registry {
            Some(url) => Some(Remote::connect(url, &args.common)?),
            None => None,
        };
        let config = match remote {
            Some(_) => None,
            None => Some(config(&args)?),
        };
        return crate::cmd::block_on(gc(config.as_ref(), remote.as_ref(), gc_args, args.json));
    }
    if let AdminCommand::Usage = &args.command {
        let report = match &args.registry {
            Some(url) => {
                let remote = Remote::connect(url, &args.common)?;
                crate::cmd::block_on(async move {
                    remote.call(Method::GET, "/api/v1/admin/usage", None).await
                })?
            }
            None => crate::cmd::block_on(local_usage(&config(&args)?))?,
        };
        return print_usage(&report, args.json);
    }
    if let AdminCommand::Webhooks(hook_args) = &args.command {
        let remote = match &args.registry {
            Some(url) => Some(Remote::connect(url, &args.common)?),
            None => None,
        };
        let config = match remote {
            Some(_) => None,
            None => Some(config(&args)?),
        };
        return crate::cmd::block_on(webhooks(
            config.as_ref(),
            remote.as_ref(),
            hook_args,
            args.json,
        ));
    }
    if matches!(
        args.command,
        AdminCommand::Replication(_) | AdminCommand::Replicate(_)
    ) {
        let remote = match &args.registry {
            Some(url) => Some(Remote::connect(url, &args.common)?),
            None => None,
        };
        let config = match remote {
            Some(_) => None,
            None => Some(config(&args)?),
        };
        return crate::cmd::block_on(replication(
            config.as_ref(),
            remote.as_ref(),
            &args.command,
            args.json,
        ));
    }
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "admin".into())
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let json = args.json;
        let target = match &args.registry {
            Some(url) => {
                if matches!(args.command, AdminCommand::Scrub { .. }) {
                    bail!("scrub reads the data directory's files: run it on the registry's machine (a running server also scrubs in the background, see scrub_interval)");
                }
                Target::Remote(Remote::connect(url, &args.common)?)
            }
            None => Target::Local(Admin::open(&config(&args)?, &actor)?),
        };
        match args.command {
            AdminCommand::User(UserCommand::Add {
                name,
                password_stdin,
                grants,
            }) => {
                parse_grants(&grants)?;
                let password = read_password(password_stdin)?;
                target.user_add(&name, &password, &grants).await?;
                if json {
                    print_json(&serde_json::json!({"name": name, "kind": "user"}))?;
                } else {
                    println!("user {name} created");
                }
            }
            AdminCommand::User(UserCommand::List) => {
                let list = target.accounts(None).await?;
                if json {
                    print_json(&list)?;
                } else {
                    print_accounts(&list);
                }
            }
            AdminCommand::Robot(RobotCommand::List) => {
                let list = target.accounts(Some("robot")).await?;
                if json {
                    print_json(&list)?;
                } else {
                    print_accounts(&list);
                }
            }
            AdminCommand::Robot(RobotCommand::Rotate { name }) => {
                let secret = target.robot_rotate(&name).await?;
                if json {
                    print_json(&serde_json::json!({"name": name, "secret": secret}))?;
                } else {
                    eprintln!("robot {name} has a new secret (the old one no longer works); it is shown only now:");
                    println!("{secret}");
                }
            }
            AdminCommand::Robot(RobotCommand::Delete { name }) => {
                target.delete(&name, Some("robot")).await?;
                println!("robot {name} deleted");
            }
            AdminCommand::User(UserCommand::Disable { name }) => {
                target.set_disabled(&name, true).await?;
                println!("account {name} disabled");
            }
            AdminCommand::User(UserCommand::Enable { name }) => {
                target.set_disabled(&name, false).await?;
                println!("account {name} enabled");
            }
            AdminCommand::User(UserCommand::Passwd {
                name,
                password_stdin,
            }) => {
                let password = read_password(password_stdin)?;
                target.passwd(&name, &password).await?;
                println!("password of {name} changed");
            }
            AdminCommand::User(UserCommand::Delete { name }) => {
                target.delete(&name, None).await?;
                println!("account {name} deleted");
            }
            AdminCommand::Grant { name, grants } => {
                for g in parse_grants(&grants)? {
                    target.grant(&name, &g).await?;
                    println!("granted {g} to {name}");
                }
            }
            AdminCommand::Revoke { name, pattern } => {
                let pattern = Pattern::parse(&pattern)?;
                target.revoke(&name, &pattern).await?;
                println!("revoked {pattern} from {name}");
            }
            AdminCommand::Robot(RobotCommand::Create {
                name,
                grants,
                expires,
            }) => {
                parse_grants(&grants)?;
                let (secret, expires_at) = target.robot_create(&name, &grants, expires).await?;
                if json {
                    print_json(&serde_json::json!({"name": name, "secret": secret,
                        "expires_at": expires_at}))?;
                } else {
                    match &expires_at {
                        Some(at) => eprintln!(
                            "robot {name} created, expires {at}; its secret is shown only now:"
                        ),
                        None => eprintln!("robot {name} created; its secret is shown only now:"),
                    }
                    println!("{secret}");
                }
            }
            AdminCommand::Public {
                patterns,
                remove,
                list,
            } => {
                for p in &patterns {
                    let p = Pattern::parse(p)?;
                    if remove {
                        target.public_remove(&p).await?;
                        println!("{p} is private");
                    } else {
                        target.public_add(&p).await?;
                        println!("{p} is public (anonymous pull)");
                    }
                }
                if list || patterns.is_empty() {
                    let all = target.public_list().await?;
                    if json {
                        print_json(&all)?;
                    } else {
                        all.iter().for_each(|p| println!("{p}"));
                    }
                }
            }
            AdminCommand::Scrub { repair } => scrub(&config(&args)?, repair, json).await?,
            // Handled before the data directory is opened.
            AdminCommand::Gc(_)
            | AdminCommand::Usage
            | AdminCommand::Webhooks(_)
            | AdminCommand::Replication(_)
            | AdminCommand::Replicate(_) => {}
            AdminCommand::Audit { since, limit } => {
                let events = target.audit(since, limit).await?;
                if json {
                    print_json(&events)?;
                } else {
                    for e in events {
                        println!(
                            "{} {:<16} {:<20} {:<30} {} {}",
                            e.at, e.actor, e.action, e.target, e.detail, e.client
                        );
                    }
                }
            }
        }
        Ok(())
    })
}

/// An account as `admin user list` shows it and the admin API answers it.
#[derive(serde::Serialize, serde::Deserialize)]
struct AccountRow {
    name: String,
    kind: String,
    disabled: bool,
    expires_at: Option<String>,
    created_at: String,
    grants: Vec<String>,
}

impl From<&AccountInfo> for AccountRow {
    fn from(a: &AccountInfo) -> AccountRow {
        AccountRow {
            name: a.name.clone(),
            kind: a.kind.to_owned(),
            disabled: a.disabled,
            expires_at: a.expires_at.map(time),
            created_at: time(a.created_at),
            grants: a.grants.clone(),
        }
    }
}

/// An audit log entry as `admin audit` shows it and the admin API answers it.
#[derive(serde::Serialize, serde::Deserialize)]
struct AuditRow {
    at: String,
    actor: String,
    action: String,
    target: String,
    detail: String,
    client: String,
}

/// Where `berth admin` makes its changes: the data directory, or a running registry's
/// admin API. Both sides take the same arguments and give the same answers, so every
/// command prints the same thing either way.
enum Target {
    Local(Admin),
    Remote(Remote),
}

impl Target {
    async fn user_add(&self, name: &str, password: &str, grants: &[String]) -> anyhow::Result<()> {
        match self {
            Target::Local(a) => Ok(a.user_add(name, password, &parse_grants(grants)?).await?),
            Target::Remote(r) => {
                let body =
                    serde_json::json!({"name": name, "password": password, "grants": grants});
                r.call(Method::POST, "/api/v1/admin/users", Some(body))
                    .await?;
                Ok(())
            }
        }
    }

    /// Every account, or only those of `kind`.
    async fn accounts(&self, kind: Option<&str>) -> anyhow::Result<Vec<AccountRow>> {
        let mut rows: Vec<AccountRow> = match self {
            Target::Local(a) => a.list().await?.iter().map(AccountRow::from).collect(),
            Target::Remote(r) => {
                let v = r.call(Method::GET, "/api/v1/admin/accounts", None).await?;
                serde_json::from_value(v).context("reading the registry's account list")?
            }
        };
        if let Some(kind) = kind {
            rows.retain(|a| a.kind == kind);
        }
        Ok(rows)
    }

    /// Creates a robot; answers its secret and expiry time.
    async fn robot_create(
        &self,
        name: &str,
        grants: &[String],
        expires: Option<std::time::Duration>,
    ) -> anyhow::Result<(String, Option<String>)> {
        match self {
            Target::Local(a) => {
                let secret = a
                    .robot_create(name, &parse_grants(grants)?, expires)
                    .await?;
                let at = expires.map(|d| {
                    time(
                        berth_oci::time::now()
                            .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                    )
                });
                Ok((secret, at))
            }
            Target::Remote(r) => {
                let body = serde_json::json!({"name": name, "grants": grants,
                    "expires": expires.map(|d| d.as_secs())});
                let v = r
                    .call(Method::POST, "/api/v1/admin/robots", Some(body))
                    .await?;
                Ok((
                    v["secret"].as_str().unwrap_or_default().to_owned(),
                    v["expires_at"].as_str().map(str::to_owned),
                ))
            }
        }
    }

    async fn robot_rotate(&self, name: &str) -> anyhow::Result<String> {
        match self {
            Target::Local(a) => Ok(a.robot_rotate(name).await?),
            Target::Remote(r) => {
                let path = format!("/api/v1/admin/robots/{}/rotate", segment(name));
                let v = r.call(Method::POST, &path, None).await?;
                Ok(v["secret"].as_str().unwrap_or_default().to_owned())
            }
        }
    }

    /// Deletes an account; `kind` refuses an account of the other kind.
    async fn delete(&self, name: &str, kind: Option<&str>) -> anyhow::Result<()> {
        match (self, kind) {
            (Target::Local(a), Some("robot")) => Ok(a.robot_delete(name).await?),
            (Target::Local(a), _) => Ok(a.delete(name).await?),
            (Target::Remote(r), kind) => {
                let mut path = format!("/api/v1/admin/accounts/{}", segment(name));
                if let Some(k) = kind {
                    path.push_str(&format!("?kind={k}"));
                }
                r.call(Method::DELETE, &path, None).await?;
                Ok(())
            }
        }
    }

    async fn set_disabled(&self, name: &str, disabled: bool) -> anyhow::Result<()> {
        match self {
            Target::Local(a) => Ok(a.set_disabled(name, disabled).await?),
            Target::Remote(r) => {
                let path = format!("/api/v1/admin/accounts/{}", segment(name));
                let body = serde_json::json!({ "disabled": disabled });
                r.call(Method::PATCH, &path, Some(body)).await?;
                Ok(())
            }
        }
    }

    async fn passwd(&self, name: &str, password: &str) -> anyhow::Result<()> {
        match self {
            Target::Local(a) => Ok(a.passwd(name, password).await?),
            Target::Remote(r) => {
                let path = format!("/api/v1/admin/accounts/{}", segment(name));
                let body = serde_json::json!({ "password": password });
                r.call(Method::PATCH, &path, Some(body)).await?;
                Ok(())
            }
        }
    }

    async fn grant(&self, name: &str, grant: &Grant) -> anyhow::Result<()> {
        match self {
            Target::Local(a) => Ok(a.grant(name, grant).await?),
            Target::Remote(r) => {
                let path = format!("/api/v1/admin/accounts/{}/grants", segment(name));
                let body = serde_json::json!({ "grants": [grant.to_string()] });
                r.call(Method::POST, &path, Some(body)).await?;
                Ok(())
            }
        }
    }

    async fn revoke(&self, name: &str, pattern: &Pattern) -> anyhow::Result<()> {
        match self {
            Target::Local(a) => Ok(a.revoke(name, pattern).await?),
            Target::Remote(r) => {
                let path = format!(
                    "/api/v1/admin/accounts/{}/grants?pattern={}",
                    segment(name),
                    segment(pattern.as_str())
                );
                r.call(Method::DELETE, &path, None).await?;
                Ok(())
            }
        }
    }

    async fn public_add(&self, pattern: &Pattern) -> anyhow::Result<()> {
        match self {
            Target::Local(a) => Ok(a.public_add(pattern).await?),
            Target::Remote(r) => {
                let body = serde_json::json!({ "patterns": [pattern.as_str()] });
                r.call(Method::POST, "/api/v1/admin/public", Some(body))
                    .await?;
                Ok(())
            }
        }
    }

    async fn public_remove(&self, pattern: &Pattern) -> anyhow::Result<()> {
        match self {
            Target::Local(a) => Ok(a.public_remove(pattern).await?),
            Target::Remote(r) => {
                let path = format!("/api/v1/admin/public?pattern={}", segment(pattern.as_str()));
                r.call(Method::DELETE, &path, None).await?;
                Ok(())
            }
        }
    }

    async fn public_list(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Target::Local(a) => Ok(a.public_list().await?),
            Target::Remote(r) => {
                let v = r.call(Method::GET, "/api/v1/admin/public", None).await?;
                Ok(serde_json::from_value(v).context("reading the registry's public patterns")?)
            }
        }
    }

    async fn audit(
        &self,
        since: Option<std::time::Duration>,
        limit: usize,
    ) -> anyhow::Result<Vec<AuditRow>> {
        match self {
            Target::Local(a) => {
                let now = berth_oci::time::now();
                let since = since
                    .map(|d| now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
                    .unwrap_or(0);
                Ok(a.audit_log(since, limit)
                    .await?
                    .into_iter()
                    .map(|e| AuditRow {
                        at: time(e.at),
                        actor: e.actor,
                        action: e.action,
                        target: e.target,
                        detail: e.detail,
                        client: e.client,
                    })
                    .collect())
            }
            Target::Remote(r) => {
                let mut path = format!("/api/v1/admin/audit?limit={limit}");
                if let Some(d) = since {
                    path.push_str(&format!("&since={}", d.as_secs()));
                }
                let v = r.call(Method::GET, &path, None).await?;
                Ok(serde_json::from_value(v).context("reading the registry's audit log")?)
            }
        }
    }
}

/// A path segment or query value, percent-encoded (patterns hold `/` and `*`).
fn segment(raw: &str) -> String {
    form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

use reqwest::Method;

/// A running registry's admin API.
struct Remote {
    registry: berth_client::Registry,
    host: String,
}

impl Remote {
    fn connect(url: &str, common: &crate::cmd::Common) -> anyhow::Result<Remote> {
        let host = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let registry = common.clients()?.registry(&host)?;
        Ok(Remote { registry, host })
    }

    /// Sends a request with an optional JSON body; answers the JSON body (`null` when
    /// the response has none), or the registry's refusal as an error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let u = self.registry.url(path);
        let op = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let resp = self
            .registry
            .send(&[], |c| {
                let rb = c.request(method.clone(), &u);
                match &body {
                    Some(b) => rb.json(b),
                    None => rb,
                }
            })
            .await?;
        let resp = self.registry.check(resp, &op, &self.host).await?;
        let bytes = resp.bytes().await?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("reading the answer to {op}"))
    }
}

/// `berth admin scrub`: a full-speed scrub of the data directory's blobs, printed; an
/// error (exit status 1) when damage is left in place.
async fn scrub(config: &Config, repair: bool, json: bool) -> anyhow::Result<()> {
    use berth_server::service::{Registry, RegistryParts, ScrubOptions};
    let stores = berth_server::backends::open_meta(config, berth_server::backends::Create::No)?;
    let registry = Registry::new(RegistryParts {
        blobs: berth_server::backends::open_blobs(config)?,
        meta: stores.meta,
        policy: std::sync::Arc::new(berth_server::policy::Policy::new(&config.tag_policy)?),
        // Nothing in this process listens: the server's metrics count its own scrubs.
        events: berth_server::events::Events::default(),
        max_manifest_bytes: config.max_manifest_bytes,
        upload_idle_timeout: config.upload_idle_timeout,
    });
    let report = registry.scrub(ScrubOptions { repair, pace: None }).await?;
    if json {
        print_json(&report)?;
    } else {
        println!("checked {} blobs, {} bytes", report.checked, report.bytes);
        for c in &report.corrupt {
            let path = c.path.as_deref().unwrap_or("-");
            println!("corrupt  {} {path}: {}", c.digest, c.reason);
            if let Some(q) = &c.quarantined {
                println!("         moved aside to {q}");
            }
        }
        for m in &report.missing {
            println!(
                "missing  {} (needed by {})",
                m.digest,
                m.repositories.join(", ")
            );
        }
        println!(
            "{} corrupt ({} moved aside), {} missing",
            report.corrupt.len(),
            report.quarantined().count(),
            report.missing.len()
        );
    }
    let left = report.corrupt.len() - report.quarantined().count();
    if left > 0 {
        bail!("{left} damaged blob(s) left in place; run `berth admin scrub --repair` to move them aside so that clients push them again");
    }
    if !repair && !report.missing.is_empty() {
        bail!(
            "{} blob(s) missing from storage; clients that push them again heal them",
            report.missing.len()
        );
    }
    Ok(())
}

/// `berth admin gc`: a collection or an explanation, through `--registry` or in process.
async fn gc(
    config: Option<&Config>,
    remote: Option<&Remote>,
    args: &GcArgs,
    json: bool,
) -> anyhow::Result<()> {
    let (report, explanation) = match (remote, config) {
        (Some(r), _) => remote_gc(r, args).await?,
        (None, Some(config)) => local_gc(config, args).await?,
        (None, None) => bail!("neither a registry nor a data directory to collect in"),
    };
    if let Some(e) = explanation {
        if json {
            return print_json(&e);
        }
        println!(
            "{} is {}",
            e["digest"].as_str().unwrap_or(""),
            e["verdict"].as_str().unwrap_or("")
        );
        for r in e["reasons"].as_array().into_iter().flatten() {
            let repo = r["repository"].as_str().unwrap_or("");
            let kept = if r["kept"].as_bool().unwrap_or(false) {
                "kept"
            } else {
                "garbage"
            };
            let path: Vec<&str> = r["path"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str())
                .collect();
            let at = if repo.is_empty() {
                String::new()
            } else {
                format!("{repo}: ")
            };
            println!("  {at}{kept}: {}", r["why"].as_str().unwrap_or(""));
            if !path.is_empty() {
                println!("    {}", path.join(" -> "));
            }
        }
        return Ok(());
    }
    let Some(r) = report else { return Ok(()) };
    if json {
        return print_json(&r);
    }
    let dry = r["dry_run"].as_bool().unwrap_or(false);
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    println!(
        "{:<40} {:>10} {:>10} {:>14}",
        "REPOSITORY", "MANIFESTS", "LINKS", "BYTES UNLINKED"
    );
    for repo in r["repositories"].as_array().into_iter().flatten() {
        println!(
            "{:<40} {:>10} {:>10} {:>14}",
            repo["repository"].as_str().unwrap_or(""),
            repo["manifests"].as_u64().unwrap_or(0),
            repo["links"].as_u64().unwrap_or(0),
            repo["bytes"].as_u64().unwrap_or(0)
        );
    }
    let verb = if dry { "would delete" } else { "deleted" };
    for t in r["retention"].as_array().into_iter().flatten() {
        let delete = t["delete"].as_bool().unwrap_or(false);
        println!(
            "tag {}:{} {}: {}",
            t["repository"].as_str().unwrap_or(""),
            t["tag"].as_str().unwrap_or(""),
            match (delete, dry) {
                (true, true) => "would be deleted",
                (true, false) => "deleted",
                (false, _) => "kept",
            },
            t["why"].as_str().unwrap_or("")
        );
    }
    println!("retention {verb} {} tag(s)", n("tags_deleted"));
    println!(
        "{verb} {} blob file(s), {} bytes; {} manifest(s), {} link(s) ({} ms, longest write {:.1} ms)",
        n("blobs_deleted"),
        n("bytes_freed"),
        n("manifests_deleted"),
        n("links_removed"),
        n("duration_ms"),
        r["longest_write_ms"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

type GcAnswer = (Option<serde_json::Value>, Option<serde_json::Value>);

/// Runs in this process, refused while a server holds the data directory.
async fn local_gc(config: &Config, args: &GcArgs) -> anyhow::Result<GcAnswer> {
    use berth_server::backends::{self, BackendError};
    use berth_server::service::{GcOptions, GcSettings, Registry, RegistryParts, TagRetention};
    // Refuses a directory without a registry before anything is created in it.
    let stores = backends::open_meta(config, backends::Create::No)?;
    let _lock = match backends::lock_data_dir(config) {
        Ok(lock) => lock,
        Err(BackendError::Storage(e)) => bail!(
            "cannot collect in this process: {e}. While a server runs, collect through it: berth admin gc --registry HOST:PORT"
        ),
        Err(e) => return Err(e.into()),
    };
    // The audit log is the one subscriber here: the server's metrics count its own runs.
    let events = berth_server::events::Events::new(vec![std::sync::Arc::new(
        berth_server::subscribers::AuditSubscriber::new(stores.accounts.clone()),
    )]);
    let registry = Registry::new(RegistryParts {
        blobs: backends::open_blobs(config)?,
        meta: stores.meta,
        policy: std::sync::Arc::new(berth_server::policy::Policy::new(&config.tag_policy)?),
        events,
        max_manifest_bytes: config.max_manifest_bytes,
        upload_idle_timeout: config.upload_idle_timeout,
    })
    .with_gc(GcSettings::new(config.gc_grace, &config.gc)?)
    .with_retention(TagRetention::new(&config.retention, Some(stores.stats))?);
    if let Some(raw) = &args.explain {
        let digest: berth_oci::Digest = raw.parse().with_context(|| format!("digest {raw:?}"))?;
        let e = registry.gc_explain(&digest).await?;
        return Ok((None, Some(serde_json::to_value(e)?)));
    }
    let actor = berth_server::events::Actor {
        name: format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "admin".into())
        ),
        client: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    };
    let options = GcOptions {
        dry_run: args.dry_run,
        grace: args.grace,
        halt_after: None,
    };
    let report = registry.gc(options, actor).await?;
    Ok((Some(serde_json::to_value(report)?), None))
}

/// Asks a running server through its admin API.
async fn remote_gc(remote: &Remote, args: &GcArgs) -> anyhow::Result<GcAnswer> {
    if let Some(raw) = &args.explain {
        let digest: berth_oci::Digest = raw.parse().with_context(|| format!("digest {raw:?}"))?;
        let path = format!("/api/v1/admin/gc/explain/{digest}");
        return Ok((None, Some(remote.call(Method::GET, &path, None).await?)));
    }
    let mut body = serde_json::json!({"dry_run": args.dry_run});
    if let Some(g) = args.grace {
        body["grace"] = serde_json::json!(g.as_secs());
    }
    let report = remote
        .call(Method::POST, "/api/v1/admin/gc", Some(body))
        .await?;
    Ok((Some(report), None))
}

/// `berth admin usage` on the data directory (read only, so it works beside a running
/// server).
async fn local_usage(config: &Config) -> anyhow::Result<serde_json::Value> {
    use berth_server::backends;
    use berth_server::service::{Quotas, Registry, RegistryParts};
    let stores = backends::open_meta(config, backends::Create::No)?;
    let registry = Registry::new(RegistryParts {
        blobs: backends::open_blobs(config)?,
        meta: stores.meta,
        policy: std::sync::Arc::new(berth_server::policy::Policy::new(&config.tag_policy)?),
        events: berth_server::events::Events::new(Vec::new()),
        max_manifest_bytes: config.max_manifest_bytes,
        upload_idle_timeout: config.upload_idle_timeout,
    })
    .with_quotas(Quotas::new(&quota_rules(config)?)?);
    Ok(serde_json::to_value(registry.usage().await?)?)
}

/// The quotas of `berth admin usage` on a data directory: the `[[quota]]` rules of
/// `--config` when it has some, else those the server last recorded in the data
/// directory (it does at every start), so that the report shows the quotas without the
/// server's configuration file, as `--registry` does.
fn quota_rules(config: &Config) -> anyhow::Result<Vec<berth_server::service::QuotaRule>> {
    if !config.quota.is_empty() {
        return Ok(config.quota.clone());
    }
    Ok(berth_server::service::read_rules_file(&config.data_dir)
        .map_err(anyhow::Error::msg)?
        .unwrap_or_default())
}

/// Prints a usage report (the admin API's answer, or the local one, which is the same).
fn print_usage(report: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    println!(
        "{:<40} {:>14} {:>8} {:>10} {:>14} {:>6}",
        "REPOSITORY", "BYTES", "BLOBS", "MANIFESTS", "QUOTA", "USED"
    );
    for r in report["repositories"].as_array().into_iter().flatten() {
        let bytes = r["bytes"].as_u64().unwrap_or(0);
        let (quota, used) = match r["limit"].as_u64() {
            Some(l) => (
                l.to_string(),
                format!(
                    "{}%",
                    bytes.saturating_mul(100).checked_div(l).unwrap_or(100)
                ),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<40} {:>14} {:>8} {:>10} {:>14} {:>6}",
            r["repository"].as_str().unwrap_or(""),
            bytes,
            r["blobs"].as_u64().unwrap_or(0),
            r["manifests"].as_u64().unwrap_or(0),
            quota,
            used
        );
    }
    println!(
        "{} distinct blob(s) stored, {} bytes",
        report["stored_blobs"].as_u64().unwrap_or(0),
        report["stored_bytes"].as_u64().unwrap_or(0)
    );
    Ok(())
}

/// `berth admin webhooks`: the status report, or a redelivery or ping, through
/// `--registry` or on the data directory's outbox (with this configuration's hooks).
async fn webhooks(
    config: Option<&Config>,
    remote: Option<&Remote>,
    args: &WebhooksArgs,
    json: bool,
) -> anyhow::Result<()> {
    use berth_server::webhooks::{WebhookReport, Webhooks};
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "admin".into())
    );
    let answer: serde_json::Value = match (remote, config) {
        (Some(remote), _) => {
            let (method, path) = match (&args.redeliver, &args.ping) {
                (Some(name), _) => (
                    Method::POST,
                    format!("/api/v1/admin/webhooks/{}/redeliver", segment(name)),
                ),
                (None, Some(name)) => (
                    Method::POST,
                    format!("/api/v1/admin/webhooks/{}/ping", segment(name)),
                ),
                (None, None) => (Method::GET, "/api/v1/admin/webhooks".to_owned()),
            };
            remote.call(method, &path, None).await?
        }
        (None, None) => bail!("neither a registry nor a data directory to read"),
        (None, Some(config)) => {
            // Refuses a directory without a registry before anything is created in it.
            let stores =
                berth_server::backends::open_meta(config, berth_server::backends::Create::No)?;
            let hooks = Webhooks::new(
                &config.webhook,
                &berth_server::webhook_source(config),
                stores.accounts,
            )?;
            match (&args.redeliver, &args.ping) {
                (Some(name), _) => {
                    serde_json::json!({"redelivered": hooks.redeliver(name).await?})
                }
                (None, Some(name)) => serde_json::json!({"id": hooks.ping(name, &actor).await?}),
                (None, None) => serde_json::to_value(hooks.report().await?)?,
            }
        }
    };
    if json {
        return print_json(&answer);
    }
    if let Some(n) = answer.get("redelivered") {
        println!(
            "{n} deliver(ies) of {} are due now",
            args.redeliver.as_deref().unwrap_or("")
        );
        return Ok(());
    }
    if let Some(id) = answer.get("id").and_then(|v| v.as_str()) {
        println!(
            "ping {id} queued for {}",
            args.ping.as_deref().unwrap_or("")
        );
        return Ok(());
    }
    let report: WebhookReport = serde_json::from_value(answer)?;
    println!(
        "{:<20} {:>8} {:>8} {:>6} {:<21} {:<21} {:<40} LAST ERROR",
        "NAME", "PENDING", "FAILING", "DEAD", "LAST SUCCESS", "LAST FAILURE", "URL"
    );
    let none = || "-".to_owned();
    for h in report.webhooks.iter().chain(&report.unconfigured) {
        println!(
            "{:<20} {:>8} {:>8} {:>6} {:<21} {:<21} {:<40} {}",
            h.name,
            h.pending,
            h.failing,
            h.dead,
            h.last_success.clone().unwrap_or_else(none),
            h.last_failure.clone().unwrap_or_else(none),
            h.url.clone().unwrap_or_else(|| "(not configured)".into()),
            h.last_error.clone().unwrap_or_else(none)
        );
    }
    if report.webhooks.is_empty() && report.unconfigured.is_empty() {
        println!("no webhook is configured ([[webhook]] in the configuration file)");
    }
    Ok(())
}

/// `berth admin replication status` and `berth admin replicate`: through `--registry`,
/// or on the data directory's queue with this configuration's rules (a running server
/// replicates what is queued there within a second).
async fn replication(
    config: Option<&Config>,
    remote: Option<&Remote>,
    command: &AdminCommand,
    json: bool,
) -> anyhow::Result<()> {
    use berth_server::replication::{Replication, ReplicationReport, SyncReport};
    let sync = match command {
        AdminCommand::Replicate(a) => Some(a.rule.as_str()),
        _ => None,
    };
    let answer: serde_json::Value = match (remote, config) {
        (Some(remote), _) => match sync {
            Some(name) => {
                let path = format!("/api/v1/admin/replication/{}/sync", segment(name));
                remote.call(Method::POST, &path, None).await?
            }
            None => {
                remote
                    .call(Method::GET, "/api/v1/admin/replication", None)
                    .await?
            }
        },
        (None, None) => bail!("neither a registry nor a data directory to read"),
        (None, Some(config)) => {
            // Refuses a directory without a registry before anything is created in it.
            let stores =
                berth_server::backends::open_meta(config, berth_server::backends::Create::No)?;
            let repl = Replication::new(&config.replication, stores.accounts, stores.meta, false)?;
            match sync {
                Some(name) => serde_json::to_value(repl.sync(name).await?)?,
                None => serde_json::to_value(repl.report().await?)?,
            }
        }
    };
    if json {
        return print_json(&answer);
    }
    if sync.is_some() {
        let r: SyncReport = serde_json::from_value(answer)?;
        println!(
            "{} tag(s) of {} repositor(ies) queued for replication by {}",
            r.queued, r.repositories, r.rule
        );
        return Ok(());
    }
    let report: ReplicationReport = serde_json::from_value(answer)?;
    let none = || "-".to_owned();
    println!(
        "{:<16} {:>7} {:>7} {:>5} {:>8} {:>7} {:>8} {:<21} {:<32} LAST ERROR",
        "RULE", "PENDING", "FAILING", "DEAD", "LAG", "COPIED", "FAILURES", "LAST SUCCESS", "TARGET"
    );
    for r in report.rules.iter().chain(&report.unconfigured) {
        println!(
            "{:<16} {:>7} {:>7} {:>5} {:>8} {:>7} {:>8} {:<21} {:<32} {}",
            r.name,
            r.pending,
            r.failing,
            r.dead,
            r.lag_seconds.map_or_else(none, |s| format!("{s}s")),
            r.copied,
            r.failures,
            r.last_success.clone().unwrap_or_else(none),
            r.url.clone().unwrap_or_else(|| "(not configured)".into()),
            r.last_error.clone().unwrap_or_else(none)
        );
    }
    if report.rules.is_empty() && report.unconfigured.is_empty() {
        println!("no replication rule is configured ([[replication]] in the configuration file)");
    }
    if !report.failing.is_empty() {
        println!();
        println!(
            "{:<16} {:<40} {:<8} {:>8} {:<21} ERROR",
            "RULE", "CHANGE", "OP", "ATTEMPTS", "NEXT ATTEMPT"
        );
        for f in &report.failing {
            let sep = if f.reference.contains(':') { '@' } else { ':' };
            println!(
                "{:<16} {:<40} {:<8} {:>8} {:<21} {}",
                f.rule,
                format!("{}{sep}{}", f.repository, f.reference),
                f.operation,
                f.attempts,
                f.next_attempt.clone().unwrap_or_else(|| "dead".into()),
                f.last_error.clone().unwrap_or_else(none)
            );
        }
    }
    Ok(())
}
