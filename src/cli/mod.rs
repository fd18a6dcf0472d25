//! The command line: parses flags and the config file, runs a command, renders its report and
//! picks the exit code. No business logic lives here.

pub mod args;
mod commands;
pub mod exit;
mod interrupt;
pub(crate) mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command, OutputFormat};
pub use exit::Exit;

use crate::config::{Config, ConfigError};

/// Everything a command needs from the global flags.
pub struct Context {
    /// The loaded (or embedded default) config.
    pub config: Config,
    /// Text or JSON.
    pub output: OutputFormat,
}

/// A usage error found after clap: wrong combination, bad value. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("error: {err:#}");
            exit_code_of(&err).into()
        }
    }
}

/// Config and usage errors, and a location refused before anything was written to it
/// (read-only, the file-system root, a foreign directory), exit 2; everything else 1.
pub(crate) fn exit_code_of(err: &anyhow::Error) -> Exit {
    if err.chain().any(|e| {
        e.is::<ConfigError>()
            || e.is::<UsageError>()
            || e.is::<crate::mover::credentials::CredentialsError>()
            || e.downcast_ref::<crate::repo::RepoError>()
                .is_some_and(|r| r.is_location_refused())
            || e.downcast_ref::<crate::storage::StorageError>()
                .is_some_and(|s| s.is_location_refused())
    }) {
        Exit::Usage
    } else {
        Exit::Failed
    }
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let config = match Config::discover(cli.config.as_deref()) {
        Some(path) => Config::load(&path)?,
        None => Config::embedded_default(),
    };
    let ctx = Context {
        config,
        output: cli.output,
    };
    match cli.command {
        Command::Doctor(a) => commands::doctor::run(&ctx, a).await,
        Command::List(a) => commands::list::run(&ctx, a).await,
        Command::Describe(a) => commands::describe::run(&ctx, a).await,
        Command::Verify(a) => commands::verify::run(&ctx, a).await,
        Command::Sim(s) => commands::sim::run(&ctx, s).await,
        Command::Backup(a) => commands::backup::run(&ctx, a).await,
        Command::Restore(a) => commands::restore::run(&ctx, a).await,
        Command::Prune(a) => commands::prune::run(&ctx, a).await,
        Command::Schedule(s) => commands::schedule::run(&ctx, s).await,
        Command::Demo(a) => commands::demo::run(&ctx, a).await,
        Command::Mover(m) => commands::mover::run(&ctx, m).await,
        Command::Key(k) => commands::key::run(&ctx, k),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose > 1)
        .init();
}
