//! One volume: snapshot → claim from the snapshot → mover Job → index, then clean up whatever
//! happened. The temporary objects' leases are renewed while this runs.

use std::time::{Duration, Instant};

use serde_json::json;

use super::discover::Claim;
use super::hooks::{self, Phase};
use super::{TEMPORARY_KINDS, VolumeContext};
use crate::cluster::job::{self, short_name};
use crate::cluster::labels::temporary_labels;
use crate::cluster::lease as sweep;
use crate::cluster::objects::{self, PODS, PVCS, VOLUME_SNAPSHOTS};
use crate::mover::JobReport;
use crate::mover::job::{Direction, MOUNT_PATH, MoverJob};
use crate::repo::{VolumeRecord, VolumeStatus};

/// What one volume's backup produced: its record, and the mover's report when it succeeded.
pub struct VolumeRun {
    /// For the manifest.
    pub record: VolumeRecord,
    /// The mover's report (index key and digest) when the volume is backed up.
    pub report: Option<JobReport>,
}

/// Backs up one claim; never fails as a whole: a failure is recorded in the result.
pub async fn back_up(ctx: &VolumeContext<'_>, claim: &Claim, parent: Option<String>) -> VolumeRun {
    let t0 = Instant::now();
    let name = short_name(
        "lifeboat",
        &[ctx.backup, &claim.namespace, &claim.name],
        &claim.name,
    );
    let lease = Duration::from_secs(ctx.settings.lease_seconds);
    let mut hook_log = Vec::new();
    // Job first: its pod holds the claim, and the claim holds the snapshot.
    let result = sweep::holding(
        ctx.client,
        &claim.namespace,
        TEMPORARY_KINDS.iter().map(|k| (*k, name.clone())).collect(),
        lease,
        steps(ctx, claim, &name, parent.clone(), &mut hook_log),
    )
    .await;

    let mut record = VolumeRecord::new(&claim.namespace, &claim.name, VolumeStatus::Completed);
    record.storage_class = claim.storage_class.clone();
    record.driver = Some(claim.driver.clone());
    record.capacity = claim.capacity.clone();
    record.snapshot_class = Some(claim.snapshot_class.clone());
    record.seconds = t0.elapsed().as_secs_f64();
    record.hooks = hook_log;
    match result {
        Ok((snapshot_time, report)) => {
            record.snapshot_time = snapshot_time;
            record.index = report.index.as_ref().map(|i| i.key.clone());
            record.parent = parent;
            record.figures = report.figures.clone();
            VolumeRun {
                record,
                report: Some(report),
            }
        }
        Err(why) => {
            record.status = VolumeStatus::Failed;
            record.error = Some(why);
            VolumeRun {
                record,
                report: None,
            }
        }
    }
}

