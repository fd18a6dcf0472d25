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
    #[command(after_help = PRUNE_HELP)]
    Prune(PruneArgs),
    /// Render or run a backup schedule (the in-cluster CronJob).
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Check every configured location: reachable, writable or read-only as observed,
    /// replication lag of RA-GRS secondaries.
    Doctor(DoctorArgs),
    /// A full region-loss drill on this machine with two simulated clusters: backup,
    /// replication with lag, loss of the primary, restore into the secondary, checks.
    #[command(after_help = DEMO_HELP)]
    Demo(DemoArgs),
    /// Move volume data between a mounted volume and the repository (runs inside a pod).
    #[command(subcommand)]
    Mover(MoverCommand),
    /// The simulated Kubernetes cluster used by tests and the demo.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Keys of encrypted repositories.
    #[command(subcommand)]
    Key(KeyCommand),
}

/// `lifeboat key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new identity (decrypts: keep it on the DR side only) and its writer key
    /// (encrypts and names chunks, reads nothing: for the backup CronJob and CI).
    Generate(KeyGenerateArgs),
}

/// `lifeboat key generate`
#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// Where to write the identity (an age identity file; created, never overwritten).
    #[arg(long, value_name = "PATH")]
    pub identity: std::path::PathBuf,
    /// Where to write the writer key (created, never overwritten).
    #[arg(long, value_name = "PATH")]
    pub writer_key: std::path::PathBuf,
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
    /// Record the outcome in ConfigMap `lifeboat-status` (and an Event on it) in this
    /// namespace. Default when running in a pod: the pod's namespace.
    #[arg(long, env = "LIFEBOAT_NAMESPACE", value_name = "NAMESPACE")]
    pub status_namespace: Option<String>,
    /// Return only once the backup is committed or has failed (what `backup` always does; for
    /// Velero-style pipelines that spell it out).
    #[arg(long)]
    pub wait: bool,
    /// Exit 1 instead of 3 when the backup is committed with warnings (a volume not backed up,
    /// a resource that failed to list): for CI gates that must not pass on a partial backup.
    #[arg(long)]
    pub fail_on_warnings: bool,
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

/// A positive duration in the one grammar of [`crate::units::parse_duration`] (`720h`, `30d`,
/// `1h30m`).
pub fn parse_ttl(s: &str) -> Result<jiff::SignedDuration, String> {
    crate::units::parse_duration(s).map_err(|e| e.to_string())
}

const RESTORE_HELP: &str = "\
The location is always opened read-only: a restore never writes to the repository.
`--backup latest` (the default) picks the newest backup that is complete on the location read;
newer ones not yet fully replicated are reported and passed over.

Order: CRDs (waited for until Established), Namespaces, storage/priority classes, service
accounts/secrets/config/RBAC, PersistentVolumeClaims, Services, workloads, everything else,
admission webhooks last. Server-set fields, status, ClusterIPs, nodePorts and PVC bindings are
stripped; objects a built-in controller in the backup recreates, auto-created objects and system
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
    /// Backup to restore, or `latest`: the newest one complete on the location read,
    /// Completed, holding the data of every claim the restore creates.
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Restore a named backup even if not all its objects are replicated yet.
    #[arg(long)]
    pub allow_incomplete: bool,
    /// `latest` may be a PartiallyFailed backup (the restore still ends with exit 3).
    #[arg(long)]
    pub allow_partial: bool,
    /// `latest` among the backups of this schedule only (label `lifeboat.io/schedule`).
    #[arg(long, value_name = "NAME", conflicts_with = "selector")]
    pub from_schedule: Option<String>,
    /// `latest` among the backups with these labels (repeatable, `--label` of `backup`).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub selector: Vec<(String, String)>,
    /// Namespace rename `from=to` (repeatable).
    #[arg(long = "namespace-map", value_name = "FROM=TO", value_parser = parse_pair)]
    pub namespace_map: Vec<(String, String)>,
    /// Storage class rename `from=to` (repeatable).
    #[arg(long = "storage-class-map", value_name = "FROM=TO", value_parser = parse_pair)]
    pub storage_class_map: Vec<(String, String)>,
    /// VolumeAttributesClass rename `from=to` (repeatable).
    #[arg(long = "volume-attributes-class-map", value_name = "FROM=TO", value_parser = parse_pair)]
    pub volume_attributes_class_map: Vec<(String, String)>,
    /// Storage account rename `from=to` (repeatable) for restored pre-provisioned volumes.
    #[arg(long = "storage-account-map", value_name = "FROM=TO", value_parser = parse_pair)]
    pub storage_account_map: Vec<(String, String)>,
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
    /// How long to wait for each restored APIService (aggregated API) to be Available; one
    /// that is not by then is reported as failed (exit 3).
    #[arg(long, default_value = "60s", value_parser = parse_ttl, value_name = "DURATION")]
    pub api_service_timeout: jiff::SignedDuration,
    /// Restore objects only: claims are created empty (no mover Jobs).
    #[arg(long)]
    pub no_volumes: bool,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err(format!("{s:?}: expected FROM=TO")),
    }
}

