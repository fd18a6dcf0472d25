//! `lifeboat restore`: choose a restore point that is complete on the location read, plan
//! (pure: tiers, transforms, mappings, risks), then execute with bounded parallelism.
//! Restore only ever holds a read-only repository handle: it cannot write to the repository.

mod apiservices;
mod execute;
pub mod order;
mod owners;
pub mod plan;
mod point;
mod preprovisioned;
mod target;
pub mod volumes;

pub use crate::mover::job::VolumeJobs;
pub use crate::repo::archive::BackupObject;
pub use execute::{ExecOptions, Failure, NoRestoreProgress, Outcome, RestoreProgress, execute};
pub use order::Tier;
pub use plan::{Action, Plan, PlanItem, PlanOptions, RestoreFilters, Risk, TargetView, VolumeFill};
pub use point::{PassedOver, RestorePoint};

use crate::cluster::ClusterError;
use crate::repo::{BackupName, RepoError, RepoReader};

/// Errors that stop a restore before it writes anything.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Reading the repository failed.
    #[error("{what}")]
    Repo {
        /// What was being read.
        what: &'static str,
        /// Why.
        #[source]
        source: RepoError,
    },
    /// The named backup is not complete here: not yet replicated (on a replica) or damaged.
    #[error("backup {}: {} of {} objects {} {}", .0.name, .0.missing, .0.total, .0.absent(), if .0.replica { "to this location; choose another backup, wait for replication, or pass --allow-incomplete" } else { "from this location (it is no replica: they will not arrive); choose another backup or pass --allow-incomplete" })]
    Incomplete(PassedOver),
    /// No committed backup is complete on this location.
    #[error("no complete backup in {location}{}", if passed_over.is_empty() { String::new() } else { format!(" (incomplete: {})", passed_over.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")) })]
    NoRestorePoint {
        /// The location.
        location: String,
        /// Backups that were not complete.
        passed_over: Vec<PassedOver>,
    },
    /// The target cluster could not be examined.
    #[error("{what}")]
    Target {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: ClusterError,
    },
}

/// Chooses the restore point, reads its objects, looks at the target and plans. Reads only.
pub async fn prepare(
    repo: &RepoReader,
    client: &kube::Client,
    backup: Option<&BackupName>,
    allow_incomplete: bool,
    mut opts: PlanOptions,
) -> Result<Plan, RestoreError> {
    let (manifest, point) = point::choose(repo, backup, allow_incomplete, opts.replica).await?;
    tracing::info!(backup = %manifest.name, "restore point chosen");
    let objects = repo
        .resources(&manifest)
        .await
        .map_err(|source| RestoreError::Repo {
            what: "reading the resource archive",
            source,
        })?;
    let view = target::view(client, &objects).await?;
    opts.transform.backup = manifest.name.to_string();
    opts.preprovisioned = preprovisioned::volumes_to_rebind(
        &objects,
        manifest.volumes(),
        &opts.shared_storage_drivers,
    );
    opts.transform.rebound_volumes = opts.preprovisioned.keys().cloned().collect();
    let mut plan = plan::plan(objects, point, &view, &opts);
    (plan.volumes, plan.volume_notes) =
        plan::plan_volumes(manifest.volumes(), &plan.items, &opts.mappings);
    Ok(plan)
}
