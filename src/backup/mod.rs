//! `lifeboat backup`: what to take, the resource snapshot stream, and the manifest written last.
//!
//! Discovery → selection (pure) → parallel paginated lists → one tar.zst spooled to a temporary
//! file → uploaded → manifest. Until the manifest is written the backup does not exist for any
//! reader, so an interruption at any point leaves nothing a restore could pick up.

pub mod cleanup;
pub mod select;
mod snapshot;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::mpsc;

pub use crate::filter::{ClusterResources, Filters};
pub use crate::repo::{ResourceSummary, ResourcesDetail, Skipped};
pub use select::Selection;

use crate::cluster::{self, ClusterError, Connected, ListOptions, ResourceType};
use crate::repo::{
    BackupName, ClaimScope, ClusterFacts, Manifest, ManifestDetails, RepoError, RepoWriter,
    ScopeDetail, VolumeRecord, VolumeStatus,
};
use crate::storage::TransferOptions;

/// Resources listed at once. The API server, not the client, is the bottleneck beyond this.
const LIST_CONCURRENCY: usize = 8;
/// Pages (tar-encoded, up to ~1-2 MiB each) buffered between the lists and the archive
/// writer: bounds memory to a few tens of MiB.
const PIPELINE_DEPTH: usize = 16;

/// Receives progress of a running backup (the CLI draws it; tests ignore it).
pub trait Progress: Send + Sync {
    /// Discovery is done: `resources` will be listed.
    fn started(&self, _resources: usize) {}
    /// A page of objects went into the archive.
    fn objects(&self, _count: u64, _bytes: u64) {}
    /// A resource is fully listed.
    fn resource_done(&self, _resource: &str, _objects: u64) {}
    /// A new phase (uploading, committing).
    fn phase(&self, _what: &str) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A backup to take: the typed result of flags, config and schedule.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// Name of the backup.
    pub name: BackupName,
    /// Config name of the cluster (recorded in the manifest).
    pub cluster_name: String,
    /// What to take.
    pub filters: Filters,
    /// `--label k=v`.
    pub labels: BTreeMap<String, String>,
    /// `--ttl`: how long retention keeps it.
    pub ttl: Option<jiff::SignedDuration>,
    /// Volume data: how to run the mover Jobs; `None` for a configuration-only backup.
    pub volumes: Option<volumes::VolumeJobs>,
    /// Where the archive is spooled before upload.
    pub spool_dir: PathBuf,
    /// The time recorded as the backup's start (what retention judges it by); `None`: now.
    /// `schedule run --now T` sets it, so a replayed or tested schedule keeps its clock.
    pub started_at: Option<jiff::Timestamp>,
}

