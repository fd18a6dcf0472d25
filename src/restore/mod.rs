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
pub use point::{PassReason, PassedOver, PointOptions, RestorePoint};

use std::collections::BTreeSet;

use crate::cluster::ClusterError;
use crate::repo::{BackupName, Manifest, RepoError, RepoReader};

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
    /// No committed backup on this location is a usable restore point.
    #[error("no usable backup in {location}{}{}", if passed_over.is_empty() { String::new() } else { format!(" (passed over: {})", passed_over.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")) }, if unreadable.is_empty() { String::new() } else { format!(" (manifest unreadable: {})", unreadable.iter().map(|u| format!("{}: {}", u.name, u.error)).collect::<Vec<_>>().join("; ")) })]
    NoRestorePoint {
        /// The location.
        location: String,
        /// Backups that were not usable, and why.
        passed_over: Vec<PassedOver>,
        /// Backups whose manifest could not be read.
        unreadable: Vec<crate::repo::Unreadable>,
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

/// Risk kinds that mean the restore does not bring back all the data: a run with any of them
/// ends with exit 3, never 0.
pub const DATA_RISKS: [&str; 3] = ["no-volume-data", "partial-backup", "claim-not-ours"];

/// The plan's risks that mean data is not brought back (see [`DATA_RISKS`]).
pub fn data_risks(plan: &Plan) -> Vec<&Risk> {
    plan.risks
        .iter()
        .filter(|r| DATA_RISKS.contains(&r.kind))
        .collect()
}

/// Chooses the restore point, reads its objects, looks at the target and plans. Reads only.
pub async fn prepare(
    repo: &RepoReader,
    client: &kube::Client,
    backup: Option<&BackupName>,
    mut choice: PointOptions,
    mut opts: PlanOptions,
) -> Result<Plan, RestoreError> {
    choice.include_namespaces = opts.filters.include_namespaces.clone();
    choice.exclude_namespaces = opts.filters.exclude_namespaces.clone();
    choice.claims_restored = crate::filter::resource_allowed(
        &opts.filters.include_resources,
        &opts.filters.exclude_resources,
        "",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
    );
    choice.replica = opts.replica;
    let (manifest, point) = point::choose(repo, backup, &choice).await?;
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
    let risks;
    (plan.volumes, plan.volume_notes, risks) =
        plan::plan_volumes(manifest.volumes(), &plan.items, &opts.mappings, &view);
    if !choice.no_volumes {
        plan.risks.extend(risks);
    }
    mark_fills(&mut plan, manifest.name.as_str());
    shortfalls(&manifest, &choice, &mut plan);
    Ok(plan)
}

/// Claims the restore creates and fills carry the backup their data comes from and a fill
/// state of `pending` from the moment they exist, so a rerun after a kill knows to fill them.
fn mark_fills(plan: &mut Plan, backup: &str) {
    for f in plan.volumes.iter().filter(|f| !f.again) {
        if let Some(item) = plan.items.iter_mut().find(|i| {
            i.kind == "PersistentVolumeClaim"
                && i.group.is_empty()
                && i.action == Action::Create
                && i.namespace == f.namespace
                && i.name == f.pvc
        }) && let Some(meta) = item.object["metadata"].as_object_mut()
        {
            let annotations = meta
                .entry("annotations")
                .or_insert_with(|| serde_json::json!({}));
            annotations[plan::FILLED_FROM] = backup.into();
            annotations[plan::FILL_STATE] = "pending".into();
        }
    }
}

/// What the chosen backup cannot bring back, as risks of the plan: a PartiallyFailed backup
/// (with its warnings), and each claim the restore creates without its data.
fn shortfalls(manifest: &Manifest, choice: &PointOptions, plan: &mut Plan) {
    let mut risks = Vec::new();
    if manifest.is_partial() {
        risks.push(Risk {
            kind: "partial-backup",
            message: format!(
                "backup {} is PartiallyFailed: {}",
                manifest.name,
                manifest.warnings.join("; ")
            ),
        });
    }
    if !choice.no_volumes {
        let filled: BTreeSet<(&str, &str)> = plan
            .volumes
            .iter()
            .map(|f| (f.namespace.as_str(), f.pvc.as_str()))
            .collect();
        // A claim bound again to its restored pre-provisioned volume keeps its volume name: its
        // data is there.
        for i in plan.items.iter().filter(|i| {
            i.kind == "PersistentVolumeClaim"
                && i.group.is_empty()
                && i.action == Action::Create
                && i.object.pointer("/spec/volumeName").is_none()
        }) {
            if filled.contains(&(i.namespace.as_str(), i.name.as_str())) {
                continue;
            }
            let source_ns = plan
                .mappings
                .namespaces
                .iter()
                .find(|(_, to)| **to == i.namespace)
                .map_or(i.namespace.as_str(), |(from, _)| from.as_str());
            risks.push(Risk {
                kind: "no-volume-data",
                message: format!(
                    "claim {} is created without data: {}",
                    i.display(),
                    why_no_data(manifest, source_ns, &i.name)
                ),
            });
        }
    }
    plan.risks.extend(risks);
    plan.risks.sort();
    plan.risks.dedup();
}

/// Why backup `m` holds no data of claim `ns/pvc`, in its own words where it recorded them.
fn why_no_data(m: &Manifest, ns: &str, pvc: &str) -> String {
    let recorded = m
        .details
        .scope
        .as_ref()
        .and_then(|s| s.claims.iter().find(|c| c.namespace == ns && c.pvc == pvc))
        .and_then(|c| c.reason.clone())
        .or_else(|| {
            m.volumes()
                .iter()
                .find(|r| r.namespace == ns && r.pvc == pvc)
                .and_then(|r| r.error.clone())
        });
    match recorded {
        Some(why) => format!("backup {}: {why}", m.name),
        None if m.details.scope.as_ref().is_some_and(|s| !s.volume_data)
            || (m.details.scope.is_none() && m.details.volumes.is_none()) =>
        {
            format!("backup {} took no volume data", m.name)
        }
        None => format!("backup {} holds no data of it", m.name),
    }
}
