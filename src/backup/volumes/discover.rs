//! Which claims have data to move, and how each is snapshotted: bound claims in scope whose CSI
//! driver has a VolumeSnapshotClass. Every other claim is reported, never silently skipped.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cluster::ClusterError;
use crate::cluster::objects::{self, PVCS, PVS, STORAGE_CLASSES, VOLUME_SNAPSHOT_CLASSES};
use crate::config::VolumesConfig;
use crate::filter::Filters;
use crate::repo::{VolumeRecord, VolumeStatus};

/// A claim to back up.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// StorageClass of the claim.
    pub storage_class: Option<String>,
    /// CSI driver of its volume.
    pub driver: String,
    /// Capacity (`10Gi`).
    pub capacity: Option<String>,
    /// The VolumeSnapshotClass to use.
    pub snapshot_class: String,
}

/// The claims to move, and records for those that cannot be.
#[derive(Debug, Default)]
pub struct Discovered {
    /// To back up.
    pub claims: Vec<Claim>,
    /// Not snapshottable, with why.
    pub refused: Vec<VolumeRecord>,
}

/// Default-class annotation of VolumeSnapshotClasses.
const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";

/// The VolumeSnapshotClass for `driver`: the configured one, else the driver's default class,
/// else its only class.
pub fn snapshot_class(
    driver: &str,
    classes: &[Value],
    configured: &BTreeMap<String, String>,
) -> Result<String, String> {
    if let Some(c) = configured.get(driver) {
        return Ok(c.clone());
    }
    let of_driver: Vec<&Value> = classes.iter().filter(|c| c["driver"] == driver).collect();
    let name = |c: &Value| {
        c["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    if let Some(d) = of_driver
        .iter()
        .find(|c| c["metadata"]["annotations"][DEFAULT_CLASS] == "true")
    {
        return Ok(name(d));
    }
    match of_driver.as_slice() {
        [only] => Ok(name(only)),
        [] => Err(format!(
            "no VolumeSnapshotClass for CSI driver {driver}; create one or name it in volumes.snapshotClasses"
        )),
        many => Err(format!(
            "{} VolumeSnapshotClasses for CSI driver {driver} and none is the default; mark one with {DEFAULT_CLASS}=true or name it in volumes.snapshotClasses",
            many.len()
        )),
    }
}

/// The claims in scope (namespace, name), for a backup that takes no volume data: its manifest
/// still says which claims it holds without their data.
pub async fn in_scope(
    client: &kube::Client,
    filters: &Filters,
) -> Result<Vec<(String, String)>, ClusterError> {
    if !filters.resource_included("", "persistentvolumeclaims", "PersistentVolumeClaim") {
        return Ok(Vec::new());
    }
    let selector = crate::cluster::labels::excluding_temporary(filters.selector.as_deref());
    let mut out: Vec<(String, String)> = objects::list(client, PVCS, "", Some(&selector))
        .await?
        .iter()
        .map(|pvc| {
            (
                pvc["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                pvc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .filter(|(ns, _)| filters.namespace_included(ns))
        .collect();
    out.sort();
    Ok(out)
}

/// Lists the claims in scope and decides how each is moved.
pub async fn claims(
    client: &kube::Client,
    filters: &Filters,
    settings: &VolumesConfig,
) -> Result<Discovered, ClusterError> {
    // Data without its claim in the backup could never be restored: follow the resource filters.
    if !crate::filter::resource_allowed(
        &filters.include_resources,
        &filters.exclude_resources,
        "",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
    ) {
        return Ok(Discovered::default());
    }
    // Never lifeboat's own temporary claims (of this run, or of a killed one being swept).
    let selector = crate::cluster::labels::excluding_temporary(filters.selector.as_deref());
    let pvcs = objects::list(client, PVCS, "", Some(&selector)).await?;
    let pvs: BTreeMap<String, Value> = objects::list(client, PVS, "", None)
        .await?
        .into_iter()
        .map(|pv| {
            (
                pv["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                pv,
            )
        })
        .collect();
    let storage_classes: BTreeMap<String, Value> = objects::list(client, STORAGE_CLASSES, "", None)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            (
                c["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                c,
            )
        })
        .collect();
    // A cluster without the snapshot CRDs has no classes: every claim is then reported.
    let classes = match objects::list(client, VOLUME_SNAPSHOT_CLASSES, "", None).await {
        Ok(c) => c,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut out = Discovered::default();
    for pvc in &pvcs {
        let ns = pvc["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = pvc["metadata"]["name"].as_str().unwrap_or_default();
        if !filters.namespace_included(ns) {
            continue;
        }
        let storage_class = pvc["spec"]["storageClassName"].as_str().map(str::to_owned);
        let capacity = pvc["status"]["capacity"]["storage"]
            .as_str()
            .or(pvc["spec"]["resources"]["requests"]["storage"].as_str())
            .map(str::to_owned);
        let pv = pvc["spec"]["volumeName"].as_str().and_then(|v| pvs.get(v));
        // Data that stays where it is (a static share, a shared-storage driver): the restore
        // binds the claim to the same volume again, so it is not missing from the backup.
        let by_reference = pvc["status"]["phase"] == "Bound"
            && pv.is_some_and(|pv| {
                objects::restored_by_reference(pv, &settings.shared_storage_drivers)
            });
        let refuse = |why: String| {
            let mut r = VolumeRecord::new(ns, name, VolumeStatus::NotSnapshottable);
            r.error = Some(if by_reference {
                format!(
                    "{why}; its data stays in its pre-provisioned volume, which a restore binds the claim to again"
                )
            } else {
                why
            });
            r.by_reference = by_reference;
            r.storage_class = storage_class.clone();
            r.capacity = capacity.clone();
            r
        };
        if pvc["status"]["phase"] != "Bound" {
            out.refused.push(refuse(format!(
                "the claim is {}, not Bound: it has no data to back up yet",
                pvc["status"]["phase"].as_str().unwrap_or("without a phase")
            )));
            continue;
        }
        let driver = pv
            .and_then(|pv| pv["spec"]["csi"]["driver"].as_str())
            .map(str::to_owned);
        let Some(driver) = driver else {
            let provisioner = storage_class
                .as_deref()
                .and_then(|c| storage_classes.get(c))
                .and_then(|c| c["provisioner"].as_str())
                .unwrap_or("unknown");
            out.refused.push(refuse(format!(
                "its volume is not a CSI volume (provisioner {provisioner}): CSI snapshots are required to back up data"
            )));
            continue;
        };
        if settings.shared_storage_drivers.contains(&driver) {
            let mut r = refuse(format!(
                "shared storage (CSI driver {driver} is in volumes.sharedStorageDrivers): not copied"
            ));
            r.driver = Some(driver);
            out.refused.push(r);
            continue;
        }
        match snapshot_class(&driver, &classes, &settings.snapshot_classes) {
            Ok(snapshot_class) => out.claims.push(Claim {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                storage_class,
                driver,
                capacity,
                snapshot_class,
            }),
            Err(why) => {
                let mut r = refuse(why);
                r.driver = Some(driver);
                out.refused.push(r);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(name: &str, driver: &str, default: bool) -> Value {
        json!({"metadata": {"name": name, "annotations": if default { json!({DEFAULT_CLASS: "true"}) } else { json!({}) }}, "driver": driver})
    }

    #[test]
    fn the_snapshot_class_is_configured_then_default_then_the_only_one() {
        let classes = vec![
            class("a", "disk.csi.azure.com", false),
            class("b", "disk.csi.azure.com", true),
            class("c", "file.csi.azure.com", false),
        ];
        let none = BTreeMap::new();
        assert_eq!(
            snapshot_class("disk.csi.azure.com", &classes, &none).unwrap(),
            "b"
        );
        assert_eq!(
            snapshot_class("file.csi.azure.com", &classes, &none).unwrap(),
            "c"
        );
        let configured = BTreeMap::from([("disk.csi.azure.com".to_owned(), "a".to_owned())]);
        assert_eq!(
            snapshot_class("disk.csi.azure.com", &classes, &configured).unwrap(),
            "a"
        );
        let err = snapshot_class("blob.csi.azure.com", &classes, &none).unwrap_err();
        assert!(
            err.contains("no VolumeSnapshotClass for CSI driver blob.csi.azure.com"),
            "{err}"
        );
        let two = vec![class("x", "d", false), class("y", "d", false)];
        assert!(
            snapshot_class("d", &two, &none)
                .unwrap_err()
                .contains("none is the default")
        );
    }
}
