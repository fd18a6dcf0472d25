//! The command line, as parsed (the "low" level): flags only, no I/O.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::exit::EXIT_CODES_HELP;

/// Back up Kubernetes clusters, with their volumes, into replicated storage, and restore them
/// into the paired region when the primary is lost.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, propagate_version = true, after_help = EXIT_CODES_HELP, max_term_width = 100)]
pub struct Cli {
    /// Config file. Default: ./lifeboat.yaml if it exists, else $LIFEBOAT_CONFIG, else the
    /// embedded default (one local location, ./lifeboat-backups).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format: human-readable text, or one JSON document on stdout for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// More logging on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides it.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences.
    Text,
    /// One JSON document.
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up a cluster (every API resource, and its volumes' data) to a location.
    #[command(after_help = "Status: arrives with the cluster snapshot (issue #4) and volume data (issue #6).")]
    Backup(PendingArgs),
    /// Restore a backup into a cluster, e.g. `restore --to secondary` during a region loss.
    #[command(after_help = "Status: arrives with issue #5 (restore to the secondary region).")]
    Restore(PendingArgs),
    /// List the committed backups of a location.
    List(ListArgs),
    /// Show one backup's manifest: cluster, labels, objects, warnings.
    Describe(DescribeArgs),
    /// Check that every object of a backup is present (--deep: and intact) on a location.
    Verify(VerifyArgs),
    /// Apply retention and delete unreferenced data (writer side only, under a lock).
    #[command(after_help = "Status: arrives with issue #7 (schedules, retention, garbage collection).")]
    Prune(PendingArgs),
    /// Render or run a backup schedule (the in-cluster CronJob).
    #[command(after_help = "Status: arrives with issue #7.")]
    Schedule(PendingArgs),
    /// Check every configured location: reachable, writable or read-only as observed,
    /// replication lag of RA-GRS secondaries.
    Doctor(DoctorArgs),
    /// A full region-loss drill on this machine with two simulated clusters.
    #[command(after_help = "Status: arrives with issue #7.")]
    Demo(PendingArgs),
    /// Move volume data between a mounted volume and the repository (runs inside a pod).
    #[command(after_help = "Status: arrives with issue #6.")]
    Mover(PendingArgs),
    /// The simulated Kubernetes cluster used by tests and the demo.
    #[command(subcommand)]
    Sim(SimCommand),
}

/// Arguments of a command this build does not have yet.
#[derive(Debug, Args)]
pub struct PendingArgs {
    /// Ignored: this command is not available in this build.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// `lifeboat list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Location to list (a key of `locations`); default: `defaults.location` or the only one.
    #[arg(long, short = 'l')]
    pub location: Option<String>,
}

/// `lifeboat describe`
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The backup.
    pub name: String,
    /// Location to read.
    #[arg(long, short = 'l')]
    pub location: Option<String>,
    /// List every object of the backup.
    #[arg(long)]
    pub details: bool,
}

/// `lifeboat verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup.
    pub name: String,
    /// Location to read.
    #[arg(long, short = 'l')]
    pub location: Option<String>,
    /// Re-read every object and compare its sha256 with the manifest.
    #[arg(long)]
    pub deep: bool,
}

/// `lifeboat doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check only these locations (default: all).
    #[arg(long, short = 'l')]
    pub location: Vec<String>,
}

/// `lifeboat sim …`
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Run a simulated cluster until interrupted (Ctrl-C / SIGTERM).
    Serve(SimServeArgs),
}

/// `lifeboat sim serve`
#[derive(Debug, Args)]
pub struct SimServeArgs {
    /// Cluster name; also the kubeconfig context name.
    #[arg(long, default_value = "primary")]
    pub name: String,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// State directory (objects, volumes, logs); reused across restarts.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Where to write the kubeconfig (default: <state>/kubeconfig).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Zones of the cluster's nodes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "eastus2-1,eastus2-2,eastus2-3")]
    pub zones: Vec<String>,
    /// Service CIDR from which ClusterIPs are allocated.
    #[arg(long, default_value = "10.0.0.0/16")]
    pub service_cidr: String,
}