const DEMO_HELP: &str = "\
Starts two simulated AKS regions in this process (primary eastus2, secondary centralus),
deploys a small stateful app with generated volume data into the primary, then runs the real
commands, printing each: two backups, replication to a read-only secondary location that lags
(the newer backup only partly replicated), the loss of the primary, `restore --to secondary`.
It then checks the secondary byte for byte and object by object and reports RPO and RTO.
The report goes to stdout (--output json for scripts), progress to stderr.

Examples:
  lifeboat demo
  lifeboat demo --keep                      # then look around with kubectl; Ctrl-C ends it
  lifeboat demo --azurite http://127.0.0.1:10000 -o json

Exit codes: 0 every check passed; 1 a check failed or the drill could not run.";

/// `lifeboat demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the secondary cluster running and the workdir after the report, and print how to
    /// look at them with kubectl; Ctrl-C ends the demo.
    #[arg(long)]
    pub keep: bool,
    /// Use Azurite (the Azure Blob emulator) at this base URL instead of two directories:
    /// backups go to its primary endpoint, the restore reads its read-only `-secondary`
    /// endpoint with a read+list SAS (`.ci/azurite start` prints the URL).
    #[arg(long, value_name = "URL")]
    pub azurite: Option<String>,
    /// Work in this directory (new or empty; never deleted) instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Encrypt the repository: the primary gets a writer key (writes, cannot read), the
    /// secondary the identity (the only key that reads).
    #[arg(long)]
    pub encrypted: bool,
}

/// `lifeboat list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Location to list (a key of `locations`); default: `defaults.location` or the only one.
    #[arg(long, short = 'l')]
    pub location: Option<String>,
    /// Also check that every object of each backup is present here (one HEAD per object): on a
    /// replica, which backups are restore points now.
    #[arg(long)]
    pub check: bool,
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

/// `lifeboat mover …`: what the mover Jobs of `backup` and `restore` run. Useful by hand to
/// back up or restore a directory, or to debug a volume.
#[derive(Debug, Subcommand)]
pub enum MoverCommand {
    /// Back up a mounted volume into the repository: chunks, packs, then the volume index.
    #[command(after_help = MOVER_HELP)]
    Backup(MoverBackupArgs),
    /// Restore a volume of a backup into a mounted (normally empty) directory.
    #[command(after_help = MOVER_HELP)]
    Restore(MoverRestoreArgs),
}

const MOVER_HELP: &str = "\
The location is `--location NAME` from the config file, or the JSON of one location in
$LIFEBOAT_LOCATION (how `lifeboat backup` passes it to its mover Jobs; credentials stay
references to environment variables or files, never values).

The volume index is written last, under backups/<backup>/volumes/<namespace>/<pvc>.json; the
backup is only committed later by `lifeboat backup`. Restore reads only and verifies every
chunk's sha256; it refuses index entries that would write outside the target.

Examples:
  lifeboat mover backup --location dr --backup nightly-1 --namespace shop --pvc data-db-0 --source /data
  lifeboat mover restore --location dr --backup nightly-1 --namespace shop --pvc data-db-0 --target /data";

/// Where the mover reads or writes.
#[derive(Debug, Args)]
pub struct MoverLocationArgs {
    /// A location of the config file (default: $LIFEBOAT_LOCATION, then `defaults.location`).
    #[arg(long, short = 'l')]
    pub location: Option<String>,
}

