//! The `berth` command: `berth serve` runs the registry; client commands talk to any
//! OCI registry. This crate is glue: parsing arguments, logging, exit codes.

mod admin;
mod serve;

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Admin(args) => admin::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
