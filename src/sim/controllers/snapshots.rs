//! The snapshot controller and the `disk.csi.sim` snapshotter: a VolumeSnapshot of a claim
//! becomes a VolumeSnapshotContent and a copy of the volume's directory; deleting the
//! VolumeSnapshot (deletionPolicy Delete) deletes both.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::csi::{self, DRIVER};
use super::{
    Controller, Error, Kind, Objects, is_deleting, name, namespace, now, parse_quantity, uid,
};

const COMPONENT: &str = "snapshot-controller";

/// See the module doc.
pub(crate) struct SnapshotController;

impl Controller for SnapshotController {
    const NAME: &'static str = "snapshot";

    fn watches(&self) -> &'static [Kind] {
        &[
            Kind::VolumeSnapshot,
            Kind::VolumeSnapshotContent,
            Kind::VolumeSnapshotClass,
            Kind::Pvc,
        ]
    }

    async fn pass(&mut self, objects: &Objects) -> Result<(), Error> {
        let mut result = Ok(());
        if objects.is_real() {
            // The real snapshot-controller binds snapshots and contents; this is the sidecar.
            for vsc in objects.list(Kind::VolumeSnapshotContent, None).await? {
                if let Err(e) = sidecar_content(objects, vsc).await {
                    result = Err(e);
                }
            }
            return result;
        }
        let snapshots = objects.list(Kind::VolumeSnapshot, None).await?;
        for vs in &snapshots {
            if let Err(e) = reconcile_snapshot(objects, vs).await {
                result = Err(e);
            }
        }
        let live: HashSet<&str> = snapshots.iter().map(uid).collect();
        for vsc in objects.list(Kind::VolumeSnapshotContent, None).await? {
            if let Err(e) = reconcile_content(objects, vsc, &live).await {
                result = Err(e);
            }
        }
        result
    }
}

/// A byte count as the quantity a real snapshotter reports (`1Gi` when exact, else bytes).
fn bytes_quantity(n: u64) -> String {
    for (suffix, unit) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{}{suffix}", n / unit);
        }
    }
    n.to_string()
}

/// The VolumeSnapshotClass a snapshot uses: the one it names, or the default class of our driver.
async fn snapshot_class(objects: &Objects, vs: &Value) -> Result<Option<Value>, Error> {
    match vs["spec"]["volumeSnapshotClassName"].as_str() {
        Some(class) => objects.get(Kind::VolumeSnapshotClass, None, class).await,
        None => Ok(objects.list(Kind::VolumeSnapshotClass, None).await?.into_iter().find(|c| {
            c["driver"] == DRIVER
                && c["metadata"]["annotations"]["snapshot.storage.kubernetes.io/is-default-class"] == "true"
        })),
    }
}

/// Records a snapshot's failure in its status (as the real controller does, in `status.error`)
/// and as an Event, unless the same message is already there.
async fn fail(objects: &Objects, vs: &Value, message: String) -> Result<(), Error> {
    if vs["status"]["error"]["message"] == message.as_str() {
        return Ok(());
    }
    let mut vs = vs.clone();
    if !vs["status"].is_object() {
        vs["status"] = json!({});
    }
    vs["status"]["readyToUse"] = json!(false);
    vs["status"]["error"] = json!({"message": message, "time": now()});
    objects
        .update_status(Kind::VolumeSnapshot, vs.clone())
        .await?;
    objects
        .event(
            Kind::VolumeSnapshot,
            &vs,
            true,
            "SnapshotCreationFailed",
            &message,
            COMPONENT,
        )
        .await
}

