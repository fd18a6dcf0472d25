//! Volume data on restore. Planning (pure): which created claims get their backed-up data.
//! Execution: for each, a mover Job (`lifeboat mover restore`) that mounts the new claim, which
//! also binds a WaitForFirstConsumer claim, and fills it from the read-only location, before
//! any workload starts. A claim whose data fails holds back only the workloads that mount it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use super::plan::{PlanItem, VolumeFill};
use crate::cluster::job::{self, short_name};
use crate::cluster::labels::{temporary_labels, temporary_selector};
use crate::cluster::lease;
use crate::cluster::objects::JOBS;
use crate::mover::JobReport;
use crate::mover::job::{Direction, MOUNT_PATH, MoverJob, VolumeJobs};

/// How one volume's restore ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeResult {
    /// Namespace in the target.
    pub namespace: String,
    /// The claim.
    pub pvc: String,
    /// `restored` or `failed`.
    pub status: &'static str,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Fills `fills` with bounded parallelism. Never fails as a whole.
pub async fn fill(
    client: &kube::Client,
    backup: &str,
    fills: &[&VolumeFill],
    jobs: &VolumeJobs,
) -> Vec<VolumeResult> {
    let selector = temporary_selector();
    if let Err(e) = lease::sweep(client, &selector, &[JOBS]).await {
        tracing::warn!(error = %e, "could not sweep leftover mover Jobs of interrupted runs");
    }
    futures::stream::iter(fills.iter())
        .map(|f| fill_one(client, backup, f, jobs))
        .buffer_unordered(jobs.settings.parallelism.max(1))
        .collect()
        .await
}

async fn fill_one(
    client: &kube::Client,
    backup: &str,
    f: &VolumeFill,
    jobs: &VolumeJobs,
) -> VolumeResult {
    let t0 = Instant::now();
    let name = short_name("lifeboat-restore", &[backup, &f.namespace, &f.pvc], &f.pvc);
    let lease_for = Duration::from_secs(jobs.settings.lease_seconds);
    let mut job = MoverJob {
        name: name.clone(),
        namespace: f.namespace.clone(),
        claim: f.pvc.clone(),
        direction: Direction::Restore,
        args: vec![
            "--backup".into(),
            backup.into(),
            "--namespace".into(),
            f.source_namespace.clone(),
            "--pvc".into(),
            f.source_pvc.clone(),
            "--target".into(),
            MOUNT_PATH.into(),
        ],
        location: &jobs.location,
        settings: &jobs.settings,
        labels: temporary_labels(backup, "restore-mover"),
    }
    .to_object();
    job["metadata"]["annotations"] = lease::lease_annotations(lease_for);
    let run = lease::holding(
        client,
        &f.namespace,
        vec![(JOBS, name.clone())],
        lease_for,
        job::run_to_completion(
            client,
            &f.namespace,
            &job,
            Duration::from_secs(jobs.settings.timeout_seconds),
        ),
    )
    .await;
    let outcome = match run {
        Err(e) => Err(format!("running the mover Job: {e}")),
        Ok(run) if !run.succeeded => Err(format!(
            "the mover failed: {}; log: {}",
            run.failure.unwrap_or_default(),
            job::log_tail(&run.log, 5)
        )),
        Ok(run) => JobReport::find_in_log(&run.log).ok_or_else(|| {
            format!(
                "the mover Job succeeded but left no report (log: {})",
                job::log_tail(&run.log, 5)
            )
        }),
    };
    let mut r = VolumeResult {
        namespace: f.namespace.clone(),
        pvc: f.pvc.clone(),
        status: "restored",
        files: 0,
        bytes: 0,
        seconds: t0.elapsed().as_secs_f64(),
        error: None,
    };
    match outcome {
        Ok(report) => {
            r.files = report.figures.files;
            r.bytes = report.figures.bytes;
        }
        Err(e) => {
            tracing::warn!(ns = %f.namespace, pvc = %f.pvc, error = %e, "restoring volume data failed");
            r.status = "failed";
            r.error = Some(e);
        }
    }
    r
}

