//! The PV controller and the `disk.csi.sim` external provisioner: provisions and binds the claims
//! of StorageClasses whose provisioner is `disk.csi.sim`, releases and deletes volumes whose
//! claims are gone.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::csi::{self, DRIVER};
use super::{Controller, Error, Kind, Objects, is_deleting, name, namespace, now, uid};

/// The label nodes and PV node affinities carry their zone in.
pub(crate) const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

const COMPONENT: &str = "persistentvolume-controller";
const PROVISIONER: &str = "disk.csi.sim_lifeboat-sim";

/// See the module doc.
#[derive(Default)]
pub(crate) struct PvController;

impl Controller for PvController {
    const NAME: &'static str = "persistentvolume";

    fn watches(&self) -> &'static [Kind] {
        &[
            Kind::Pvc,
            Kind::Pv,
            Kind::StorageClass,
            Kind::Pod,
            Kind::VolumeSnapshot,
        ]
    }

    async fn pass(&mut self, objects: &Objects) -> Result<(), Error> {
        let mut result = Ok(());
        let claims = objects.list(Kind::Pvc, None).await?;
        for pvc in &claims {
            if let Err(e) = reconcile_claim(objects, pvc).await {
                result = Err(e);
            }
        }
        let live: HashSet<(String, String, String)> = claims
            .iter()
            .map(|c| {
                (
                    namespace(c).unwrap_or("").to_owned(),
                    name(c).to_owned(),
                    uid(c).to_owned(),
                )
            })
            .collect();
        for pv in objects.list(Kind::Pv, None).await? {
            if let Err(e) = reconcile_volume(objects, pv, &live).await {
                result = Err(e);
            }
        }
        result
    }
}

