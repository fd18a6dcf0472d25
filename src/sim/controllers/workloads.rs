//! The workload controllers: StatefulSet → PVCs and Pods, Deployment → ReplicaSet → Pods,
//! Job → Pods, DaemonSet → a Pod per node, each child carrying a controller ownerReference to its parent.
//!
//! Simplifications, each visible to a careful client: a changed pod template is not rolled out
//! to a StatefulSet's existing pods; a Deployment replaces its ReplicaSet in one step (scales the
//! old ones to 0) instead of a rolling surge; Jobs retry failed pods without back-off delay and
//! do not support Indexed completion.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    Controller, Error, Kind, Objects, controller_uid, is_deleting, labels, name, namespace, now,
    owner_ref, pod_finished, pod_phase, pod_ready, uid,
};

/// Writes `status` as the object's status unless it already is.
async fn write_status(objects: &Objects, k: Kind, obj: &Value, status: Value) -> Result<(), Error> {
    if obj["status"] == status {
        return Ok(());
    }
    // Optimistic: computed from `obj`, so it must not overwrite a newer status.
    let mut obj = obj.clone();
    obj["status"] = status;
    objects.update_status(k, obj).await?;
    Ok(())
}

/// A condition of type `ty`, keeping the previous lastTransitionTime when its status is unchanged
/// (so a resync does not rewrite an unchanged status).
fn condition(prev: &Value, ty: &str, status: bool, reason: &str, message: &str) -> Value {
    let status = if status { "True" } else { "False" };
    let since = prev["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty && c["status"] == status))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(now);
    json!({
        "type": ty,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "lastUpdateTime": since,
    })
}

/// Returns true if and only if the object has condition `ty` with status True.
fn has_condition(obj: &Value, ty: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// A short hash of a pod template, in the alphabet of generated names (the
/// `pod-template-hash` / `controller-revision-hash` label).
fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .take(10)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The pods in `ns` whose controller is `owner`, not being deleted.
fn owned<'a>(pods: &'a [Value], owner: &Value) -> Vec<&'a Value> {
    let ns = namespace(owner);
    pods.iter()
        .filter(|p| namespace(p) == ns && controller_uid(p) == Some(uid(owner)) && !is_deleting(p))
        .collect()
}

/// A pod from a workload's template: its labels, annotations and spec, owned by `owner`.
fn pod_from_template(
    template: &Value,
    owner_kind: Kind,
    owner: &Value,
    extra_labels: Map<String, Value>,
) -> Value {
    let mut l = labels(&template["metadata"]);
    l.extend(extra_labels);
    json!({
        "metadata": {
            "namespace": namespace(owner),
            "labels": l,
            "annotations": template["metadata"]["annotations"],
            "ownerReferences": [owner_ref(owner_kind, owner)],
        },
        "spec": template["spec"],
    })
}

fn int(v: &Value, default: i64) -> i64 {
    v.as_i64().unwrap_or(default)
}

// ---- StatefulSet

/// See the module doc.
pub(crate) struct StatefulSetController;

impl Controller for StatefulSetController {
    const NAME: &'static str = "statefulset";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::StatefulSet, Kind::Pod]
    }

    async fn pass(&mut self, objects: &Objects) -> Result<(), Error> {
        let pods = objects.list(Kind::Pod, None).await?;
        let mut result = Ok(());
        for sts in objects.list(Kind::StatefulSet, None).await? {
            if !is_deleting(&sts)
                && let Err(e) = reconcile_statefulset(objects, &sts, &pods).await
            {
                result = Err(e);
            }
        }
        result
    }
}

