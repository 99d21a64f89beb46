//! `sluice`: the command line of sluice, a rate limiting and quota system.
//!
//! `sluice serve` runs the rate limit server (the library is `sluice-server`); `sluice check`
//! asks a limit for a few decisions in a row and prints them, to try a policy before
//! configuring it; `sluice status`, `sluice reset` and `sluice override` talk to a running
//! server's admin API. This binary
//! is the only place in the workspace that reads flags and uses `anyhow`; the libraries
//! below it return typed errors. Arguments live in [`cli`], each command in its own module.

mod admin;
mod batch;
mod check;
mod cli;
mod process;
mod proxy;
mod serve;
mod settings;
mod values;

use std::io;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Check(args) => {
            // A policy the flags cannot make is a usage error: clap prints it and exits 2.
            let policy = args.policy().unwrap_or_else(|usage| usage.exit());
            check::run(args, policy)
        }
        Command::Serve(args) => serve::run(args),
        Command::Status(args) => admin::status(args),
        Command::Reset(args) => admin::reset(args),
        Command::Override(args) => admin::overrides(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Batch(args) => match batch::run(args) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`sluice check ... | head`): nothing left to tell anyone.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.downcast_ref::<io::Error>()
        .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
}