/// `lifeboat mover backup`
#[derive(Debug, Args)]
pub struct MoverBackupArgs {
    /// Where to write.
    #[command(flatten)]
    pub location: MoverLocationArgs,
    /// The backup this volume belongs to.
    #[arg(long)]
    pub backup: String,
    /// Namespace of the PersistentVolumeClaim (names the index).
    #[arg(long)]
    pub namespace: String,
    /// The PersistentVolumeClaim (names the index).
    #[arg(long)]
    pub pvc: String,
    /// The mounted volume (read only).
    #[arg(long, value_name = "DIR")]
    pub source: PathBuf,
    /// An earlier committed backup of the same volume: its chunks are not uploaded again and
    /// files unchanged since (size, mtime, inode) are not read.
    #[arg(long, value_name = "BACKUP")]
    pub parent: Option<String>,
}

/// `lifeboat mover restore`
#[derive(Debug, Args)]
pub struct MoverRestoreArgs {
    /// Where to read (opened read-only).
    #[command(flatten)]
    pub location: MoverLocationArgs,
    /// The backup.
    #[arg(long)]
    pub backup: String,
    /// Namespace of the PersistentVolumeClaim in the backup.
    #[arg(long)]
    pub namespace: String,
    /// The PersistentVolumeClaim in the backup.
    #[arg(long)]
    pub pvc: String,
    /// The mounted target volume.
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// Parallel ranged reads.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Empty the target first (all but `lost+found`): a fill that an earlier run began.
    #[arg(long)]
    pub empty_first: bool,
}

/// `lifeboat sim …`
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Run a simulated cluster until interrupted (Ctrl-C / SIGTERM).
    Serve(SimServeArgs),
    /// Run the node agent and the `disk.csi.sim` CSI driver against a real control plane
    /// (e.g. one of `.ci/controlplane start`) until interrupted: Nodes with zone labels and
    /// heartbeats, pods marked Running (lifeboat's own pods really run, with in-cluster
    /// credentials), claims provisioned as directories, snapshots as copies. Needs root to give
    /// lifeboat pods their service-account mount.
    Agent(SimAgentArgs),
}

/// `lifeboat sim agent`
#[derive(Debug, Args)]
pub struct SimAgentArgs {
    /// The kubeconfig of the control plane (an admin's: the agent writes Nodes, pod statuses,
    /// PersistentVolumes and snapshot contents).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Node name prefix: nodes are `<prefix>-<zone>`.
    #[arg(long, default_value = "node")]
    pub node_prefix: String,
    /// Zones, one node each, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "eastus2-1,eastus2-2,eastus2-3"
    )]
    pub zones: Vec<String>,
    /// The region label of the nodes.
    #[arg(long, default_value = "eastus2")]
    pub region: String,
    /// Directory for volumes, snapshots, pod directories and container logs.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Image name whose pods the agent really runs (with this lifeboat binary), besides any
    /// `…/lifeboat` image.
    #[arg(long, default_value = "lifeboat:dev")]
    pub lifeboat_image: String,
    /// Serving certificate (PEM) of the kubelet endpoint through which the API server reads
    /// container logs (`kubectl logs`, mover reports). Without it, no endpoint.
    #[arg(long, value_name = "FILE", requires = "serving_key")]
    pub serving_cert: Option<PathBuf>,
    /// The serving certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "serving_cert")]
    pub serving_key: Option<PathBuf>,
    /// Port of the kubelet endpoint on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub kubelet_port: u16,
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

const SCHEDULE_HELP: &str = "\
A schedule is a file schedules/<name>.yaml: a cron expression, the cluster, the location,
backup filters, volumes on/off, labels, a TTL, a retention policy and the CronJob's settings
(see schedules/README.md).

Examples:
  lifeboat schedule render schedules/nightly.yaml --config lifeboat.yaml | kubectl apply -f -
  lifeboat schedule run nightly --config lifeboat.yaml          # what the CronJob runs
  lifeboat schedule run nightly --now 2026-11-20T03:00:00Z -o json";

