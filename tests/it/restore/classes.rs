//! VolumeAttributesClasses (Kubernetes 1.34 GA): backed up whatever the filters, restored before
//! the claims naming them, renamed by a mapping (issue 16 item 7).

use serde_json::json;

use super::{Regions, get};
use crate::seed::post;

#[tokio::test(flavor = "multi_thread")]
async fn volume_attributes_classes_are_restored_and_mapped_with_their_claims() {
    let r = Regions::new().await;
    let p = &r.primary.client;
    post(
        p,
        "/apis/storage.k8s.io/v1/volumeattributesclasses",
        json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass",
            "metadata": {"name": "gold-eastus2"}, "driverName": "disk.csi.sim",
            "parameters": {"iops": "5000"}
        }),
    )
    .await;
    post(
        p,
        "/api/v1/namespaces/db/persistentvolumeclaims",
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "fast"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                     "volumeAttributesClassName": "gold-eastus2",
                     "resources": {"requests": {"storage": "1Gi"}}}
        }),
    )
    .await;
    // Only the db namespace: the class is taken all the same.
    let out = crate::support::lifeboat(
        r.path(),
        &[
            "backup",
            "--no-volumes",
            "--name",
            "vac",
            "--include-namespaces",
            "db",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    r.replicate_all(5).await;

    // Without a mapping the plan restores the class as it is, before the claim.
    let (code, doc, err) = r.restore(&["--no-volumes", "--dry-run"]);
    assert_eq!(code, Some(0), "{err}\n{doc}");
    let items = doc["plan"]["items"].as_array().unwrap();
    let class = items
        .iter()
        .position(|i| i["kind"] == "VolumeAttributesClass")
        .unwrap();
    let claim = items.iter().position(|i| i["name"] == "fast").unwrap();
    assert!(class < claim, "the class comes first: {doc}");
    assert_eq!(items[class]["action"], "create");

    let (code, doc, err) = r.restore(&[
        "--no-volumes",
        "--volume-attributes-class-map",
        "gold-eastus2=gold",
    ]);
    assert_eq!(code, Some(0), "{err}\n{doc}");
    let s = &r.secondary.client;
    let class = get(s, "/apis/storage.k8s.io/v1/volumeattributesclasses/gold")
        .await
        .expect("the class, renamed");
    assert_eq!(class["parameters"]["iops"], "5000");
    assert!(
        get(
            s,
            "/apis/storage.k8s.io/v1/volumeattributesclasses/gold-eastus2"
        )
        .await
        .is_none()
    );
    let pvc = get(s, "/api/v1/namespaces/db/persistentvolumeclaims/fast")
        .await
        .unwrap();
    assert_eq!(pvc["spec"]["volumeAttributesClassName"], "gold");
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}
