//! A pre-provisioned volume (issue 16 item 5): a static NFS PersistentVolume with `Retain`,
//! bound by name to its claim, is restored as it is and its claim bound to it again, on real
//! control planes (the real PV controller does the binding).

use serde_json::Value;

use super::{get, kubectl, kubectl_in, real, replicate, restore, unique, wait_until, write_config};
use crate::support::{lifeboat, stderr, stdout};

#[tokio::test(flavor = "multi_thread")]
async fn a_static_retained_volume_is_restored_bound_to_its_claim() {
    let Some(r) = real().await else { return };
    let ns = unique("static");
    let pv_name = unique("share");
    kubectl(&r.primary, &["create", "namespace", &ns]);
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
        {{"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {{"name": "{pv_name}"}},
          "spec": {{"capacity": {{"storage": "10Gi"}}, "accessModes": ["ReadWriteMany"],
                   "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                   "claimRef": {{"namespace": "{ns}", "name": "uploads"}},
                   "nfs": {{"server": "10.0.0.4", "path": "/exports/uploads"}}}}}},
        {{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {{"name": "uploads", "namespace": "{ns}"}},
          "spec": {{"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": "{pv_name}",
                   "resources": {{"requests": {{"storage": "10Gi"}}}}}}}}]}}"#
    );
    let out = kubectl_in(&r.primary, &["apply", "-f", "-"], Some(manifest.as_bytes()));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let claim = format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/uploads");
    let bound = |c: &'static str| {
        let (claim, pv_name) = (claim.clone(), pv_name.clone());
        let cluster = if c == "primary" {
            &r.primary
        } else {
            &r.secondary
        };
        async move {
            wait_until(&format!("the claim to bind in the {c}"), || async {
                get(cluster, &claim).await.filter(|p| {
                    p["status"]["phase"] == "Bound" && p["spec"]["volumeName"] == pv_name.as_str()
                })
            })
            .await
        }
    };
    bound("primary").await;

    let dir = super::workdir();
    write_config(dir.path(), &r, "");
    let out = lifeboat(
        dir.path(),
        &[
            "backup",
            "--name",
            "static",
            "--include-namespaces",
            &ns,
            "--include-cluster-resources",
            "true",
            "--include-resources",
            "persistentvolumes,persistentvolumeclaims,namespaces",
            "-o",
            "json",
        ],
    );
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}{}", stdout(&out), stderr(&out)));
    // Not copied, on purpose: no warning, and the claim is recorded as restored by reference.
    assert_eq!(out.status.code(), Some(0), "{summary}\n{}", stderr(&out));
    let uploads = summary["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pvc"] == "uploads")
        .unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(uploads["byReference"], true, "{uploads}");
    replicate(dir.path(), 23).await;
    let (code, doc, err) = restore(dir.path(), &[]);
    assert_eq!(code, Some(0), "{err}\n{doc}");
    let pv_item = doc["plan"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "PersistentVolume" && i["name"] == pv_name.as_str())
        .unwrap_or_else(|| panic!("the volume is in the plan: {doc}"));
    assert_eq!(pv_item["action"], "create", "{pv_item}");
    let notes = doc["plan"]["notes"].to_string();
    assert!(notes.contains("NFS 10.0.0.4:/exports/uploads"), "{notes}");
    assert!(
        doc["report"]["failed"].as_array().unwrap().is_empty(),
        "{}",
        doc["report"]
    );

    let pvc = bound("secondary").await;
    assert_eq!(pvc["spec"]["volumeName"], pv_name.as_str());
    let pv = get(
        &r.secondary,
        &format!("/api/v1/persistentvolumes/{pv_name}"),
    )
    .await
    .expect("the volume is restored");
    assert_eq!(pv["spec"]["nfs"]["path"], "/exports/uploads");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        pv["spec"]["claimRef"]["uid"], pvc["metadata"]["uid"],
        "{pv}"
    );
    for c in [&r.primary, &r.secondary] {
        kubectl(c, &["delete", "namespace", &ns, "--wait=false"]);
        kubectl(c, &["delete", "pv", &pv_name, "--wait=false"]);
    }
}