async fn reconcile_statefulset(
    objects: &Objects,
    sts: &Value,
    pods: &[Value],
) -> Result<(), Error> {
    let ns = namespace(sts).unwrap_or("default");
    let set = name(sts);
    let spec = &sts["spec"];
    let replicas = int(&spec["replicas"], 1);
    let parallel = spec["podManagementPolicy"] == "Parallel";
    let revision = format!("{set}-{}", template_hash(&spec["template"]));
    let mut by_ordinal: BTreeMap<i64, &Value> = BTreeMap::new();
    for pod in owned(pods, sts) {
        let ordinal = name(pod)
            .strip_prefix(&format!("{set}-"))
            .and_then(|o| o.parse::<i64>().ok());
        match ordinal {
            // A finished pod of a StatefulSet is replaced, as the real controller does.
            Some(o) if o < replicas && !pod_finished(pod) => {
                by_ordinal.insert(o, pod);
            }
            _ => objects.delete(Kind::Pod, Some(ns), name(pod)).await?,
        }
    }
    for ordinal in 0..replicas {
        ensure_claims(objects, sts, ordinal).await?;
        if let Some(pod) = by_ordinal.get(&ordinal) {
            if !parallel && !pod_ready(pod) {
                break; // OrderedReady: the next ordinal waits for this one
            }
            continue;
        }
        let pod = statefulset_pod(sts, ordinal, &revision);
        if let Some(created) = objects.create(Kind::Pod, pod).await? {
            tracing::debug!(pod = %format!("{ns}/{}", name(&created)), "statefulset created pod");
        }
        if !parallel {
            break;
        }
    }
    let ready = by_ordinal.values().filter(|p| pod_ready(p)).count();
    let status = json!({
        "observedGeneration": sts["metadata"]["generation"],
        "replicas": by_ordinal.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": by_ordinal.len(),
        "updatedReplicas": by_ordinal.len(),
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
    });
    write_status(objects, Kind::StatefulSet, sts, status).await
}

/// Creates the claims of ordinal `ordinal` from the volumeClaimTemplates, adopting (never
/// replacing) existing claims of the same name, as the real controller does: that is what lets a
/// restore pre-create the claims with their data before the StatefulSet.
async fn ensure_claims(objects: &Objects, sts: &Value, ordinal: i64) -> Result<(), Error> {
    let ns = namespace(sts).unwrap_or("default");
    for tpl in sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let claim = format!("{}-{}-{ordinal}", name(tpl), name(sts));
        if objects.get(Kind::Pvc, Some(ns), &claim).await?.is_some() {
            continue;
        }
        let mut l = labels(&tpl["metadata"]);
        if let Some(sel) = sts["spec"]["selector"]["matchLabels"].as_object() {
            l.extend(sel.clone());
        }
        let mut pvc = json!({
            "metadata": {
                "name": claim,
                "namespace": ns,
                "labels": l,
                "annotations": tpl["metadata"]["annotations"],
            },
            "spec": tpl["spec"],
        });
        if sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete" {
            pvc["metadata"]["ownerReferences"] = json!([owner_ref(Kind::StatefulSet, sts)]);
        }
        objects.create(Kind::Pvc, pvc).await?;
    }
    Ok(())
}

fn statefulset_pod(sts: &Value, ordinal: i64, revision: &str) -> Value {
    let set = name(sts);
    let pod_name = format!("{set}-{ordinal}");
    let mut extra = Map::new();
    extra.insert("statefulset.kubernetes.io/pod-name".into(), json!(pod_name));
    extra.insert(
        "apps.kubernetes.io/pod-index".into(),
        json!(ordinal.to_string()),
    );
    extra.insert("controller-revision-hash".into(), json!(revision));
    let mut pod = pod_from_template(&sts["spec"]["template"], Kind::StatefulSet, sts, extra);
    pod["metadata"]["name"] = json!(pod_name);
    pod["spec"]["hostname"] = json!(pod_name);
    if let Some(svc) = sts["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        pod["spec"]["subdomain"] = json!(svc);
    }
    let mut volumes: Vec<Value> = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for tpl in sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let claim = format!("{}-{set}-{ordinal}", name(tpl));
        volumes.retain(|v| v["name"] != name(tpl));
        volumes.push(json!({"name": name(tpl), "persistentVolumeClaim": {"claimName": claim}}));
    }
    pod["spec"]["volumes"] = json!(volumes);
    pod
}

