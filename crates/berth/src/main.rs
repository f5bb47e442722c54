//! The `berth` command: `berth serve` runs the registry; client commands talk to any
//! OCI registry. This crate is glue: parsing arguments, logging, exit codes.

mod admin;
mod cmd;
mod migrate;
mod publish;
mod serve;
mod stale;
mod stats;

use clap::{CommandFactory as _, Parser, Subcommand};

/// Berth: a container image registry and its client in one binary.
#[derive(Parser)]
#[command(name = "berth", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant (serve's settings) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    Serve(serve::ServeArgs),
    Admin(admin::AdminArgs),
    Migrate(migrate::MigrateArgs),
    Stats(stats::StatsArgs),
    Stale(stale::StaleArgs),
    Publish(publish::PublishArgs),
    Copy(cmd::copy::CopyArgs),
    Push(cmd::copy::PushArgs),
    Pull(cmd::copy::PullArgs),
    Inspect(cmd::inspect::InspectArgs),
    Tags(cmd::tags::TagsArgs),
    Catalog(cmd::catalog::CatalogArgs),
    Digest(cmd::digest::DigestArgs),
    Tag(cmd::tag::TagArgs),
    Delete(cmd::delete::DeleteArgs),
    Index(cmd::index::IndexArgs),
    Login(cmd::login::LoginArgs),
    Logout(cmd::login::LogoutArgs),
    Key(cmd::key::KeyArgs),
    Sign(cmd::sign::SignArgs),
    Attest(cmd::sign::AttestArgs),
    Sbom(cmd::sbom::SbomArgs),
    Verify(cmd::verify::VerifyArgs),
    VerifyAttestation(cmd::verify::VerifyAttestationArgs),
    Scan(cmd::scan::ScanArgs),
    Db(cmd::db::DbArgs),
}

/// `BERTH_*` variables read without clap: logging (`serve`), the CI context of
/// `berth publish`, and the interop tests' path to this binary, which `berth serve`
/// inherits from them.
const ENV_OUTSIDE_CLAP: [&str; 4] = [
    "BERTH_LOG",
    "BERTH_LOG_FORMAT",
    "BERTH_DEFAULT_BRANCH",
    "BERTH_BIN",
];

/// Every `BERTH_*` variable some part of the program reads: each argument's `env` in
/// every command, and [`ENV_OUTSIDE_CLAP`].
fn known_env() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_env()?.to_str().map(str::to_owned)),
        );
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out: Vec<String> = ENV_OUTSIDE_CLAP.map(String::from).to_vec();
    walk(&Cli::command(), &mut out);
    out
}

/// Refuses a `BERTH_*` variable nothing reads (a misspelt setting would be ignored).
fn check_env() -> anyhow::Result<()> {
    let known = known_env();
    berth_server::config::check_env(std::env::vars_os(), known.iter().map(String::as_str))?;
    Ok(())
}

/// Exit code for an error: the client's own codes (2 usage, 3 not found, 4 auth,
/// 5 digest mismatch, 6 network), 7 for a verification that found nothing valid, 1 for
/// anything else.
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<cmd::verify::NotVerified>().is_some() {
        return cmd::verify::EXIT_NOT_VERIFIED;
    }
    e.chain()
        .find_map(|c| c.downcast_ref::<berth_client::ClientError>())
        .map_or(1, berth_client::ClientError::exit_code)
}

/// The error as one line: each cause after the message that does not already say it.
/// Many errors quote their source in their own message (`cannot read X: <os error>`),
/// so printing the whole chain would say the OS error twice.
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A reader that stops early (`berth tags R | head -1`) closes the pipe: `println!` then
/// panics with "failed printing to stdout: Broken pipe". Like any Unix filter, end quietly
/// with the status of a process killed by SIGPIPE instead of printing a panic.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> std::process::ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Stale(args) => stale::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Copy(args) => cmd::copy::run_copy(args),
        Command::Push(args) => cmd::copy::run_push(args),
        Command::Pull(args) => cmd::copy::run_pull(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Tags(args) => cmd::tags::run(args),
        Command::Catalog(args) => cmd::catalog::run(args),
        Command::Digest(args) => cmd::digest::run(args),
        Command::Tag(args) => cmd::tag::run(args),
        Command::Delete(args) => cmd::delete::run(args),
        Command::Index(args) => cmd::index::run(args),
        Command::Login(args) => cmd::login::run_login(args),
        Command::Logout(args) => cmd::login::run_logout(args),
        Command::Key(args) => cmd::key::run(args),
        Command::Sign(args) => cmd::sign::run_sign(args),
        Command::Attest(args) => cmd::sign::run_attest(args),
        Command::Sbom(args) => cmd::sbom::run(args),
        Command::Verify(args) => cmd::verify::run_verify(args),
        Command::VerifyAttestation(args) => cmd::verify::run_verify_attestation(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Db(args) => cmd::db::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {}", render(&e));
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_quoting_its_source_says_it_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read config file /x: {source}")]
        struct Quoting {
            source: std::io::Error,
        }
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let said = io.to_string();
        let e = anyhow::Error::new(Quoting { source: io }).context("starting");
        let text = render(&e);
        assert_eq!(text.matches(&said).count(), 1, "{text}");
        assert!(
            text.starts_with("starting: cannot read config file /x: "),
            "{text}"
        );
        // A source that adds something is still printed.
        let e = anyhow::anyhow!("disk on fire").context("saving");
        assert_eq!(render(&e), "saving: disk on fire");
    }

    #[test]
    fn known_env_covers_server_client_and_logging() {
        let known = known_env();
        for var in [
            "BERTH_LISTEN",
            "BERTH_DATABASE_URL",
            "BERTH_STORAGE",
            "BERTH_DOCKER_CONFIG",
            "BERTH_CA_CERT",
            "BERTH_OSV_DB",
            "BERTH_LOG",
        ] {
            assert!(
                known.iter().any(|k| k == var),
                "{var} missing from {known:?}"
            );
        }
        assert!(!known.iter().any(|k| k == "BERTH_LISTN"));
    }
}
