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
    /// Back up a cluster's configuration (every API resource, CRDs included) to a location.
    #[command(after_help = BACKUP_HELP)]
    Backup(BackupArgs),
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
    #[command(
        after_help = "Status: arrives with issue #7 (schedules, retention, garbage collection)."
    )]
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

const BACKUP_HELP: &str = "\
Always captured, whatever the filters: StorageClasses, VolumeSnapshotClasses, PriorityClasses,
IngressClasses, the included Namespaces and the CRDs of the custom resources taken.
Never captured: Events, Endpoints, EndpointSlices, Leases, Nodes, CSINodes, VolumeAttachments,
ControllerRevisions, APIServices, create-only APIs (recorded in the manifest with the reason).

Volume data is not backed up by this build: a backup of a cluster with PersistentVolumeClaims
ends with a warning (exit 3) unless --no-volumes says that is intended.

Examples:
  lifeboat backup --cluster primary --to prod
  lifeboat backup --include-namespaces 'shop-*' --exclude-resources secrets -l app=shop
  lifeboat backup --name pre-release-4f2c1e9 --label release=4f2c1e9 --ttl 720h -o json

Exit codes: 0 committed; 3 committed with warnings; 1 failed (nothing committed); 2 usage.";

/// `lifeboat backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Cluster to back up (a key of `clusters`); default: `defaults.cluster`, the only one, or
    /// the current kubeconfig context.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Location to write (a key of `locations`); default: `defaults.location` or the only one.
    #[arg(long, value_name = "LOCATION")]
    pub to: Option<String>,
    /// Backup name; default `<cluster>-<UTC date>-<time>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Namespaces to take (globs, comma-separated or repeated); default: all.
    #[arg(long, value_delimiter = ',', value_name = "GLOB")]
    pub include_namespaces: Vec<String>,
    /// Namespaces to leave out (globs).
    #[arg(long, value_delimiter = ',', value_name = "GLOB")]
    pub exclude_namespaces: Vec<String>,
    /// Resources to take: `deployments.apps`, `configmaps`, a kind, or globs; default: all.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCE")]
    pub include_resources: Vec<String>,
    /// Resources to leave out.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCE")]
    pub exclude_resources: Vec<String>,
    /// Label selector, as kubectl's (`app=shop,tier!=cache`).
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
    /// Cluster-scoped resources: auto (all of them unless --include-namespaces limits the
    /// backup), true, or false.
    #[arg(long, value_enum)]
    pub include_cluster_resources: Option<crate::backup::ClusterResources>,
    /// A label recorded in the manifest (repeatable), e.g. `--label release=4f2c1e9`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// How long retention keeps this backup: `720h`, `30d`, `90m`.
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<jiff::SignedDuration>,
    /// Configuration only: do not back up volume data.
    #[arg(long)]
    pub no_volumes: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?}: empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// `720h`, `30d`, `90m`, `3600s`.
pub fn parse_ttl(s: &str) -> Result<jiff::SignedDuration, String> {
    let err = || format!("{s:?}: expected a number and a unit s, m, h or d (e.g. 720h, 30d)");
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (n, unit) = s.split_at(unit_at);
    let n: i64 = n.parse().map_err(|_| err())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(err()),
    };
    if secs <= 0 {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(jiff::SignedDuration::from_secs(secs))
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
    /// State directory (objects, volumes, logs); reused across restarts. Default: a fresh
    /// temporary directory, not kept.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Where to write the kubeconfig (default: <state>/kubeconfig).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Zones of the cluster's nodes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "eastus2-1,eastus2-2,eastus2-3"
    )]
    pub zones: Vec<String>,
    /// Service CIDR from which ClusterIPs are allocated.
    #[arg(long, default_value = "10.0.0.0/16")]
    pub service_cidr: String,
    /// Image name whose pods the simulated kubelet really runs (with this lifeboat binary).
    #[arg(long, default_value = "lifeboat:dev")]
    pub lifeboat_image: String,
    /// Delay before a new CRD is Established, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub crd_established_delay_ms: u64,
    /// Refuse every N-th request with 429 Too Many Requests (0: never), to test back-off.
    #[arg(long, default_value_t = 0)]
    pub throttle_every: u64,
    /// Retry-After seconds sent with throttled requests.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}