/// The zones a StorageClass may provision in, on this cluster: its `allowedTopologies` zones
/// that the cluster has, or all the cluster's zones when it names none. Err carries the reason
/// (for the ProvisioningFailed event) when it names zones but none of this cluster's.
pub(crate) fn class_zones(class: &Value, cluster: &[String]) -> Result<Vec<String>, String> {
    let mut named = Vec::new();
    for term in class["allowedTopologies"].as_array().into_iter().flatten() {
        for expr in term["matchLabelExpressions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            // Real CSI drivers use their own topology key (topology.disk.csi.azure.com/zone);
            // any key naming a zone counts.
            if expr["key"].as_str().is_some_and(|k| k.ends_with("zone")) {
                named.extend(
                    expr["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned),
                );
            }
        }
    }
    if named.is_empty() {
        return Ok(cluster.to_vec());
    }
    let allowed: Vec<String> = cluster
        .iter()
        .filter(|z| named.contains(z))
        .cloned()
        .collect();
    if allowed.is_empty() {
        return Err(format!(
            "failed to provision volume with StorageClass {:?}: allowedTopologies name zones [{}], none of which exists in this cluster (zones: {})",
            name(class),
            named.join(", "),
            cluster.join(", "),
        ));
    }
    Ok(allowed)
}

/// The zones a PersistentVolume's node affinity allows, or None if it does not restrict them.
pub(crate) fn volume_zones(pv: &Value) -> Option<Vec<String>> {
    let terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"].as_array()?;
    let mut zones = Vec::new();
    for term in terms {
        for expr in term["matchExpressions"].as_array().into_iter().flatten() {
            if expr["key"].as_str().is_some_and(|k| k.ends_with("zone")) && expr["operator"] == "In"
            {
                zones.extend(
                    expr["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned),
                );
            }
        }
    }
    (!zones.is_empty()).then_some(zones)
}

/// The StorageClass a claim uses: its `storageClassName`, or the default class when the field is
/// absent. Ok(None) when the claim asks for no class (`""`) or no default exists; Err(name) when
/// it names a class that does not exist.
pub(crate) async fn claim_class(
    objects: &Objects,
    pvc: &Value,
) -> Result<Result<Option<Value>, String>, Error> {
    match pvc["spec"]["storageClassName"].as_str() {
        Some("") => Ok(Ok(None)),
        Some(class) => Ok(objects
            .get(Kind::StorageClass, None, class)
            .await?
            .map(Some)
            .ok_or_else(|| class.to_owned())),
        None => Ok(Ok(objects
            .list(Kind::StorageClass, None)
            .await?
            .into_iter()
            .find(|c| {
                c["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                    == "true"
            }))),
    }
}

/// Returns true if and only if the class binds its claims only once a pod using them is scheduled.
pub(crate) fn waits_for_consumer(class: &Value) -> bool {
    class["volumeBindingMode"] == "WaitForFirstConsumer"
}

/// The claim's requested storage, as written.
fn requested(pvc: &Value) -> String {
    pvc["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .unwrap_or("1Gi")
        .to_owned()
}

/// The finalizer that keeps a claim in use by a pod from going away under it.
pub(crate) const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

async fn reconcile_claim(objects: &Objects, pvc: &Value) -> Result<(), Error> {
    if objects.is_real() {
        return provision(objects, pvc).await;
    }
    let finalizers = super::str_list(&pvc["metadata"]["finalizers"]);
    let protected = finalizers.contains(&PVC_PROTECTION);
    if is_deleting(pvc) {
        // A deleted claim stays (Terminating) until no unfinished pod uses it.
        let ns = namespace(pvc).unwrap_or("default");
        if protected && !claim_in_use(objects, ns, name(pvc)).await? {
            let mut released = pvc.clone();
            let rest: Vec<&str> = finalizers
                .into_iter()
                .filter(|f| *f != PVC_PROTECTION)
                .collect();
            released["metadata"]["finalizers"] = json!(rest);
            objects.update(Kind::Pvc, released).await?;
        }
        return Ok(());
    }
    let updated;
    let pvc = if protected {
        pvc
    } else {
        // The real API server adds this at admission; here the controller adds it at once.
        let mut with = pvc.clone();
        let mut list: Vec<&str> = finalizers;
        list.push(PVC_PROTECTION);
        with["metadata"]["finalizers"] = json!(list);
        updated = objects.update(Kind::Pvc, with).await?;
        &updated
    };
    if let Some(volume) = pvc["spec"]["volumeName"].as_str().filter(|v| !v.is_empty()) {
        return reconcile_bound_claim(objects, pvc, volume).await;
    }
    // A PV provisioned before a crash, whose claim update was lost: finish the binding.
    let pv_name = format!("pvc-{}", uid(pvc));
    if let Some(pv) = objects.get(Kind::Pv, None, &pv_name).await? {
        return bind(objects, pvc, &pv, None).await;
    }
    provision(objects, pvc).await
}

/// The external provisioner's part: a volume directory and a PV for a claim of a
/// `disk.csi.sim` class, in the selected node's zone for WaitForFirstConsumer classes. In the
/// simulator it then binds the two as the PV controller would; on a real control plane it
/// provisions only claims the PV controller handed to this driver, and leaves the binding to it.
async fn provision(objects: &Objects, pvc: &Value) -> Result<(), Error> {
    let ns = namespace(pvc).unwrap_or("default");
    let pv_name = format!("pvc-{}", uid(pvc));
    if objects.is_real() {
        let annotations = &pvc["metadata"]["annotations"];
        let bound = pvc["spec"]["volumeName"]
            .as_str()
            .is_some_and(|v| !v.is_empty());
        if is_deleting(pvc)
            || bound
            || annotations["volume.kubernetes.io/storage-provisioner"] != DRIVER
            || objects.get(Kind::Pv, None, &pv_name).await?.is_some()
        {
            return Ok(());
        }
    }
    let class = match claim_class(objects, pvc).await? {
        Ok(Some(class)) => class,
        Ok(None) => return Ok(()),
        Err(missing) => {
            let msg = format!("storageclass.storage.k8s.io {missing:?} not found");
            return objects
                .event(Kind::Pvc, pvc, true, "ProvisioningFailed", &msg, COMPONENT)
                .await;
        }
    };
    if class["provisioner"] != DRIVER {
        return Ok(());
    }
    let cluster = &objects.config().zones;
    let allowed = match class_zones(&class, cluster) {
        Ok(z) => z,
        Err(msg) => {
            return provisioning_failed(objects, pvc, &msg).await;
        }
    };
    let mut selected_node = None;
    let zone = if waits_for_consumer(&class) {
        let node = if objects.is_real() {
            // The real scheduler names the node it picked for the claim's first consumer.
            pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"]
                .as_str()
                .map(str::to_owned)
        } else {
            consumer_node(objects, ns, name(pvc)).await?
        };
        let Some(node) = node else {
            return objects
                .event(
                    Kind::Pvc,
                    pvc,
                    false,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                    COMPONENT,
                )
                .await;
        };
        let zone = objects
            .get(Kind::Node, None, &node)
            .await?
            .and_then(|n| {
                n["metadata"]["labels"][ZONE_LABEL]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        if !allowed.contains(&zone) {
            let msg = format!(
                "failed to provision volume with StorageClass {:?}: the selected node {node} is in zone {zone:?}, which allowedTopologies does not allow",
                name(&class)
            );
            return provisioning_failed(objects, pvc, &msg).await;
        }
        selected_node = Some(node);
        zone
    } else {
        // Spread claims over the allowed zones deterministically, as a real provisioner would
        // spread them over zones at random.
        let h = Sha256::digest(format!("{ns}/{}", name(pvc)).as_bytes());
        allowed[h[0] as usize % allowed.len()].clone()
    };
    let source = match data_source(objects, pvc).await? {
        Ok(source) => source,
        Err(msg) => {
            return provisioning_failed(objects, pvc, &msg).await;
        }
    };

    let dir = csi::volume_dir(&objects.config().state_dir, &pv_name);
    let (d, s) = (dir.clone(), source.clone());
    tokio::task::spawn_blocking(move || csi::create_volume(&d, s.as_deref()))
        .await
        .expect("the CSI copy task does not panic")
        .map_err(|source| Error::Csi {
            op: "create volume",
            path: dir.clone(),
            source,
        })?;
    tracing::info!(pvc = %format!("{ns}/{}", name(pvc)), pv = %pv_name, %zone, "provisioned volume");

    let pv = json!({
        "metadata": {
            "name": pv_name,
            "annotations": {
                "pv.kubernetes.io/provisioned-by": DRIVER,
                "volume.kubernetes.io/provisioner-deletion-secret-name": "",
                "volume.kubernetes.io/provisioner-deletion-secret-namespace": "",
            },
        },
        "spec": {
            "accessModes": pvc["spec"]["accessModes"].as_array().cloned().unwrap_or_else(|| vec![json!("ReadWriteOnce")]),
            "capacity": {"storage": requested(pvc)},
            "csi": {
                "driver": DRIVER,
                "volumeHandle": dir.to_string_lossy(),
                "fsType": class["parameters"]["fsType"].as_str().unwrap_or("ext4"),
                "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": PROVISIONER},
            },
            "claimRef": claim_ref(pvc),
            "persistentVolumeReclaimPolicy": class["reclaimPolicy"].as_str().unwrap_or("Delete"),
            "storageClassName": name(&class),
            "volumeMode": pvc["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
            "mountOptions": class["mountOptions"],
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": [zone]}]}
            ]}},
        },
    });
    let pv = match objects.create(Kind::Pv, pv).await? {
        Some(pv) => pv,
        None => objects
            .get(Kind::Pv, None, &pv_name)
            .await?
            .unwrap_or_default(),
    };
    if objects.is_real() {
        return Ok(()); // the PV controller binds the claim to the PV that names it
    }
    bind(objects, pvc, &pv, selected_node.as_deref()).await
}

/// Records a ProvisioningFailed event on the claim, as the external provisioner does.
async fn provisioning_failed(objects: &Objects, pvc: &Value, msg: &str) -> Result<(), Error> {
    objects
        .event(Kind::Pvc, pvc, true, "ProvisioningFailed", msg, PROVISIONER)
        .await
}

/// The unfinished pods in `ns` that mount claim `claim`.
async fn pods_using(objects: &Objects, ns: &str, claim: &str) -> Result<Vec<Value>, Error> {
    Ok(objects
        .list(Kind::Pod, Some(ns))
        .await?
        .into_iter()
        .filter(|pod| {
            let uses = pod["spec"]["volumes"].as_array().is_some_and(|vs| {
                vs.iter()
                    .any(|v| v["persistentVolumeClaim"]["claimName"] == claim)
            });
            uses && !super::pod_finished(pod)
        })
        .collect())
}

/// Returns true if and only if an unfinished pod in `ns` mounts claim `claim`.
async fn claim_in_use(objects: &Objects, ns: &str, claim: &str) -> Result<bool, Error> {
    Ok(!pods_using(objects, ns, claim).await?.is_empty())
}

/// The node of a scheduled, unfinished pod in `ns` that mounts claim `claim`, if there is one.
async fn consumer_node(objects: &Objects, ns: &str, claim: &str) -> Result<Option<String>, Error> {
    Ok(pods_using(objects, ns, claim)
        .await?
        .into_iter()
        .find_map(|pod| {
            let node = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty());
            (!is_deleting(&pod))
                .then(|| node.map(str::to_owned))
                .flatten()
        }))
}

/// The directory a claim's data source provides: Ok(None) for an empty volume, Err(reason) when
/// the source is not usable (yet).
async fn data_source(
    objects: &Objects,
    pvc: &Value,
) -> Result<Result<Option<PathBuf>, String>, Error> {
    let spec = &pvc["spec"];
    let src = if spec["dataSourceRef"].is_object() {
        &spec["dataSourceRef"]
    } else {
        &spec["dataSource"]
    };
    if !src.is_object() {
        return Ok(Ok(None));
    }
    let ns = namespace(pvc).unwrap_or("default");
    let src_name = src["name"].as_str().unwrap_or("");
    let group = src["apiGroup"].as_str().unwrap_or("");
    match (group, src["kind"].as_str().unwrap_or("")) {
        ("snapshot.storage.k8s.io", "VolumeSnapshot") => {
            let Some(vs) = objects
                .get(Kind::VolumeSnapshot, Some(ns), src_name)
                .await?
            else {
                return Ok(Err(format!(
                    "error getting handle for DataSource Type VolumeSnapshot by Name {src_name}: snapshot {src_name} not found"
                )));
            };
            let content = vs["status"]["boundVolumeSnapshotContentName"]
                .as_str()
                .unwrap_or("");
            if vs["status"]["readyToUse"] != true || content.is_empty() {
                return Ok(Err(format!(
                    "error getting handle for DataSource Type VolumeSnapshot by Name {src_name}: snapshot {src_name} is not Ready"
                )));
            }
            let Some(vsc) = objects
                .get(Kind::VolumeSnapshotContent, None, content)
                .await?
            else {
                return Ok(Err(format!(
                    "error getting handle for DataSource Type VolumeSnapshot by Name {src_name}: content {content} not found"
                )));
            };
            if vsc["spec"]["driver"] != DRIVER {
                return Ok(Err(format!(
                    "snapshot {src_name} was taken by driver {}, not {DRIVER}",
                    vsc["spec"]["driver"]
                )));
            }
            let restore = vs["status"]["restoreSize"]
                .as_str()
                .and_then(super::parse_quantity)
                .unwrap_or(0);
            let want = super::parse_quantity(&requested(pvc)).unwrap_or(0);
            if want < restore {
                return Ok(Err(format!(
                    "requested volume size {want} is less than the size {restore} for the source snapshot {src_name}"
                )));
            }
            let handle = vsc["status"]["snapshotHandle"].as_str().map(PathBuf::from);
            Ok(Ok(Some(handle.unwrap_or_else(|| {
                csi::snapshot_dir(&objects.config().state_dir, content)
            }))))
        }
        ("", "PersistentVolumeClaim") => {
            let source_pv = objects
                .get(Kind::Pvc, Some(ns), src_name)
                .await?
                .filter(|c| c["status"]["phase"] == "Bound")
                .and_then(|c| c["spec"]["volumeName"].as_str().map(str::to_owned));
            let Some(pv) = source_pv else {
                return Ok(Err(format!(
                    "error getting handle for DataSource Type PersistentVolumeClaim by Name {src_name}: claim {src_name} is not bound"
                )));
            };
            let handle = objects.get(Kind::Pv, None, &pv).await?.and_then(|pv| {
                pv["spec"]["csi"]["volumeHandle"]
                    .as_str()
                    .map(PathBuf::from)
            });
            Ok(handle
                .ok_or_else(|| format!("volume {pv} of claim {src_name} has no {DRIVER} handle"))
                .map(Some))
        }
        (g, k) => Ok(Err(format!(
            "data source {k}.{g} {src_name} is not supported by {DRIVER}"
        ))),
    }
}

fn claim_ref(pvc: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": namespace(pvc),
        "name": name(pvc),
        "uid": uid(pvc),
        "resourceVersion": pvc["metadata"]["resourceVersion"],
    })
}

