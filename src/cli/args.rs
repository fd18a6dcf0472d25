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
    #[command(after_help = RESTORE_HELP)]
    Restore(RestoreArgs),
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
    /// Which namespaces and resources.
    #[command(flatten)]
    pub scope: ScopeArgs,
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

/// Namespace and resource filters shared by `backup` and `restore`.
#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// Namespaces to include (globs, comma-separated or repeated); default: all.
    #[arg(long, value_delimiter = ',', value_name = "GLOB")]
    pub include_namespaces: Vec<String>,
    /// Namespaces to leave out (globs).
    #[arg(long, value_delimiter = ',', value_name = "GLOB")]
    pub exclude_namespaces: Vec<String>,
    /// Resources to include: `deployments.apps`, `configmaps`, a kind, or globs; default: all.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCE")]
    pub include_resources: Vec<String>,
    /// Resources to leave out.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCE")]
    pub exclude_resources: Vec<String>,
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

const RESTORE_HELP: &str = "\
The location is always opened read-only: a restore never writes to the repository.
`--backup latest` (the default) picks the newest backup that is complete on the location read;
newer ones not yet fully replicated are reported and passed over.

Order: CRDs (waited for until Established), Namespaces, storage/priority classes, service
accounts/secrets/config/RBAC, PersistentVolumeClaims, Services, workloads, everything else,
admission webhooks last. Server-set fields, status, ClusterIPs, nodePorts and PVC bindings are
stripped; objects owned by a controller in the backup, auto-created objects and system
namespaces are skipped. Every object is labelled lifeboat.io/restored-from=<backup>, so running
the same restore again after an interruption finishes the job.

Examples:
  lifeboat restore --to secondary --dry-run            # the plan, with its risks; writes nothing
  lifeboat restore --to secondary                      # plan, then execute
  lifeboat restore --cluster dr --from replica --backup nightly-20261120-030000 \\
      --namespace-map shop=shop-dr --zone-map eastus2-1=centralus-1 -o json --report report.json

Exit codes: 0 restored; 3 partially restored (see failures); 1 nothing restored or no usable
restore point; 2 usage or config error.";

/// `lifeboat restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Restore profile (a key of `restore:` in the config): target cluster, location read and
    /// mappings. Flags below override it.
    #[arg(long, value_name = "PROFILE")]
    pub to: Option<String>,
    /// Target cluster (a key of `clusters`).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Location to read (a key of `locations`); opened read-only.
    #[arg(long, value_name = "LOCATION")]
    pub from: Option<String>,
    /// Backup to restore, or `latest`: the newest one complete on the location read.
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Restore a named backup even if not all its objects are replicated yet.
    #[arg(long)]
    pub allow_incomplete: bool,
    /// Namespace rename `from=to` (repeatable).
    #[arg(long = "namespace-map", value_name = "FROM=TO", value_parser = parse_pair)]
    pub namespace_map: Vec<(String, String)>,
    /// Storage class rename `from=to` (repeatable).
    #[arg(long = "storage-class-map", value_name = "FROM=TO", value_parser = parse_pair)]
    pub storage_class_map: Vec<(String, String)>,
    /// Zone rename `from=to` (repeatable), e.g. `eastus2-1=centralus-1`.
    #[arg(long = "zone-map", value_name = "FROM=TO", value_parser = parse_pair)]
    pub zone_map: Vec<(String, String)>,
    /// Objects that already exist: skip (reported) or update (patched to the backup).
    #[arg(long, value_enum)]
    pub existing: Option<crate::config::ExistingPolicy>,
    /// Which namespaces and resources (names as in the backup).
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Keep Service nodePorts instead of letting the target allocate new ones.
    #[arg(long)]
    pub preserve_node_ports: bool,
    /// Print the plan and exit without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the report (JSON) to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Objects written at once inside a tier.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err(format!("{s:?}: expected FROM=TO")),
    }
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