// ---- Deployment

/// See the module doc.
pub(crate) struct DeploymentController;

impl Controller for DeploymentController {
    const NAME: &'static str = "deployment";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::Deployment, Kind::ReplicaSet]
    }

    async fn pass(&mut self, objects: &Objects) -> Result<(), Error> {
        let sets = objects.list(Kind::ReplicaSet, None).await?;
        let mut result = Ok(());
        for deploy in objects.list(Kind::Deployment, None).await? {
            if !is_deleting(&deploy)
                && let Err(e) = reconcile_deployment(objects, &deploy, &sets).await
            {
                result = Err(e);
            }
        }
        result
    }
}

async fn reconcile_deployment(
    objects: &Objects,
    deploy: &Value,
    sets: &[Value],
) -> Result<(), Error> {
    let ns = namespace(deploy).unwrap_or("default");
    let replicas = int(&deploy["spec"]["replicas"], 1);
    let hash = template_hash(&deploy["spec"]["template"]);
    let rs_name = format!("{}-{hash}", name(deploy));
    let mine = owned(sets, deploy);
    let revision = mine
        .iter()
        .filter_map(|rs| {
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str()
        })
        .filter_map(|r| r.parse::<i64>().ok())
        .max()
        .unwrap_or(0);
    let current = mine.iter().find(|rs| name(rs) == rs_name).copied();
    match current {
        None => {
            let mut template = deploy["spec"]["template"].clone();
            template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = deploy["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let mut l = labels(&deploy["spec"]["template"]["metadata"]);
            l.insert("pod-template-hash".into(), json!(hash));
            let rs = json!({
                "metadata": {
                    "name": rs_name,
                    "namespace": ns,
                    "labels": l,
                    "annotations": {
                        "deployment.kubernetes.io/revision": (revision + 1).to_string(),
                        "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                        "deployment.kubernetes.io/max-replicas": replicas.to_string(),
                    },
                    "ownerReferences": [owner_ref(Kind::Deployment, deploy)],
                },
                "spec": {
                    "replicas": replicas,
                    "minReadySeconds": deploy["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                    "selector": selector,
                    "template": template,
                },
            });
            objects.create(Kind::ReplicaSet, rs).await?;
        }
        Some(rs) if int(&rs["spec"]["replicas"], 1) != replicas => {
            let mut rs = rs.clone();
            rs["spec"]["replicas"] = json!(replicas);
            rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
                json!(replicas.to_string());
            objects.update(Kind::ReplicaSet, rs).await?;
        }
        Some(_) => {}
    }
    // The old ReplicaSets go to zero at once (a Recreate, whatever the strategy says).
    for old in mine.iter().filter(|rs| name(rs) != rs_name) {
        if int(&old["spec"]["replicas"], 1) != 0 {
            let mut old = (*old).clone();
            old["spec"]["replicas"] = json!(0);
            objects.update(Kind::ReplicaSet, old).await?;
        }
    }
    let sum = |field: &str| -> i64 { mine.iter().map(|rs| int(&rs["status"][field], 0)).sum() };
    let updated = current
        .map(|rs| int(&rs["status"]["replicas"], 0))
        .unwrap_or(0);
    let available = sum("availableReplicas");
    let done = current.is_some_and(|rs| int(&rs["status"]["availableReplicas"], 0) >= replicas)
        && sum("replicas") == replicas;
    let status = json!({
        "observedGeneration": deploy["metadata"]["generation"],
        "replicas": sum("replicas"),
        "updatedReplicas": updated,
        "readyReplicas": sum("readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": (replicas - available).max(0),
        "conditions": [
            if available >= replicas {
                condition(deploy, "Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability.")
            } else {
                condition(deploy, "Available", false, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
            },
            if done {
                condition(deploy, "Progressing", true, "NewReplicaSetAvailable", &format!("ReplicaSet \"{rs_name}\" has successfully progressed."))
            } else {
                condition(deploy, "Progressing", true, "ReplicaSetUpdated", &format!("ReplicaSet \"{rs_name}\" is progressing."))
            },
        ],
    });
    write_status(objects, Kind::Deployment, deploy, status).await
}

// ---- ReplicaSet

/// See the module doc.
pub(crate) struct ReplicaSetController;

impl Controller for ReplicaSetController {
    const NAME: &'static str = "replicaset";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::ReplicaSet, Kind::Pod]
    }

    async fn pass(&mut self, objects: &Objects) -> Result<(), Error> {
        let pods = objects.list(Kind::Pod, None).await?;
        let mut result = Ok(());
        for rs in objects.list(Kind::ReplicaSet, None).await? {
            if !is_deleting(&rs)
                && let Err(e) = reconcile_replicaset(objects, &rs, &pods).await
            {
                result = Err(e);
            }
        }
        result
    }
}

async fn reconcile_replicaset(objects: &Objects, rs: &Value, pods: &[Value]) -> Result<(), Error> {
    let ns = namespace(rs).unwrap_or("default");
    let replicas = int(&rs["spec"]["replicas"], 1);
    let mut active = Vec::new();
    for pod in owned(pods, rs) {
        if pod_finished(pod) {
            // A finished pod of a ReplicaSet is replaced (and, here, removed at once).
            objects.delete(Kind::Pod, Some(ns), name(pod)).await?;
        } else {
            active.push(pod);
        }
    }
    let have = active.len() as i64;
    for _ in have..replicas {
        let mut pod = pod_from_template(&rs["spec"]["template"], Kind::ReplicaSet, rs, Map::new());
        pod["metadata"]["generateName"] = json!(format!("{}-", name(rs)));
        objects.create(Kind::Pod, pod).await?;
    }
    if have > replicas {
        // Scale down the pods that are not ready first, as the real controller prefers.
        active.sort_by_key(|p| pod_ready(p));
        for pod in active.iter().take((have - replicas) as usize) {
            objects.delete(Kind::Pod, Some(ns), name(pod)).await?;
        }
        active.drain(..(have - replicas) as usize);
    }
    let ready = active.iter().filter(|p| pod_ready(p)).count();
    let status = json!({
        "observedGeneration": rs["metadata"]["generation"],
        "replicas": active.len(),
        "fullyLabeledReplicas": active.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
    });
    write_status(objects, Kind::ReplicaSet, rs, status).await
}

// ---- Job

/// See the module doc.
pub(crate) struct JobController;

impl Controller for JobController {
    const NAME: &'static str = "job";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::Job, Kind::Pod]
    }

    async fn pass(&mut self, objects: &Objects) -> Result<(), Error> {
        let pods = objects.list(Kind::Pod, None).await?;
        let mut result = Ok(());
        for job in objects.list(Kind::Job, None).await? {
            if !is_deleting(&job)
                && let Err(e) = reconcile_job(objects, &job, &pods).await
            {
                result = Err(e);
            }
        }
        result
    }
}

/// When a finished Job's `ttlSecondsAfterFinished` has passed, deletes it (the garbage
/// collector then deletes its pods), as the TTL-after-finished controller does.
async fn expire_finished_job(objects: &Objects, job: &Value) -> Result<(), Error> {
    let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_i64() else {
        return Ok(());
    };
    let finished = job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
        .find_map(|c| {
            c["lastTransitionTime"]
                .as_str()?
                .parse::<jiff::Timestamp>()
                .ok()
        });
    let expired =
        finished.is_some_and(|t| jiff::Timestamp::now().duration_since(t).as_secs() >= ttl);
    if expired {
        tracing::info!(job = %format!("{}/{}", namespace(job).unwrap_or(""), name(job)), "finished job's TTL passed; deleting it");
        objects.delete(Kind::Job, namespace(job), name(job)).await?;
    }
    Ok(())
}

/// The restarts of a pod's containers (which count as failures of a Job with `OnFailure`).
fn restarts(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| int(&c["restartCount"], 0))
        .sum()
}

async fn reconcile_job(objects: &Objects, job: &Value, pods: &[Value]) -> Result<(), Error> {
    if has_condition(job, "Complete") || has_condition(job, "Failed") {
        return expire_finished_job(objects, job).await;
    }
    let ns = namespace(job).unwrap_or("default");
    let spec = &job["spec"];
    let completions = int(&spec["completions"], 1);
    let parallelism = int(&spec["parallelism"], 1);
    let backoff_limit = int(&spec["backoffLimit"], 6);
    let mine = owned(pods, job);
    let succeeded = mine.iter().filter(|p| pod_phase(p) == "Succeeded").count() as i64;
    let failed = mine.iter().filter(|p| pod_phase(p) == "Failed").count() as i64;
    let active: Vec<&&Value> = mine.iter().filter(|p| !pod_finished(p)).collect();
    // With restartPolicy OnFailure a failure is a container restart, not a failed pod.
    let restarted: i64 = active.iter().map(|p| restarts(p)).sum();
    let start = job["status"]["startTime"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(now);
    let deadline_passed = spec["activeDeadlineSeconds"].as_i64().is_some_and(|secs| {
        start
            .parse::<jiff::Timestamp>()
            .is_ok_and(|t| jiff::Timestamp::now().duration_since(t).as_secs() >= secs)
    });

    let mut status = json!({
        "startTime": start,
        "active": active.len(),
        "ready": active.iter().filter(|p| pod_ready(p)).count(),
        "succeeded": succeeded,
        "failed": failed,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    });
    let finish = |status: &mut Value, ok: bool, reason: &str, message: &str| {
        let (target, done) = if ok {
            ("SuccessCriteriaMet", "Complete")
        } else {
            ("FailureTarget", "Failed")
        };
        status["conditions"] = json!([
            condition(job, target, true, reason, message),
            condition(job, done, true, reason, message),
        ]);
        status["active"] = json!(0);
        status["ready"] = json!(0);
        if ok {
            status["completionTime"] = json!(now());
        }
    };
    if succeeded >= completions {
        finish(
            &mut status,
            true,
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
        tracing::info!(job = %format!("{ns}/{}", name(job)), "job complete");
    } else if failed + restarted > backoff_limit || deadline_passed {
        let (reason, message) = if deadline_passed {
            (
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )
        } else {
            (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        };
        for pod in &active {
            objects.delete(Kind::Pod, Some(ns), name(pod)).await?;
        }
        finish(&mut status, false, reason, message);
        tracing::info!(job = %format!("{ns}/{}", name(job)), reason, "job failed");
    } else if spec["suspend"] != true {
        let want = parallelism.min(completions - succeeded);
        let mut extra = Map::new();
        for key in ["batch.kubernetes.io/job-name", "job-name"] {
            extra.insert(key.into(), json!(name(job)));
        }
        for key in ["batch.kubernetes.io/controller-uid", "controller-uid"] {
            extra.insert(key.into(), json!(uid(job)));
        }
        for _ in active.len() as i64..want {
            let mut pod = pod_from_template(&spec["template"], Kind::Job, job, extra.clone());
            pod["metadata"]["generateName"] = json!(format!("{}-", name(job)));
            objects.create(Kind::Pod, pod).await?;
        }
        status["active"] = json!(want.max(active.len() as i64));
    }
    write_status(objects, Kind::Job, job, status).await
}

// ---- DaemonSet

/// See the module doc.
pub(crate) struct DaemonSetController;

impl Controller for DaemonSetController {
    const NAME: &'static str = "daemonset";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::DaemonSet, Kind::Pod, Kind::Node]
    }

    async fn pass(&mut self, objects: &Objects) -> Result<(), Error> {
        let sets = objects.list(Kind::DaemonSet, None).await?;
        if sets.is_empty() {
            return Ok(());
        }
        let pods = objects.list(Kind::Pod, None).await?;
        let nodes: Vec<Value> = objects
            .list(Kind::Node, None)
            .await?
            .into_iter()
            .filter(|n| n["spec"]["unschedulable"] != true && !is_deleting(n))
            .collect();
        let mut result = Ok(());
        for ds in sets {
            if !is_deleting(&ds)
                && let Err(e) = reconcile_daemonset(objects, &ds, &pods, &nodes).await
            {
                result = Err(e);
            }
        }
        result
    }
}

/// The node a DaemonSet pod is pinned to (by its `matchFields` node affinity, as the real
/// controller pins them before the scheduler binds them).
fn pinned_node(pod: &Value) -> Option<&str> {
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
        ["matchFields"][0]["values"][0]
        .as_str()
}

async fn reconcile_daemonset(
    objects: &Objects,
    ds: &Value,
    pods: &[Value],
    nodes: &[Value],
) -> Result<(), Error> {
    let ns = namespace(ds).unwrap_or("default");
    let template = &ds["spec"]["template"];
    let wanted: Vec<&str> = nodes
        .iter()
        .filter(|n| super::scheduler::node_fits(template, n))
        .map(name)
        .collect();
    let mut have: BTreeMap<&str, &Value> = BTreeMap::new();
    for pod in owned(pods, ds) {
        match pinned_node(pod) {
            Some(node)
                if wanted.contains(&node) && !pod_finished(pod) && !have.contains_key(node) =>
            {
                have.insert(node, pod);
            }
            // Finished, duplicate, or on a node it no longer fits: replaced or removed.
            _ => objects.delete(Kind::Pod, Some(ns), name(pod)).await?,
        }
    }
    let hash = template_hash(template);
    for node in wanted.iter().filter(|n| !have.contains_key(*n)) {
        let mut extra = Map::new();
        extra.insert("controller-revision-hash".into(), json!(hash));
        extra.insert(
            "pod-template-generation".into(),
            json!(
                ds["metadata"]["generation"]
                    .as_i64()
                    .unwrap_or(1)
                    .to_string()
            ),
        );
        let mut pod = pod_from_template(template, Kind::DaemonSet, ds, extra);
        pod["metadata"]["generateName"] = json!(format!("{}-", name(ds)));
        pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
        });
        objects.create(Kind::Pod, pod).await?;
    }
    let scheduled = have
        .values()
        .filter(|p| p["spec"]["nodeName"].is_string())
        .count();
    let ready = have.values().filter(|p| pod_ready(p)).count();
    let status = json!({
        "observedGeneration": ds["metadata"]["generation"],
        "desiredNumberScheduled": wanted.len(),
        "currentNumberScheduled": scheduled,
        "updatedNumberScheduled": scheduled,
        "numberMisscheduled": 0,
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": wanted.len() - ready.min(wanted.len()),
    });
    write_status(objects, Kind::DaemonSet, ds, status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statefulset_pods_mount_their_ordinal_claims() {
        let sts = json!({
            "metadata": {"name": "db", "namespace": "shop", "uid": "u1"},
            "spec": {
                "serviceName": "db",
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "x"}],
                    "volumes": [{"name": "data", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}],
            },
        });
        let pod = statefulset_pod(&sts, 2, "db-abc");
        assert_eq!(name(&pod), "db-2");
        assert_eq!(pod["spec"]["hostname"], "db-2");
        assert_eq!(pod["spec"]["subdomain"], "db");
        assert_eq!(pod["metadata"]["labels"]["app"], "db");
        assert_eq!(
            pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            "2"
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        // The template's volume of the claim's name is replaced by the claim.
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-2"}}])
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let prev = json!({"status": {"conditions": [{"type": "Available", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}});
        assert_eq!(
            condition(&prev, "Available", true, "R", "m")["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert_ne!(
            condition(&prev, "Available", false, "R", "m")["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
    }
}