/// Binds `pvc` to `pv`: the PV's claimRef and phase, then the claim's volumeName, binding
/// annotations and status, in the order the real PV controller writes them.
async fn bind(
    objects: &Objects,
    pvc: &Value,
    pv: &Value,
    selected_node: Option<&str>,
) -> Result<(), Error> {
    let mut pv = pv.clone();
    if pv["spec"]["claimRef"]["uid"] != uid(pvc) {
        pv["spec"]["claimRef"] = claim_ref(pvc);
        pv["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] = json!("yes");
        pv = objects.update(Kind::Pv, pv).await?;
    }
    if pv["status"]["phase"] != "Bound" {
        pv["status"] = json!({"phase": "Bound", "lastPhaseTransitionTime": now()});
        objects.update_status(Kind::Pv, pv.clone()).await?;
    }
    let mut pvc = pvc.clone();
    if pvc["spec"]["volumeName"] != pv["metadata"]["name"]
        || pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] != "yes"
    {
        pvc["spec"]["volumeName"] = pv["metadata"]["name"].clone();
        let ann = &mut pvc["metadata"]["annotations"];
        if !ann.is_object() {
            *ann = json!({});
        }
        ann["pv.kubernetes.io/bind-completed"] = json!("yes");
        ann["pv.kubernetes.io/bound-by-controller"] = json!("yes");
        ann["volume.beta.kubernetes.io/storage-provisioner"] = json!(DRIVER);
        ann["volume.kubernetes.io/storage-provisioner"] = json!(DRIVER);
        if let Some(node) = selected_node {
            ann["volume.kubernetes.io/selected-node"] = json!(node);
        }
        pvc = objects.update(Kind::Pvc, pvc).await?;
    }
    pvc["status"] = json!({
        "phase": "Bound",
        "accessModes": pv["spec"]["accessModes"],
        "capacity": pv["spec"]["capacity"],
    });
    tracing::debug!(pvc = %format!("{}/{}", namespace(&pvc).unwrap_or(""), name(&pvc)), pv = name(&pv), "bound");
    objects.update_status(Kind::Pvc, pvc).await?;
    Ok(())
}

