//! Volume data on restore. Planning (pure): which created claims get their backed-up data.
//! Execution: for each, a mover Job (`lifeboat mover restore`) that mounts the new claim, which
//! also binds a WaitForFirstConsumer claim, and fills it from the read-only location, before
//! any workload starts. A claim whose data fails holds back only the workloads that mount it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use super::plan::{FILL_COMPLETE, FILL_STATE, PlanItem, VolumeFill};
use crate::cluster::job::{self, short_name};
use crate::cluster::labels::CREDENTIALS_LABEL;
use crate::cluster::labels::{temporary_labels, temporary_selector};
use crate::cluster::lease;
use crate::cluster::objects::{self, JOBS, Kind, PODS, PVCS, SECRETS};
use crate::mover::JobReport;
use crate::mover::credentials::MoverCredentials;
use crate::mover::job::{Direction, MOUNT_PATH, MoverJob, VolumeJobs};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::collections::BTreeMap;

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

/// The kinds a restore creates for a while in the target, in deletion order.
pub const TEMPORARY_KINDS: [Kind; 2] = [JOBS, SECRETS];

/// Deletes the temporary objects of earlier runs whose lease lapsed (a killed restore's mover
/// Jobs): every run does, whether or not it has claims to fill.
pub async fn sweep(client: &kube::Client) -> Result<lease::Swept, crate::cluster::ClusterError> {
    lease::sweep(client, &temporary_selector(), &TEMPORARY_KINDS).await
}

