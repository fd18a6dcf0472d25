//! Volume data of a backup: for each claim in scope, a CSI VolumeSnapshot, a temporary claim of
//! it, and a mover Job (`lifeboat mover backup`) that writes the volume's chunks and index to
//! the location; then the indexes are adopted into the backup being written. Volumes move in
//! parallel up to `volumes.parallelism`; claims that cannot be snapshotted are reported.
//! Pre- and post-snapshot hooks run in the pods mounting each volume ([`hooks`]).

mod discover;
pub mod hooks;
mod one;

use std::collections::BTreeMap;

use futures::StreamExt;

pub use crate::mover::job::VolumeJobs;
pub use discover::{Claim, in_scope, snapshot_class};

use crate::cluster::lease::{self, Swept};
use crate::cluster::objects::{JOBS, Kind, PVCS, SECRETS, SERVICE_ACCOUNTS, VOLUME_SNAPSHOTS};

/// The kinds a backup creates temporarily, in deletion order (Job first: it holds the claim).
pub const TEMPORARY_KINDS: [Kind; 3] = [JOBS, PVCS, VOLUME_SNAPSHOTS];

use super::Progress;
use crate::cluster::ClusterError;
use crate::config::{Location, VolumesConfig};
use crate::filter::Filters;
use crate::mover::JobReport;
use crate::mover::credentials::{CredentialsError, MoverCredentials, Need};
use crate::repo::{Layout, RepoReader, VolumeRecord, VolumeStatus};

/// Shared by the volumes of one backup.
pub struct VolumeContext<'a> {
    /// The cluster.
    pub client: &'a kube::Client,
    /// The backup's name.
    pub backup: &'a str,
    /// The location's name in the config.
    pub location_name: &'a str,
    /// Where movers write.
    pub location: &'a Location,
    /// How movers open it.
    pub credentials: &'a MoverCredentials,
    /// Settings.
    pub settings: &'a VolumesConfig,
    /// Progress.
    pub progress: &'a dyn Progress,
}

/// The volumes' results.
#[derive(Default)]
pub struct VolumesOutcome {
    /// One record per claim in scope, in namespace/name order.
    pub records: Vec<VolumeRecord>,
    /// The movers' reports of the volumes backed up, with the claim (namespace, name) each is
    /// of.
    pub reports: Vec<(String, String, JobReport)>,
    /// Leftovers of interrupted runs deleted before this one.
    pub swept: Swept,
}

/// The newest committed backup holding a completed copy of each volume: the parent of its next
/// backup (its chunks are not uploaded again, unchanged files are not read).
async fn parents(
    repo: &RepoReader,
    claims: &[(String, String)],
) -> BTreeMap<(String, String), String> {
    let mut newest: BTreeMap<(String, String), (jiff::Timestamp, String)> = BTreeMap::new();
    // A backup whose manifest cannot be read is no parent; it must not make every volume full.
    let listings = match repo.list_readable().await {
        Ok(l) => l.backups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list earlier backups: volumes are backed up in full");
            return BTreeMap::new();
        }
    };
    for l in listings {
        let m = &l.manifest;
        let completed: Vec<(String, String)> = if m.unopened {
            // Encrypted, read with the writer key: the volume records are sealed, but a claim
            // whose writer's view (a keyed name) the manifest lists was completed.
            claims
                .iter()
                .filter(|(ns, pvc)| {
                    let view = Layout::writer_view(&repo.volume_index_key(&m.name, ns, pvc));
                    m.objects.iter().any(|o| o.key == view)
                })
                .cloned()
                .collect()
        } else {
            m.volumes()
                .iter()
                .filter(|v| v.status == VolumeStatus::Completed)
                .map(|v| (v.namespace.clone(), v.pvc.clone()))
                .collect()
        };
        for key in completed {
            if newest.get(&key).is_none_or(|(t, _)| *t < m.started_at) {
                newest.insert(key, (m.started_at, m.name.to_string()));
            }
        }
    }
    newest.into_iter().map(|(k, (_, n))| (k, n)).collect()
}

/// Why the volumes could not be backed up at all.
#[derive(Debug)]
pub enum VolumesError {
    /// The cluster could not be asked (listing claims, sweeping leftovers).
    Cluster(ClusterError),
    /// Mover pods could not open the location from a namespace with claims.
    Credentials(CredentialsError),
}

impl From<ClusterError> for VolumesError {
    fn from(e: ClusterError) -> Self {
        Self::Cluster(e)
    }
}

/// Checks, before any snapshot, that each namespace with claims to move holds what the movers
/// authenticate with (the service account, or the credentials Secret with its keys).
async fn check_credentials(ctx: &VolumeContext<'_>, claims: &[Claim]) -> Result<(), VolumesError> {
    let namespaces: std::collections::BTreeSet<&str> =
        claims.iter().map(|c| c.namespace.as_str()).collect();
    for ns in namespaces {
        let (sa, keys) = match ctx.credentials.need() {
            Need::Nothing => return Ok(()),
            Need::ServiceAccount(sa) => (
                crate::cluster::objects::get(ctx.client, SERVICE_ACCOUNTS, ns, sa)
                    .await?
                    .is_some(),
                None,
            ),
            // The keys only: a Secret's values are never read here.
            Need::Secret(name, _) => (
                false,
                crate::cluster::objects::get(ctx.client, SECRETS, ns, name)
                    .await?
                    .map(|s| {
                        s["data"]
                            .as_object()
                            .map(|d| d.keys().cloned().collect::<Vec<_>>())
                            .unwrap_or_default()
                    }),
            ),
        };
        if let Some(e) = ctx
            .credentials
            .missing_in(ctx.location_name, ns, sa, keys.as_deref())
        {
            return Err(VolumesError::Credentials(e));
        }
    }
    Ok(())
}

/// Sweeps leftovers, then backs up every claim in scope.
pub async fn back_up(
    ctx: &VolumeContext<'_>,
    filters: &Filters,
    repo: &RepoReader,
) -> Result<VolumesOutcome, VolumesError> {
    let swept = lease::sweep(
        ctx.client,
        &crate::cluster::labels::temporary_selector(),
        &TEMPORARY_KINDS,
    )
    .await?;
    let found = discover::claims(ctx.client, filters, ctx.settings).await?;
    check_credentials(ctx, &found.claims).await?;
    let names: Vec<(String, String)> = found
        .claims
        .iter()
        .map(|c| (c.namespace.clone(), c.name.clone()))
        .collect();
    let parents = parents(repo, &names).await;
    tracing::info!(
        volumes = found.claims.len(),
        refused = found.refused.len(),
        swept = swept.deleted.len(),
        "backing up volume data"
    );
    let runs: Vec<one::VolumeRun> = futures::stream::iter(found.claims.iter())
        .map(|c| {
            let parent = parents.get(&(c.namespace.clone(), c.name.clone())).cloned();
            one::back_up(ctx, c, parent)
        })
        .buffer_unordered(ctx.settings.parallelism.max(1))
        .collect()
        .await;
    let mut out = VolumesOutcome {
        swept,
        records: found.refused,
        ..Default::default()
    };
    for r in runs {
        if let Some(report) = r.report {
            out.reports
                .push((r.record.namespace.clone(), r.record.pvc.clone(), report));
        }
        out.records.push(r.record);
    }
    out.records
        .sort_by(|a, b| (&a.namespace, &a.pvc).cmp(&(&b.namespace, &b.pvc)));
    Ok(out)
}
