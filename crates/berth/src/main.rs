//! The `berth` command: `berth serve` runs the registry; client commands talk to any
//! OCI registry. This crate is glue: parsing arguments, logging, exit codes.

mod admin;
mod cmd;
mod publish;
mod serve;
mod stats;

use clap::{Parser, Subcommand};

/// Berth: a container image registry and its client in one binary.
#[derive(Parser)]
#[command(name = "berth", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve(serve::ServeArgs),
    Admin(admin::AdminArgs),
    Stats(stats::StatsArgs),
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
}

/// Exit code for an error: the client's own codes (2 usage, 3 not found, 4 auth,
/// 5 digest mismatch, 6 network), 1 for anything else.
fn exit_code(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<berth_client::ClientError>())
        .map_or(1, berth_client::ClientError::exit_code)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Stats(args) => stats::run(args),
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
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}