/// Fills `fills` with bounded parallelism. Never fails as a whole. A claim's fill state
/// becomes `complete` only once its mover has reported success, which it does only after
/// checking every chunk's sha256 as it wrote it.
/// With credentials handed over just in time, the fills of one namespace run while its
/// credentials Secret exists (created after the namespace, deleted after them), namespace
/// after namespace.
pub async fn fill(
    client: &kube::Client,
    backup: &str,
    fills: &[&VolumeFill],
    jobs: &VolumeJobs,
    credentials: &MoverCredentials,
) -> Vec<VolumeResult> {
    let MoverCredentials::JustInTime { values } = credentials else {
        return fill_all(client, backup, fills, jobs).await;
    };
    let mut by_namespace: BTreeMap<&str, Vec<&VolumeFill>> = BTreeMap::new();
    for f in fills {
        by_namespace
            .entry(f.namespace.as_str())
            .or_default()
            .push(f);
    }
    let lease_for = Duration::from_secs(jobs.settings.lease_seconds);
    let mut out = Vec::new();
    for (ns, fills) in by_namespace {
        let secret = short_name("lifeboat-credentials", &[backup, ns], "restore");
        let mut labels = temporary_labels(backup, "restore-credentials");
        labels.insert(CREDENTIALS_LABEL.to_owned(), "true".to_owned());
        let data: serde_json::Map<String, serde_json::Value> = values
            .expose()
            .iter()
            .map(|(k, v)| (k.clone(), BASE64.encode(v).into()))
            .collect();
        let object = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret,
                "namespace": ns,
                "labels": labels,
                "annotations": lease::lease_annotations(lease_for),
            },
            "type": "Opaque",
            "data": data,
        });
        let created = match objects::create(client, SECRETS, ns, &object).await {
            Ok(_) => Ok(()),
            // A killed run's, within its lease: replace it (this run's values, this run's lease).
            Err(e) if e.is_already_exists() => {
                match objects::delete(client, SECRETS, ns, &secret).await {
                    Ok(_) => objects::create(client, SECRETS, ns, &object)
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = created {
            let why = format!("creating the movers' credentials Secret in namespace {ns}: {e}");
            out.extend(fills.iter().map(|f| failed(f, why.clone())));
            continue;
        }
        let mut jobs = jobs.clone();
        jobs.settings.credentials_secret = Some(secret.clone());
        let results = lease::holding(
            client,
            ns,
            vec![(SECRETS, secret)],
            lease_for,
            fill_all(client, backup, &fills, &jobs),
        )
        .await;
        out.extend(results);
    }
    out
}

async fn fill_all(
    client: &kube::Client,
    backup: &str,
    fills: &[&VolumeFill],
    jobs: &VolumeJobs,
) -> Vec<VolumeResult> {
    futures::stream::iter(fills.iter())
        .map(|f| fill_one(client, backup, f, jobs))
        .buffer_unordered(jobs.settings.parallelism.max(1))
        .collect()
        .await
}

/// A fill that could not be tried.
fn failed(f: &VolumeFill, why: String) -> VolumeResult {
    VolumeResult {
        namespace: f.namespace.clone(),
        pvc: f.pvc.clone(),
        status: "failed",
        files: 0,
        bytes: 0,
        seconds: 0.0,
        error: Some(why),
    }
}

async fn fill_one(
    client: &kube::Client,
    backup: &str,
    f: &VolumeFill,
    jobs: &VolumeJobs,
) -> VolumeResult {
    let t0 = Instant::now();
    if f.again {
        let wait = Duration::from_secs(jobs.settings.timeout_seconds.min(600));
        if let Err(why) = wait_for_earlier_movers(client, &f.namespace, &f.pvc, wait).await {
            tracing::warn!(ns = %f.namespace, pvc = %f.pvc, error = %why, "restoring volume data failed");
            return failed(f, why);
        }
    }
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
        ]
        .into_iter()
        .chain(f.again.then(|| "--empty-first".to_owned()))
        .collect(),
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
    // The data is in: say so on the claim, or a rerun would fill it again.
    let outcome = match outcome {
        Ok(report) => {
            let done = serde_json::Map::from_iter([(
                FILL_STATE.to_owned(),
                serde_json::Value::from(FILL_COMPLETE),
            )]);
            match objects::annotate(client, PVCS, &f.namespace, &f.pvc, &done).await {
                Ok(true) => Ok(report),
                Ok(false) => Err("the claim disappeared while it was filled".to_owned()),
                Err(e) => Err(format!(
                    "the data is in, but marking the claim filled failed: {e}"
                )),
            }
        }
        Err(e) => Err(e),
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

/// Waits until no pod of an earlier mover still runs on the claim. A rerun empties the volume
/// first: the pod of a Job deleted meanwhile (or of a restore killed without cleanup) may still
/// be writing into it until its grace period ends, and would race the emptying.
async fn wait_for_earlier_movers(
    client: &kube::Client,
    ns: &str,
    pvc: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut poll = objects::Poll::new(timeout);
    loop {
        let pods = objects::list(client, PODS, ns, Some(&temporary_selector()))
            .await
            .map_err(|e| format!("listing earlier mover pods: {e}"))?;
        let busy: Vec<&str> = pods
            .iter()
            .filter(|p| still_mounts(p, pvc))
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        if poll.expired() {
            return Err(format!(
                "an earlier mover pod still runs on the claim after {}s ({}); wait for it to end \
                 (or `kubectl -n {ns} delete pod {}`) and run the restore again",
                timeout.as_secs(),
                busy.join(", "),
                busy.join(" ")
            ));
        }
        poll.next().await;
    }
}

/// Whether `pod` mounts claim `pvc` and has not ended (a pod being deleted still runs).
fn still_mounts(pod: &serde_json::Value, pvc: &str) -> bool {
    let ended = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    let mounts = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["persistentVolumeClaim"]["claimName"] == pvc);
    mounts && !ended
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

    #[test]
    fn a_mover_pod_counts_until_it_ends_even_while_being_deleted() {
        let pod = |phase: &str, claim: &str, deleting: bool| {
            let mut p = serde_json::json!({
                "metadata": {"name": "m"},
                "spec": {"volumes": [
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": claim}},
                ]},
                "status": {"phase": phase},
            });
            if deleting {
                p["metadata"]["deletionTimestamp"] = "2026-12-07T00:00:00Z".into();
            }
            p
        };
        assert!(still_mounts(&pod("Running", "data-0", false), "data-0"));
        assert!(still_mounts(&pod("Running", "data-0", true), "data-0"));
        assert!(still_mounts(&pod("Pending", "data-0", false), "data-0"));
        assert!(!still_mounts(&pod("Running", "data-1", false), "data-0"));
        assert!(!still_mounts(&pod("Failed", "data-0", true), "data-0"));
        assert!(!still_mounts(&pod("Succeeded", "data-0", false), "data-0"));
    }

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
        // data-pg-1 exists in the target, not created by a restore: never overwritten.
        let (fills, notes, risks) = plan_volumes(
            &[done, exists, failed],
            &items,
            &mappings,
            &crate::restore::TargetView::default(),
        );
        assert_eq!(fills.len(), 1);
        assert_eq!(risks.len(), 1, "{risks:?}");
        assert_eq!(risks[0].kind, "claim-not-ours");
        assert!(risks[0].message.contains("db-dr/data-pg-1"), "{risks:?}");
        assert_eq!(
            (
                fills[0].namespace.as_str(),
                fills[0].source_namespace.as_str()
            ),
            ("db-dr", "db")
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("logs is created empty") && notes[0].contains("snapshot failed"));
    }

    /// Issue 14: a claim an earlier restore created and did not finish filling is filled
    /// again (emptied first) whatever `--existing` says; one whose fill completed is not.
    #[test]
    fn a_rerun_fills_again_the_claims_whose_fill_did_not_complete() {
        use crate::restore::plan::{FILL_STATE, FILLED_FROM};
        let mut records = Vec::new();
        let mut items = Vec::new();
        let mut target = crate::restore::TargetView::default();
        for (pvc, state) in [
            ("pending", Some("pending")),
            ("done", Some("complete")),
            ("unmarked", None),
        ] {
            let mut r = VolumeRecord::new("db", pvc, VolumeStatus::Completed);
            r.index = Some(format!("backups/b/volumes/db/{pvc}.json"));
            records.push(r);
            let labels = json!({"lifeboat.io/restored-from": "b"});
            items.push(item(
                "PersistentVolumeClaim",
                "db",
                pvc,
                json!({"metadata": {"labels": labels}}),
                Action::SkipExists,
            ));
            let annotations = match state {
                Some(s) => json!({FILLED_FROM: "b", FILL_STATE: s}),
                None => json!({}),
            };
            target.existing.insert(
                (
                    String::new(),
                    "persistentvolumeclaims".into(),
                    "db".into(),
                    pvc.into(),
                ),
                json!({"metadata": {"name": pvc, "annotations": annotations}}),
            );
        }
        let (fills, notes, risks) = plan_volumes(&records, &items, &Mappings::default(), &target);
        assert_eq!(fills.len(), 1, "{fills:?}");
        assert_eq!((fills[0].pvc.as_str(), fills[0].again), ("pending", true));
        assert!(
            notes
                .iter()
                .any(|n| n.contains("db/done") && n.contains("restored earlier")),
            "{notes:?}"
        );
        assert_eq!(risks.len(), 1, "{risks:?}");
        assert!(risks[0].message.contains("db/unmarked"), "{risks:?}");
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
