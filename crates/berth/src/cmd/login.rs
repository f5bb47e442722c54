//! `berth login` and `berth logout`: credentials in the Docker config file.

use std::io::Read;

use berth_client::auth::{
    auth_key, default_config_path, helper_erase, helper_store, Credentials, DockerConfig,
};
use clap::Args;

use super::{block_on, host_arg, Common};

/// Log in to a registry: check the credentials against it, then store them in the
/// Docker config file (base64 auth entry), where docker, skopeo and crane find them too,
/// or in the credential helper the config names (`credHelpers` for the host, else
/// `credsStore`), as docker does.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth login registry.example.com -u alice --password-stdin < token.txt
  echo \"$TOKEN\" | berth login ghcr.io -u alice --password-stdin
  DOCKER_CONFIG=/tmp/ci berth login localhost:5000 -u ci -p secret")]
pub struct LoginArgs {
    /// Registry host[:port] (docker.io for Docker Hub).
    host: String,
    /// User name.
    #[arg(long, short)]
    username: String,
    /// Password or token (prefer --password-stdin: arguments are visible to others).
    #[arg(long, short, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    common: Common,
}

/// Log out of a registry: remove its credentials from the Docker config file.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  berth logout registry.example.com")]
pub struct LogoutArgs {
    /// Registry host[:port].
    host: String,
    #[command(flatten)]
    common: Common,
}

fn config_path(common: &Common) -> anyhow::Result<std::path::PathBuf> {
    common
        .docker_config
        .clone()
        .or_else(default_config_path)
        .ok_or_else(|| anyhow::anyhow!("cannot find the Docker config: set DOCKER_CONFIG or HOME"))
}

pub fn run_login(args: LoginArgs) -> anyhow::Result<()> {
    let password = match (&args.password, args.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => anyhow::bail!("give the password with --password-stdin or --password"),
    };
    let host = host_arg(&args.host);
    let creds = Credentials {
        username: args.username.clone(),
        password,
    };
    block_on(async {
        let clients = args.common.clients()?;
        clients
            .registry_with(&host, Some(creds.clone()))
            .ping()
            .await?;
        Ok(())
    })?;
    let path = config_path(&args.common)?;
    let mut config = DockerConfig::load(&path)?;
    let stored_in = match config.helper(&host) {
        // With a credential helper, the secret goes to it, and the config file keeps
        // only an empty `auths` entry, as `docker login` does.
        Some(helper) => {
            helper_store(&helper, &auth_key(&host), &creds)?;
            config.mark_logged_in(&host);
            format!("credential helper docker-credential-{helper}")
        }
        None => {
            config.set_credentials(&host, &creds);
            path.display().to_string()
        }
    };
    config.save()?;
    if !args.common.quiet {
        eprintln!("login succeeded; credentials for {host} stored in {stored_in}");
    }
    Ok(())
}

pub fn run_logout(args: LogoutArgs) -> anyhow::Result<()> {
    let host = host_arg(&args.host);
    let path = config_path(&args.common)?;
    let mut config = DockerConfig::load(&path)?;
    let erased = match config.helper(&host) {
        Some(helper) => helper_erase(&helper, &auth_key(&host))?,
        None => false,
    };
    if !config.remove_credentials(&host) && !erased {
        anyhow::bail!("not logged in to {host} (no entry in {})", path.display());
    }
    config.save()?;
    if !args.common.quiet {
        eprintln!("removed credentials for {host} from {}", path.display());
    }
    Ok(())
}
