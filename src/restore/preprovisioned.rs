//! Pre-provisioned volumes: which of the backup's PersistentVolumes a restore re-creates as
//! they are, rather than letting the target provision new ones. Pure.
//!
//! A volume whose data lifeboat moved is provisioned anew and filled. A volume it did not move
//! and that was not dynamically provisioned (a static Azure Files or NFS share, a disk kept
//! with `Retain` and bound by name), or whose CSI driver is shared storage
//! (`volumes.sharedStorageDrivers`), points at data that lives outside the cluster: it is
//! restored, its claim reference rewritten, and its claim bound to it again. A dynamically
//! provisioned volume whose data was not moved would point at a disk of the lost region: it is
//! skipped, and its claim is created empty (a note of the plan).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::repo::archive::BackupObject;
use crate::repo::{VolumeRecord, VolumeStatus};

use crate::cluster::objects::restored_by_reference;

/// What a volume points at, for the plan: `csi file.csi.azure.com rg#account#share`, `nfs
/// server:/path`, ...
pub fn points_to(pv: &Value) -> String {
    let spec = &pv["spec"];
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    if spec["csi"].is_object() {
        format!(
            "CSI {} volume {}",
            s(&spec["csi"]["driver"]),
            s(&spec["csi"]["volumeHandle"])
        )
    } else if spec["nfs"].is_object() {
        format!(
            "NFS {}:{}",
            s(&spec["nfs"]["server"]),
            s(&spec["nfs"]["path"])
        )
    } else if spec["azureFile"].is_object() {
        format!("Azure Files share {}", s(&spec["azureFile"]["shareName"]))
    } else if spec["local"].is_object() {
        format!("local path {}", s(&spec["local"]["path"]))
    } else if spec["hostPath"].is_object() {
        format!("host path {}", s(&spec["hostPath"]["path"]))
    } else {
        "a volume source of its own".into()
    }
}

/// The PersistentVolumes of `objects` to restore as they are, each with what it points at.
pub fn volumes_to_rebind(
    objects: &[BackupObject],
    records: &[VolumeRecord],
    shared_drivers: &[String],
) -> BTreeMap<String, String> {
    let moved: BTreeSet<(&str, &str)> = records
        .iter()
        .filter(|r| r.status == VolumeStatus::Completed)
        .map(|r| (r.namespace.as_str(), r.pvc.as_str()))
        .collect();
    objects
        .iter()
        .filter(|o| o.group.is_empty() && o.plural == "persistentvolumes")
        .filter(|o| {
            let claim = &o.object["spec"]["claimRef"];
            let claim = (
                claim["namespace"].as_str().unwrap_or_default(),
                claim["name"].as_str().unwrap_or_default(),
            );
            if moved.contains(&claim) {
                return false;
            }
            restored_by_reference(&o.object, shared_drivers)
        })
        .map(|o| (o.name.clone(), points_to(&o.object)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(name: &str, claim: &str, spec: Value, dynamic: bool) -> BackupObject {
        let mut spec = spec;
        spec["claimRef"] = json!({"namespace": "shop", "name": claim});
        let annotations = if dynamic {
            json!({crate::cluster::objects::PROVISIONED_BY: "disk.csi.azure.com"})
        } else {
            json!({})
        };
        BackupObject {
            group: String::new(),
            version: "v1".into(),
            plural: "persistentvolumes".into(),
            namespace: String::new(),
            name: name.into(),
            object: json!({"metadata": {"name": name, "annotations": annotations}, "spec": spec}),
        }
    }

    #[test]
    fn static_and_shared_volumes_not_moved_are_rebound_moved_and_dynamic_ones_are_not() {
        let disk = |h: &str| json!({"csi": {"driver": "disk.csi.azure.com", "volumeHandle": h}});
        let files =
            json!({"csi": {"driver": "file.csi.azure.com", "volumeHandle": "rg#acct#share#"}});
        let objects = vec![
            pv("moved", "a", disk("d1"), true),
            pv("dynamic-not-moved", "b", disk("d2"), true),
            pv("static-retained", "c", disk("d3"), false),
            pv("files", "d", files, true),
            pv(
                "nfs",
                "e",
                json!({"nfs": {"server": "10.0.0.4", "path": "/export"}}),
                false,
            ),
        ];
        let mut moved = VolumeRecord::new("shop", "a", VolumeStatus::Completed);
        moved.index = Some("i".into());
        let records = vec![
            moved,
            VolumeRecord::new("shop", "b", VolumeStatus::NotSnapshottable),
        ];
        let shared = ["file.csi.azure.com".to_owned()];
        let rebind = volumes_to_rebind(&objects, &records, &shared);
        assert_eq!(
            rebind.keys().map(String::as_str).collect::<Vec<_>>(),
            ["files", "nfs", "static-retained"]
        );
        assert_eq!(rebind["nfs"], "NFS 10.0.0.4:/export");
        assert_eq!(
            rebind["files"],
            "CSI file.csi.azure.com volume rg#acct#share#"
        );
    }
}