/// A claim that names its volume: finish a half-done binding, grow the volume when the claim
/// asks for more, or mark the claim Lost when its volume is gone.
async fn reconcile_bound_claim(objects: &Objects, pvc: &Value, volume: &str) -> Result<(), Error> {
    let Some(mut pv) = objects.get(Kind::Pv, None, volume).await? else {
        if pvc["status"]["phase"] == "Bound" {
            let mut lost = pvc.clone();
            lost["status"]["phase"] = json!("Lost");
            objects.update_status(Kind::Pvc, lost).await?;
            objects
                .event(
                    Kind::Pvc,
                    pvc,
                    true,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                    COMPONENT,
                )
                .await?;
        }
        return Ok(());
    };
    let claimed_by = pv["spec"]["claimRef"]["uid"].as_str().unwrap_or("");
    if pvc["status"]["phase"] != "Bound" {
        // Static binding by name, or a binding interrupted before the claim's status was written.
        if claimed_by.is_empty() || claimed_by == uid(pvc) {
            return bind(objects, pvc, &pv, None).await;
        }
        let msg = format!("volume {volume:?} already bound to a different claim.");
        return objects
            .event(Kind::Pvc, pvc, true, "FailedBinding", &msg, COMPONENT)
            .await;
    }
    // Expansion: the volume of a directory grows for free; record the new size.
    let want = requested(pvc);
    let have = pv["spec"]["capacity"]["storage"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let bigger =
        super::parse_quantity(&want).unwrap_or(0) > super::parse_quantity(&have).unwrap_or(0);
    if bigger && pv["spec"]["csi"]["driver"] == DRIVER {
        pv["spec"]["capacity"]["storage"] = json!(want);
        objects.update(Kind::Pv, pv).await?;
        let mut pvc = pvc.clone();
        pvc["status"]["capacity"]["storage"] = json!(want);
        objects.update_status(Kind::Pvc, pvc).await?;
    }
    Ok(())
}

/// A volume whose claim is gone (or was replaced by a new claim of the same name) is released;
/// with reclaimPolicy Delete the driver deletes its directory and the PV goes.
async fn reconcile_volume(
    objects: &Objects,
    mut pv: Value,
    live: &HashSet<(String, String, String)>,
) -> Result<(), Error> {
    if is_deleting(&pv) {
        return Ok(());
    }
    if objects.is_real() && pv["status"]["phase"] != "Released" {
        return Ok(()); // the PV controller releases a volume whose claim is gone
    }
    let claim = &pv["spec"]["claimRef"];
    if !claim.is_object() {
        if matches!(pv["status"]["phase"].as_str(), None | Some("Pending")) {
            pv["status"] = json!({"phase": "Available", "lastPhaseTransitionTime": now()});
            objects.update_status(Kind::Pv, pv).await?;
        }
        return Ok(());
    }
    let key = (
        claim["namespace"].as_str().unwrap_or("").to_owned(),
        claim["name"].as_str().unwrap_or("").to_owned(),
        claim["uid"].as_str().unwrap_or("").to_owned(),
    );
    // A claimRef without uid is a pre-binding to a claim not created yet.
    if key.2.is_empty() || live.contains(&key) {
        return Ok(());
    }
    let phase = pv["status"]["phase"].as_str().unwrap_or("");
    if pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
        && pv["spec"]["csi"]["driver"] == DRIVER
    {
        let dir = PathBuf::from(pv["spec"]["csi"]["volumeHandle"].as_str().unwrap_or(""));
        if dir.starts_with(objects.config().state_dir.join("volumes")) {
            let d = dir.clone();
            tokio::task::spawn_blocking(move || csi::remove(&d))
                .await
                .expect("the CSI removal task does not panic")
                .map_err(|source| Error::Csi {
                    op: "delete volume",
                    path: dir,
                    source,
                })?;
        }
        tracing::info!(pv = name(&pv), "claim deleted; deleted its volume");
        return objects.delete(Kind::Pv, None, name(&pv)).await;
    }
    if phase != "Released" && phase != "Failed" {
        pv["status"] = json!({"phase": "Released", "lastPhaseTransitionTime": now()});
        objects.update_status(Kind::Pv, pv).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allowed_topologies_intersect_the_cluster_zones() {
        let cluster = zones(&["eastus2-1", "eastus2-2", "eastus2-3"]);
        let open = json!({"metadata": {"name": "open"}});
        assert_eq!(class_zones(&open, &cluster).unwrap(), cluster);
        let pinned = json!({"metadata": {"name": "pinned"}, "allowedTopologies": [{"matchLabelExpressions": [
            {"key": "topology.disk.csi.azure.com/zone", "values": ["eastus2-2", "centralus-1"]}]}]});
        assert_eq!(
            class_zones(&pinned, &cluster).unwrap(),
            zones(&["eastus2-2"])
        );
        let foreign = json!({"metadata": {"name": "foreign"}, "allowedTopologies": [{"matchLabelExpressions": [
            {"key": ZONE_LABEL, "values": ["centralus-1"]}]}]});
        let err = class_zones(&foreign, &cluster).unwrap_err();
        assert!(
            err.contains("centralus-1") && err.contains("eastus2-1"),
            "{err}"
        );
    }

    #[test]
    fn volume_zones_come_from_node_affinity() {
        let pv = json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": ["eastus2-3"]}]}]}}}});
        assert_eq!(volume_zones(&pv), Some(zones(&["eastus2-3"])));
        assert_eq!(volume_zones(&json!({"spec": {}})), None);
    }
}
