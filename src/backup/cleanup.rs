//! An interrupted backup's own temporary objects, removed before the process exits: the
//! VolumeSnapshots, claims and mover Jobs labelled with its name. Bounded, so the process ends
//! within the pod's grace period; whatever is left is swept by a later run once its lease
//! lapses.

use std::time::Duration;

use super::volumes::TEMPORARY_KINDS;
use crate::cluster::ClusterError;
use crate::cluster::labels::{BACKUP_LABEL, temporary_selector};
use crate::cluster::objects;

/// How long an interrupted run may spend deleting its temporary objects: well inside the
/// grace period the rendered CronJob gives its pod ([`GRACE_PERIOD_SECONDS`]).
pub const WITHIN: Duration = Duration::from_secs(15);

/// The pod grace period of a scheduled backup: the cleanup, the commit check and the status
/// record, with room to spare (Kubernetes' default of 30 s is too tight under load).
pub const GRACE_PERIOD_SECONDS: i64 = 60;

/// What the cleanup did.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanedUp {
    /// `kind namespace/name` of each object deleted and gone.
    pub deleted: Vec<String>,
    /// Objects deleted but not gone in time, or not deleted: a later run sweeps them.
    pub left: Vec<String>,
}

/// Deletes the temporary objects of backup `name` (Jobs first: they hold the claims, which
/// hold the snapshots) and waits for them to go, all within `within`.
pub async fn remove_run_objects(
    client: &kube::Client,
    name: &str,
    within: Duration,
) -> Result<CleanedUp, ClusterError> {
    let selector = format!("{},{BACKUP_LABEL}={name}", temporary_selector());
    let deadline = tokio::time::Instant::now() + within;
    let mut out = CleanedUp::default();
    for kind in TEMPORARY_KINDS {
        let found = match objects::list(client, kind, "", Some(&selector)).await {
            Ok(found) => found,
            Err(e) if e.is_not_found() => continue, // no snapshot CRDs: no snapshots
            Err(e) => return Err(e),
        };
        for obj in found {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
            let n = obj["metadata"]["name"].as_str().unwrap_or_default();
            let what = format!("{} {ns}/{n}", kind.plural);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let gone = async {
                objects::delete(client, kind, ns, n).await?;
                objects::wait_gone(client, kind, ns, n, left).await
            };
            match tokio::time::timeout(left, gone).await {
                Ok(Ok(true)) => out.deleted.push(what),
                Ok(Ok(false)) | Err(_) => out.left.push(what),
                Ok(Err(e)) => {
                    tracing::warn!(object = %what, error = %e, "could not delete a temporary object");
                    out.left.push(what);
                }
            }
        }
    }
    Ok(out)
}