/// Errors that stop a backup (per-resource failures are warnings in the manifest instead).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Discovery failed: nothing can be listed.
    #[error("discovering the API resources of cluster {cluster:?}")]
    Discovery {
        /// The cluster.
        cluster: String,
        /// Why.
        #[source]
        source: ClusterError,
    },
    /// The repository refused a step.
    #[error("writing backup {name} to the repository")]
    Repo {
        /// The backup.
        name: String,
        /// Why.
        #[source]
        source: RepoError,
    },
    /// The archive could not be spooled locally.
    #[error("spooling the resource archive in {dir}")]
    Spool {
        /// The spool directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cluster could not be asked about volumes (listing claims, sweeping leftovers).
    #[error("backing up the volumes of cluster {cluster:?}")]
    Volumes {
        /// The cluster.
        cluster: String,
        /// Why.
        #[source]
        source: ClusterError,
    },
    /// Mover pods could not open the location (checked before anything is snapshotted).
    #[error("before any snapshot: the volume data could not be moved")]
    MoverCredentials(#[from] crate::mover::credentials::CredentialsError),
    /// Every selected resource failed to list: nothing worth committing.
    #[error("no resource of cluster {cluster:?} could be listed (first error: {first})")]
    NothingListed {
        /// The cluster.
        cluster: String,
        /// The first error.
        first: String,
    },
}

/// Takes a configuration backup of the cluster into the repository and commits it.
pub async fn run(
    cluster: &Connected,
    repo: &RepoWriter,
    req: BackupRequest,
    progress: &dyn Progress,
) -> Result<Manifest, BackupError> {
    let started_at = req.started_at.unwrap_or_else(jiff::Timestamp::now);
    let t0 = Instant::now();
    let client = &cluster.client;
    let repo_err = |source| BackupError::Repo {
        name: req.name.to_string(),
        source,
    };
    // How the movers will open the location, before any work (issue 15): a location they
    // could not open is a config error naming the key to set, and nothing is snapshotted.
    let credentials = req
        .volumes
        .as_ref()
        .map(|jobs| {
            crate::mover::credentials::resolve(
                &jobs.location_name,
                &jobs.location,
                &jobs.settings,
                false,
            )
        })
        .transpose()?;
    // Refuse a taken name before doing any work.
    let mut writer = repo
        .begin_backup(req.name.clone())
        .await
        .map_err(repo_err)?;

    let discovered = cluster::discover(client)
        .await
        .map_err(|source| BackupError::Discovery {
            cluster: req.cluster_name.clone(),
            source,
        })?;
    let mut warnings: Vec<String> = discovered
        .failed
        .iter()
        .map(|(gv, why)| format!("API group {gv} did not answer discovery, its resources are not in this backup: {why}"))
        .collect();
    let selection = select::select(&discovered.resources, &req.filters);
    progress.started(selection.take.len());
    tracing::info!(
        resources = selection.take.len(),
        skipped = selection.skipped.len(),
        "listing"
    );

    let (tx, rx) = mpsc::channel(PIPELINE_DEPTH);
    let spool_dir = req.spool_dir.clone();
    let spool_name = req.name.to_string();
    let mtime = started_at.as_second().max(0) as u64;
    let spooler = tokio::task::spawn_blocking(move || {
        crate::repo::archive::spool(&spool_dir, &spool_name, rx)
    });
    let summaries = snapshot::list_all(
        client,
        &selection.take,
        &req.filters,
        LIST_CONCURRENCY,
        mtime,
        tx,
        progress,
    )
    .await;
    let spooled = spooler
        .await
        .expect("the archive writer does not panic")
        .map_err(|source| BackupError::Spool {
            dir: req.spool_dir.display().to_string(),
            source,
        })?;

    tracing::info!(
        objects = spooled.entries,
        raw_bytes = spooled.raw_bytes,
        compressed = spooled.size,
        "archive spooled"
    );
    let failed: Vec<&ResourceSummary> = summaries.iter().filter(|s| s.error.is_some()).collect();
    if !summaries.is_empty() && failed.len() == summaries.len() {
        return Err(BackupError::NothingListed {
            cluster: req.cluster_name.clone(),
            first: failed[0].error.clone().unwrap_or_default(),
        });
    }
    for s in &failed {
        warnings.push(format!(
            "listing {} failed after {} objects: {}",
            s.resource,
            s.count,
            s.error.as_deref().unwrap_or_default()
        ));
    }
    progress.phase("uploading");
    let path = spooled.file.path();
    writer
        .put_file_digested(
            crate::repo::Layout::RESOURCES_FILE,
            path,
            spooled.size,
            spooled.sha256.clone(),
            &TransferOptions::default(),
        )
        .await
        .map_err(repo_err)?;

    tracing::info!(elapsed = ?t0.elapsed(), "archive uploaded");

    let mut volume_records = None;
    if let (Some(jobs), Some(credentials)) = (&req.volumes, &credentials) {
        progress.phase("volumes");
        let ctx = volumes::VolumeContext {
            client,
            backup: req.name.as_str(),
            location_name: &jobs.location_name,
            location: &jobs.location,
            settings: &jobs.settings,
            credentials,
            progress,
        };
        let outcome = volumes::back_up(&ctx, &req.filters, repo.reader())
            .await
            .map_err(|e| match e {
                volumes::VolumesError::Cluster(source) => BackupError::Volumes {
                    cluster: req.cluster_name.clone(),
                    source,
                },
                volumes::VolumesError::Credentials(e) => BackupError::MoverCredentials(e),
            })?;
        for (namespace, pvc, report) in &outcome.reports {
            let Some(index) = &report.index else { continue };
            writer
                .adopt_volume_index(namespace, pvc, &index.sha256)
                .await
                .map_err(repo_err)?;
        }
        for r in &outcome.records {
            match r.status {
                VolumeStatus::Completed => {}
                // Not copied on purpose: the data stays in the volume it is bound to, which the
                // manifest names and a restore binds the claim to again.
                VolumeStatus::NotSnapshottable if r.by_reference => {}
                VolumeStatus::Failed => warnings.push(format!(
                    "volume {}/{} failed, its data is not in this backup: {}",
                    r.namespace,
                    r.pvc,
                    r.error.as_deref().unwrap_or_default()
                )),
                VolumeStatus::NotSnapshottable => warnings.push(format!(
                    "volume {}/{} cannot be snapshotted, its data is not in this backup: {}",
                    r.namespace,
                    r.pvc,
                    r.error.as_deref().unwrap_or_default()
                )),
            }
        }
        volume_records = Some(outcome.records);
    }
    let scope = scope(
        client,
        &req,
        volume_records.as_deref(),
        &discovered.failed,
        &mut warnings,
    )
    .await;

    let mut namespaces: BTreeMap<String, u64> = BTreeMap::new();
    for s in &summaries {
        for (ns, n) in &s.per_namespace {
            *namespaces.entry(ns.clone()).or_default() += n;
        }
    }
    let mut resources = summaries;
    resources.sort_by(|a, b| a.resource.cmp(&b.resource));
    let detail = ResourcesDetail {
        resources,
        namespaces,
        skipped: selection.skipped,
        objects: spooled.entries,
        raw_bytes: spooled.raw_bytes,
    };
    let details = ManifestDetails {
        resources: Some(detail),
        volumes: volume_records,
        duration_seconds: Some(t0.elapsed().as_secs_f64()),
        scope: Some(scope),
    };

    progress.phase("committing");
    let cluster_facts = facts(
        cluster,
        &req.cluster_name,
        discovered.server_version,
        &discovered.resources,
    )
    .await;
    let draft = Manifest {
        labels: req.labels.clone(),
        expires_at: req.ttl.and_then(|ttl| started_at.checked_add(ttl).ok()),
        cluster: cluster_facts,
        filters: req.filters.clone(),
        warnings,
        details,
        ..Manifest::draft(req.name.clone(), started_at)
    };
    writer.commit(draft).await.map_err(repo_err)
}

/// What the backup covers (issue 14): whether volume data was taken, every claim in scope with
/// whether its data is in, the API groups that did not answer. Without volume data the claims
/// are listed here; if they cannot be, the backup says so (a restore then treats every claim
/// as without data, as it does for any backup that took none).
async fn scope(
    client: &kube::Client,
    req: &BackupRequest,
    records: Option<&[VolumeRecord]>,
    unanswered: &[(String, String)],
    warnings: &mut Vec<String>,
) -> ScopeDetail {
    let claims = match records {
        Some(records) => records
            .iter()
            .map(|r| ClaimScope {
                namespace: r.namespace.clone(),
                pvc: r.pvc.clone(),
                data: r.status == VolumeStatus::Completed,
                by_reference: r.by_reference,
                reason: (r.status != VolumeStatus::Completed)
                    .then(|| r.error.clone().unwrap_or_else(|| "not backed up".into())),
            })
            .collect(),
        None => match volumes::in_scope(client, &req.filters).await {
            Ok(claims) => claims
                .into_iter()
                .map(|(namespace, pvc)| ClaimScope {
                    namespace,
                    pvc,
                    data: false,
                    by_reference: false,
                    reason: Some(
                        "the backup took no volume data (--no-volumes, or a schedule with volumes: false)"
                            .into(),
                    ),
                })
                .collect(),
            Err(e) => {
                warnings.push(format!(
                    "the claims in scope could not be listed, the manifest does not name them: {e}"
                ));
                Vec::new()
            }
        },
    };
    ScopeDetail {
        volume_data: records.is_some(),
        claims,
        unanswered_groups: unanswered.iter().map(|(gv, _)| gv.clone()).collect(),
    }
}

/// Server version, API host, zones and node count, where the credentials may see them.
async fn facts(
    cluster: &Connected,
    name: &str,
    server_version: Option<String>,
    served: &[ResourceType],
) -> ClusterFacts {
    let mut facts = ClusterFacts {
        name: Some(name.to_owned()),
        server_version,
        api_host: cluster.api_host.clone(),
        ..Default::default()
    };
    if let Some(nodes) = served
        .iter()
        .find(|r| r.group.is_empty() && r.plural == "nodes")
    {
        let opts = ListOptions {
            limit: 500,
            label_selector: None,
        };
        if let Ok(page) = cluster::fetch_page(&cluster.client, nodes, &opts, None).await {
            facts.node_count = Some(page.items.len() as u64);
            let mut zones: Vec<String> = page
                .items
                .iter()
                .filter_map(|n| {
                    n.pointer("/metadata/labels/topology.kubernetes.io~1zone")?
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            zones.sort();
            zones.dedup();
            facts.zones = zones;
        }
    }
    facts
}

/// Default backup name: `<cluster>-<UTC timestamp>`, e.g. `primary-20261120-223000`.
pub fn default_name(
    cluster: &str,
    at: jiff::Timestamp,
) -> Result<BackupName, crate::repo::NameError> {
    let cluster: String = cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    BackupName::new(format!("{cluster}-{}", at.strftime("%Y%m%d-%H%M%S")))
}