async fn reconcile_snapshot(objects: &Objects, vs: &Value) -> Result<(), Error> {
    if is_deleting(vs) || vs["status"]["readyToUse"] == true {
        return Ok(());
    }
    let ns = namespace(vs).unwrap_or("default");
    let source = &vs["spec"]["source"];
    if let Some(content) = source["volumeSnapshotContentName"].as_str() {
        return bind_pre_provisioned(objects, vs, content).await;
    }
    let Some(claim) = source["persistentVolumeClaimName"].as_str() else {
        return fail(
            objects,
            vs,
            "spec.source names neither a claim nor a content".into(),
        )
        .await;
    };
    let Some(pvc) = objects.get(Kind::Pvc, Some(ns), claim).await? else {
        return fail(
            objects,
            vs,
            format!("failed to take snapshot: persistentvolumeclaim {claim:?} not found"),
        )
        .await;
    };
    let volume = pvc["spec"]["volumeName"].as_str().unwrap_or("");
    if pvc["status"]["phase"] != "Bound" || volume.is_empty() {
        return fail(
            objects,
            vs,
            format!("the source claim {claim:?} is not bound yet"),
        )
        .await;
    }
    let Some(pv) = objects.get(Kind::Pv, None, volume).await? else {
        return fail(
            objects,
            vs,
            format!("the volume {volume:?} of claim {claim:?} does not exist"),
        )
        .await;
    };
    if pv["spec"]["csi"]["driver"] != DRIVER {
        // Another driver's volume: not this snapshotter's business.
        return Ok(());
    }
    let Some(class) = snapshot_class(objects, vs).await? else {
        return fail(
            objects,
            vs,
            "no VolumeSnapshotClass named, and no default class for driver disk.csi.sim".into(),
        )
        .await;
    };
    if class["driver"] != DRIVER {
        return Ok(());
    }

    let content_name = format!("snapcontent-{}", uid(vs));
    let vsc = match objects
        .get(Kind::VolumeSnapshotContent, None, &content_name)
        .await?
    {
        Some(vsc) if vsc["status"]["readyToUse"] == true => vsc,
        existing => {
            let state = &objects.config().state_dir;
            let from = PathBuf::from(pv["spec"]["csi"]["volumeHandle"].as_str().unwrap_or(""));
            let to = csi::snapshot_dir(state, &content_name);
            let (f, t) = (from.clone(), to.clone());
            let copied = tokio::task::spawn_blocking(move || csi::create_snapshot(&f, &t))
                .await
                .expect("the CSI snapshot task does not panic")
                .map_err(|source| Error::Csi {
                    op: "copy volume into snapshot",
                    path: from,
                    source,
                })?;
            tracing::info!(snapshot = %format!("{ns}/{}", name(vs)), content = %content_name, bytes = copied, "snapshot taken");
            let vsc = match existing {
                Some(vsc) => vsc,
                None => {
                    let vsc = json!({
                        "metadata": {"name": content_name},
                        "spec": {
                            "deletionPolicy": class["deletionPolicy"].as_str().unwrap_or("Delete"),
                            "driver": DRIVER,
                            "source": {"volumeHandle": pv["spec"]["csi"]["volumeHandle"]},
                            "sourceVolumeMode": pv["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
                            "volumeSnapshotClassName": name(&class),
                            "volumeSnapshotRef": {
                                "apiVersion": "snapshot.storage.k8s.io/v1",
                                "kind": "VolumeSnapshot",
                                "namespace": ns,
                                "name": name(vs),
                                "uid": uid(vs),
                                "resourceVersion": vs["metadata"]["resourceVersion"],
                            },
                        },
                    });
                    match objects.create(Kind::VolumeSnapshotContent, vsc).await? {
                        Some(vsc) => vsc,
                        None => return Ok(()), // raced with ourselves; the next pass finishes
                    }
                }
            };
            let mut vsc = vsc;
            // A CSI driver reports the size of the volume a restore needs, not the bytes used.
            let size = pv["spec"]["capacity"]["storage"]
                .as_str()
                .and_then(parse_quantity)
                .unwrap_or(copied);
            vsc["status"] = content_status(&to, size);
            objects
                .update_status(Kind::VolumeSnapshotContent, vsc)
                .await?
        }
    };
    mark_ready(objects, vs, &vsc).await
}

/// Writes a snapshot's status from its bound, ready content.
async fn mark_ready(objects: &Objects, vs: &Value, vsc: &Value) -> Result<(), Error> {
    let created = vsc["status"]["creationTime"]
        .as_i64()
        .and_then(|n| jiff::Timestamp::from_nanosecond(n.into()).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(now);
    let mut vs = vs.clone();
    vs["status"] = json!({
        "boundVolumeSnapshotContentName": name(vsc),
        "creationTime": created,
        "readyToUse": true,
        "restoreSize": bytes_quantity(vsc["status"]["restoreSize"].as_u64().unwrap_or(0)),
    });
    objects.update_status(Kind::VolumeSnapshot, vs).await?;
    Ok(())
}

/// A snapshot naming an existing content (a pre-provisioned snapshot, as a restore creates):
/// bind the two once the content's copy exists.
async fn bind_pre_provisioned(objects: &Objects, vs: &Value, content: &str) -> Result<(), Error> {
    let Some(mut vsc) = objects
        .get(Kind::VolumeSnapshotContent, None, content)
        .await?
    else {
        return fail(
            objects,
            vs,
            format!("VolumeSnapshotContent {content:?} not found"),
        )
        .await;
    };
    let bound_to = vsc["spec"]["volumeSnapshotRef"]["uid"]
        .as_str()
        .unwrap_or("");
    if bound_to.is_empty() {
        vsc["spec"]["volumeSnapshotRef"]["uid"] = json!(uid(vs));
        vsc = objects.update(Kind::VolumeSnapshotContent, vsc).await?;
    } else if bound_to != uid(vs) {
        return fail(
            objects,
            vs,
            format!("VolumeSnapshotContent {content:?} is bound to another snapshot"),
        )
        .await;
    }
    if vsc["status"]["readyToUse"] != true {
        return Ok(()); // reconcile_content marks it ready when its copy exists
    }
    mark_ready(objects, vs, &vsc).await
}

/// Deletes the content (and its copy) of a deleted snapshot when its policy says Delete, and
/// marks a pre-provisioned content ready when its copy exists.
async fn reconcile_content(
    objects: &Objects,
    mut vsc: Value,
    live: &HashSet<&str>,
) -> Result<(), Error> {
    if is_deleting(&vsc) || vsc["spec"]["driver"] != DRIVER {
        return Ok(());
    }
    let handle = vsc["status"]["snapshotHandle"]
        .as_str()
        .or(vsc["spec"]["source"]["snapshotHandle"].as_str())
        .map(PathBuf::from)
        .unwrap_or_else(|| csi::snapshot_dir(&objects.config().state_dir, name(&vsc)));
    let bound_to = vsc["spec"]["volumeSnapshotRef"]["uid"]
        .as_str()
        .unwrap_or("");
    if !bound_to.is_empty() && !live.contains(bound_to) {
        if vsc["spec"]["deletionPolicy"] == "Delete" {
            remove_copy(objects, handle).await?;
            tracing::info!(
                content = name(&vsc),
                "snapshot deleted; deleted its content"
            );
            objects
                .delete(Kind::VolumeSnapshotContent, None, name(&vsc))
                .await?;
        }
        return Ok(());
    }
    if vsc["status"]["readyToUse"] != true
        && vsc["spec"]["source"]["snapshotHandle"].is_string()
        && handle.is_dir()
    {
        vsc["status"] = ready_status(handle).await?;
        objects
            .update_status(Kind::VolumeSnapshotContent, vsc)
            .await?;
    }
    Ok(())
}

/// Deletes a snapshot's copy, if it is one this driver made (under `<state_dir>/snapshots`).
async fn remove_copy(objects: &Objects, handle: PathBuf) -> Result<(), Error> {
    if !handle.starts_with(objects.config().state_dir.join("snapshots")) {
        return Ok(());
    }
    let h = handle.clone();
    tokio::task::spawn_blocking(move || csi::remove(&h))
        .await
        .expect("the CSI removal task does not panic")
        .map_err(|source| Error::Csi {
            op: "delete snapshot",
            path: handle,
            source,
        })
}

/// A content's status once its copy at `handle` exists: ready, with its size.
async fn ready_status(handle: PathBuf) -> Result<Value, Error> {
    let h = handle.clone();
    let size = tokio::task::spawn_blocking(move || csi::tree_size(&h))
        .await
        .expect("the CSI size task does not panic")
        .map_err(|source| Error::Csi {
            op: "measure snapshot",
            path: handle.clone(),
            source,
        })?;
    Ok(content_status(&handle, size))
}

/// The status a snapshotter writes for a ready snapshot.
fn content_status(handle: &std::path::Path, size: u64) -> Value {
    let nanos = jiff::Timestamp::now().as_nanosecond();
    json!({
        "creationTime": i64::try_from(nanos).unwrap_or(i64::MAX),
        "readyToUse": true,
        "restoreSize": size,
        "snapshotHandle": handle.to_string_lossy(),
    })
}

/// The finalizer the snapshot-controller puts on a bound content; the sidecar removes it once
/// the snapshot itself is deleted.
const CONTENT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
const BEING_CREATED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-created";
const BEING_DELETED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";

/// The csi-snapshotter sidecar's part for a content of this driver, on a real control plane:
/// cut the snapshot (a copy of the volume's directory) of a dynamic content and report it
/// ready; mark a pre-provisioned content ready when its copy exists; delete the copy of a
/// deleted content whose policy says Delete, then release the content's finalizer.
async fn sidecar_content(objects: &Objects, mut vsc: Value) -> Result<(), Error> {
    if vsc["spec"]["driver"] != DRIVER {
        return Ok(());
    }
    let annotations = &vsc["metadata"]["annotations"];
    let pre_provisioned = vsc["spec"]["source"]["snapshotHandle"].is_string();
    let unbound = vsc["spec"]["volumeSnapshotRef"]["uid"]
        .as_str()
        .unwrap_or("")
        .is_empty();
    if is_deleting(&vsc) {
        let delete = (pre_provisioned && unbound)
            || (annotations.get(BEING_CREATED).is_none()
                && annotations.get(BEING_DELETED).is_some());
        if !delete {
            return Ok(());
        }
        if vsc["spec"]["deletionPolicy"] == "Delete"
            && let Some(handle) = vsc["status"]["snapshotHandle"].as_str().map(PathBuf::from)
        {
            remove_copy(objects, handle).await?;
            tracing::info!(
                content = name(&vsc),
                "content deleted; deleted its snapshot"
            );
        }
        let finalizers: Vec<&str> = super::str_list(&vsc["metadata"]["finalizers"]);
        if finalizers.contains(&CONTENT_FINALIZER) {
            let rest: Vec<&str> = finalizers
                .into_iter()
                .filter(|f| *f != CONTENT_FINALIZER)
                .collect();
            vsc["metadata"]["finalizers"] = json!(rest);
            objects.update(Kind::VolumeSnapshotContent, vsc).await?;
        }
        return Ok(());
    }
    if vsc["status"]["readyToUse"] == true {
        if annotations.get(BEING_CREATED).is_some() {
            if let Some(a) = vsc["metadata"]["annotations"].as_object_mut() {
                a.remove(BEING_CREATED);
            }
            objects.update(Kind::VolumeSnapshotContent, vsc).await?;
        }
        return Ok(());
    }
    vsc["status"] = if pre_provisioned {
        let handle = PathBuf::from(
            vsc["spec"]["source"]["snapshotHandle"]
                .as_str()
                .unwrap_or(""),
        );
        if !handle.is_dir() {
            return Ok(());
        }
        ready_status(handle).await?
    } else {
        let Some(volume) = vsc["spec"]["source"]["volumeHandle"]
            .as_str()
            .map(PathBuf::from)
        else {
            return Ok(());
        };
        let dir = csi::snapshot_dir(&objects.config().state_dir, name(&vsc));
        let (v, d) = (volume.clone(), dir.clone());
        let size = tokio::task::spawn_blocking(move || csi::create_snapshot(&v, &d))
            .await
            .expect("the CSI copy task does not panic")
            .map_err(|source| Error::Csi {
                op: "copy volume into snapshot",
                path: volume,
                source,
            })?;
        tracing::info!(content = name(&vsc), "cut snapshot");
        content_status(&dir, size)
    };
    objects
        .update_status(Kind::VolumeSnapshotContent, vsc)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_sizes_print_like_quantities() {
        assert_eq!(bytes_quantity(1 << 30), "1Gi");
        assert_eq!(bytes_quantity(3 << 20), "3Mi");
        assert_eq!(bytes_quantity(1000), "1000");
        assert_eq!(bytes_quantity(0), "0");
    }
}