/// The steps; an `Err` is the message for the record.
async fn steps(
    ctx: &VolumeContext<'_>,
    claim: &Claim,
    name: &str,
    parent: Option<String>,
    hook_log: &mut Vec<String>,
) -> Result<(Option<String>, JobReport), String> {
    let ns = claim.namespace.as_str();
    let lease = Duration::from_secs(ctx.settings.lease_seconds);
    let timeout = Duration::from_secs(ctx.settings.timeout_seconds);
    let api = |what: &str, e: crate::cluster::ClusterError| format!("{what}: {e}");

    // 1. Hooks, then the crash-consistent point in time, then the post hooks (always, once
    // pre hooks ran: a frozen file system must be thawed whatever happened).
    let pods = objects::list(ctx.client, PODS, ns, None)
        .await
        .map_err(|e| api("listing the pods that mount the claim", e))?;
    let mounting = hooks::pods_mounting(&pods, &claim.name);
    let pre = hooks::hooks_of(&mounting, &claim.name, Phase::Pre)?;
    let post = hooks::hooks_of(&mounting, &claim.name, Phase::Post)?;
    ctx.progress
        .phase(&format!("volume {ns}/{}: snapshot", claim.name));
    let (ran, pre_failed) = hooks::run(ctx.client, ns, Phase::Pre, &pre).await;
    hook_log.extend(ran);
    let snapshot = match &pre_failed {
        Some(why) => Err(why.clone()),
        None => take_snapshot(ctx, claim, name, lease, timeout).await,
    };
    let (ran, post_failed) = hooks::run(ctx.client, ns, Phase::Post, &post).await;
    hook_log.extend(ran);
    let ready = snapshot?;
    if let Some(why) = post_failed {
        return Err(why);
    }
    let snapshot_time = ready["creationTime"].as_str().map(str::to_owned);
    let size = ready["restoreSize"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| ready["restoreSize"].as_u64().map(|n| n.to_string()))
        .or_else(|| claim.capacity.clone())
        .unwrap_or_else(|| "1Gi".into());

    // 2. A claim of the snapshot for the mover to read, leaving the workload's volume alone.
    let temp = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": temporary_labels(ctx.backup, "snapshot-claim"),
            "annotations": sweep::lease_annotations(lease),
        },
        "spec": {
            "storageClassName": claim.storage_class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": name},
        },
    });
    objects::create(ctx.client, PVCS, ns, &temp)
        .await
        .map_err(|e| api("creating the claim of the snapshot", e))?;

    // 3. The mover.
    ctx.progress
        .phase(&format!("volume {ns}/{}: copying", claim.name));
    let mut args = vec![
        "--backup".to_owned(),
        ctx.backup.to_owned(),
        "--namespace".to_owned(),
        claim.namespace.clone(),
        "--pvc".to_owned(),
        claim.name.clone(),
        "--source".to_owned(),
        MOUNT_PATH.to_owned(),
    ];
    if let Some(p) = &parent {
        args.extend(["--parent".to_owned(), p.clone()]);
    }
    let mut job = MoverJob {
        name: name.to_owned(),
        namespace: ns.to_owned(),
        claim: name.to_owned(),
        direction: Direction::Backup,
        args,
        location: ctx.location,
        settings: ctx.settings,
        labels: temporary_labels(ctx.backup, "mover"),
    }
    .to_object();
    job["metadata"]["annotations"] = sweep::lease_annotations(lease);
    let run = job::run_to_completion(ctx.client, ns, &job, timeout)
        .await
        .map_err(|e| api("running the mover Job", e))?;
    if !run.succeeded {
        return Err(format!(
            "the mover failed: {}; log: {}",
            run.failure.unwrap_or_default(),
            job::log_tail(&run.log, 5)
        ));
    }
    let report = JobReport::find_in_log(&run.log).ok_or_else(|| {
        format!(
            "the mover Job succeeded but left no report in its log (last lines: {})",
            job::log_tail(&run.log, 5)
        )
    })?;
    Ok((snapshot_time, report))
}

/// Creates the VolumeSnapshot and waits until it is ready; returns its status.
async fn take_snapshot(
    ctx: &VolumeContext<'_>,
    claim: &Claim,
    name: &str,
    lease: Duration,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let ns = claim.namespace.as_str();
    let snapshot = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": temporary_labels(ctx.backup, "snapshot"),
            "annotations": sweep::lease_annotations(lease),
        },
        "spec": {
            "volumeSnapshotClassName": claim.snapshot_class,
            "source": {"persistentVolumeClaimName": claim.name},
        },
    });
    objects::create(ctx.client, VOLUME_SNAPSHOTS, ns, &snapshot)
        .await
        .map_err(|e| format!("creating the VolumeSnapshot: {e}"))?;
    objects::wait_for(ctx.client, VOLUME_SNAPSHOTS, ns, name, timeout, |vs| {
        if vs["status"]["readyToUse"] == true {
            Some(Ok(vs["status"].clone()))
        } else {
            vs["status"]["error"]["message"]
                .as_str()
                .map(|m| Err(format!("the snapshot failed: {m}")))
        }
    })
    .await
    .map_err(|e| format!("waiting for the VolumeSnapshot: {e}"))?
    .map_err(|w| format!("VolumeSnapshot {ns}/{name}: {w}"))?
}