/// The claims (in `ns`) a workload's pods mount: pod-template volumes, and for a StatefulSet the
/// claims of its volumeClaimTemplates, as prefixes `<template>-<name>-`.
fn mounted_claims(item: &PlanItem) -> (Vec<String>, Vec<String>) {
    let o = &item.object;
    let pod_spec = match item.kind.as_str() {
        "Pod" => &o["spec"],
        "CronJob" => &o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &o["spec"]["template"]["spec"],
    };
    let names = pod_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .map(str::to_owned)
        .collect();
    let prefixes = if item.kind == "StatefulSet" {
        o["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["metadata"]["name"].as_str())
            .map(|t| format!("{t}-{}-", item.name))
            .collect()
    } else {
        Vec::new()
    };
    (names, prefixes)
}

/// The failed claim a workload mounts, if any: it must not start on an empty or partial volume.
pub fn held_back_by(item: &PlanItem, failed: &BTreeSet<(String, String)>) -> Option<String> {
    if failed.is_empty() {
        return None;
    }
    let (names, prefixes) = mounted_claims(item);
    failed
        .iter()
        .filter(|(ns, _)| *ns == item.namespace)
        .find(|(_, claim)| {
            names.iter().any(|n| n == claim)
                || prefixes.iter().any(|p| {
                    claim.strip_prefix(p.as_str()).is_some_and(|rest| {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                    })
                })
        })
        .map(|(ns, claim)| format!("{ns}/{claim}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{VolumeRecord, VolumeStatus};
    use crate::restore::Tier;
    use crate::restore::plan::{Action, plan_volumes};
    use crate::transform::Mappings;
    use serde_json::{Value, json};

    fn item(kind: &str, ns: &str, name: &str, object: Value, action: Action) -> PlanItem {
        PlanItem {
            tier: Tier::Workloads,
            action,
            group: if kind == "PersistentVolumeClaim" {
                String::new()
            } else {
                "apps".into()
            },
            version: "v1".into(),
            resource: String::new(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            transforms: vec![],
            reason: None,
            owner_references: vec![],
            object,
        }
    }

    #[test]
    fn only_created_claims_with_completed_data_are_filled_in_the_mapped_namespace() {
        let mut done = VolumeRecord::new("db", "data-pg-0", VolumeStatus::Completed);
        done.index = Some("backups/b/volumes/db/data-pg-0.json".into());
        let mut exists = done.clone();
        exists.pvc = "data-pg-1".into();
        let mut failed = VolumeRecord::new("db", "logs", VolumeStatus::Failed);
        failed.error = Some("snapshot failed".into());
        let items = vec![
            item(
                "PersistentVolumeClaim",
                "db-dr",
                "data-pg-0",
                json!({}),
                Action::Create,
            ),
            item(
                "PersistentVolumeClaim",
                "db-dr",
                "data-pg-1",
                json!({}),
                Action::SkipExists,
            ),
            item(
                "PersistentVolumeClaim",
                "db-dr",
                "logs",
                json!({}),
                Action::Create,
            ),
        ];
        let mappings = Mappings {
            namespaces: [("db".to_owned(), "db-dr".to_owned())].into(),
            ..Default::default()
        };
        let (fills, notes) = plan_volumes(&[done, exists, failed], &items, &mappings);
        assert_eq!(fills.len(), 1);
        assert_eq!(
            (
                fills[0].namespace.as_str(),
                fills[0].source_namespace.as_str()
            ),
            ("db-dr", "db")
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("data-pg-1 exists"));
        assert!(notes[1].contains("logs is created empty") && notes[1].contains("snapshot failed"));
    }

    #[test]
    fn workloads_mounting_a_failed_claim_are_held_back_and_others_are_not() {
        let failed: BTreeSet<(String, String)> =
            [("db".to_owned(), "data-postgres-1".to_owned())].into();
        let sts = item(
            "StatefulSet",
            "db",
            "postgres",
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}}], "template": {"spec": {}}}}),
            Action::Create,
        );
        let deploy = item(
            "Deployment",
            "db",
            "reader",
            json!({"spec": {"template": {"spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data-postgres-1"}}]}}}}),
            Action::Create,
        );
        let other = item(
            "Deployment",
            "db",
            "web",
            json!({"spec": {"template": {"spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "uploads"}}]}}}}),
            Action::Create,
        );
        let elsewhere = item(
            "StatefulSet",
            "shop",
            "postgres",
            sts.object.clone(),
            Action::Create,
        );
        assert_eq!(
            held_back_by(&sts, &failed).as_deref(),
            Some("db/data-postgres-1")
        );
        assert_eq!(
            held_back_by(&deploy, &failed).as_deref(),
            Some("db/data-postgres-1")
        );
        assert_eq!(held_back_by(&other, &failed), None);
        assert_eq!(held_back_by(&elsewhere, &failed), None);
    }
}