/// `lifeboat schedule …`
#[derive(Debug, Subcommand)]
#[command(after_help = SCHEDULE_HELP)]
pub enum ScheduleCommand {
    /// Print the Kubernetes manifests that run a schedule in its cluster (Namespace,
    /// ServiceAccount, RBAC, ConfigMap, CronJob), for `kubectl apply -f -`.
    Render(ScheduleRenderArgs),
    /// Run a schedule once: a backup named `<schedule>-<UTC time>`, then retention, then the
    /// `lifeboat-status` ConfigMap. What the CronJob executes.
    #[command(
        after_help = "Exit codes: 0 backed up and pruned; 3 committed with warnings, or retention or \
                      the status not done; 1 backup failed (nothing committed); 2 usage or \
                      schedule/config error."
    )]
    Run(ScheduleRunArgs),
}

/// `lifeboat schedule render`
#[derive(Debug, Args)]
pub struct ScheduleRenderArgs {
    /// The schedule file, e.g. `schedules/nightly.yaml`.
    pub file: PathBuf,
}

/// `lifeboat schedule run`
#[derive(Debug, Args)]
pub struct ScheduleRunArgs {
    /// The schedule's name: `<schedules dir>/<NAME>.yaml` is run.
    pub name: String,
    /// Directory of the schedule files.
    #[arg(
        long,
        env = "LIFEBOAT_SCHEDULES",
        value_name = "DIR",
        default_value = "schedules"
    )]
    pub schedules: PathBuf,
    /// Replay the run at this time (RFC 3339, e.g. `2026-11-20T03:00:00Z`) instead of the
    /// clock: the backup's name, its recorded start and the retention clock. For tests, drills
    /// and reruns.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<jiff::Timestamp>,
    /// Namespace of the `lifeboat-status` ConfigMap; default: the pod's namespace in a
    /// CronJob, else the schedule's `cronJob.namespace`.
    #[arg(long, env = "LIFEBOAT_NAMESPACE", value_name = "NAMESPACE")]
    pub status_namespace: Option<String>,
}

const PRUNE_HELP: &str = "\
Deletes, in this order: backups the policy no longer keeps (manifest first, so a reader never
sees a half-deleted backup), leftovers of backups that never committed, then packs no remaining
backup references. Nothing younger than --grace is deleted as garbage, so a backup in progress
keeps its data. Without any --keep-* flag every backup is kept (except those whose own --ttl has
passed) and prune only collects garbage. Packs are never rewritten (no repacking in format v1).

Only one prune runs per location: it holds a lock (an Azure blob lease renewed in the background;
a flock on <dir>/locks/prune locally). A second prune exits 1 naming the holder, or waits with
--wait-lock. A read-only location (readOnly: true) is refused with exit 2.

Examples:
  lifeboat prune --dry-run --keep-daily 7 --keep-weekly 4     # what would be deleted
  lifeboat prune --to prod --keep-last 10 --keep-within 72h -o json
  lifeboat prune --prefix nightly- --keep-daily 14            # only the nightly backups

Exit codes: 0 done (or planned, with --dry-run); 1 failed or the lock is held by another prune;
2 usage or config error, or a read-only location.";

/// `lifeboat prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Location to prune (a key of `locations`); default: `defaults.location` or the only one.
    #[arg(long, short = 'l', visible_alias = "to", value_name = "LOCATION")]
    pub location: Option<String>,
    /// Show what would be deleted; take no lock, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Never delete unreferenced objects younger than this (`24h`, `90m`, `2d`).
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub grace: jiff::SignedDuration,
    /// Keep the newest N backups.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the last N days (UTC) that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep every backup younger than this (`72h`, `30d`, `1h30m`); the policy's `ttl`.
    #[arg(long, visible_alias = "ttl", value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Apply the policy only to backups whose name starts with this (others are kept).
    #[arg(long, value_name = "NAME-PREFIX")]
    pub prefix: Option<String>,
    /// Apply the policy only to backups with this label (repeatable; all must match).
    #[arg(long = "match-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub match_labels: Vec<(String, String)>,
    /// If another prune holds the lock, wait up to this long for it (`5m`) instead of exiting 1.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub wait_lock: Option<jiff::SignedDuration>,
    /// Lease of the lock: how long a crashed prune keeps the location locked. Azure accepts
    /// 15s to 60s; a local location's flock ends with the process instead.
    #[arg(long, default_value = "60s", value_parser = parse_ttl)]
    pub lease: jiff::SignedDuration,
    /// The retention clock (RFC 3339), for tests and drills; default: now.
    #[arg(long, hide = true)]
    pub now: Option<jiff::Timestamp>,
}
