//! `--state DIR`: a stopped simulator restarts with its objects.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use lifeboat::sim::{SimCluster, SimConfig};
use serde_json::json;

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || SimConfig {
        name: "persisted".into(),
        state_dir: dir.path().to_path_buf(),
        persist: true,
        ..SimConfig::default()
    };
    let cluster = SimCluster::start(config()).await.expect("start");
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().expect("client"), "default");
    let c: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "keep"}, "data": {"a": "b"}}))
            .expect("cm");
    let created = api
        .create(&PostParams::default(), &c)
        .await
        .expect("create");
    // A custom resource of an established CRD (VolumeSnapshotClass is installed at start).
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass"),
        "volumesnapshotclasses",
    );
    let classes: Api<DynamicObject> = Api::all_with(cluster.client().expect("client"), &ar);
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "csi-sim"}, "driver": "disk.csi.sim", "deletionPolicy": "Delete"}))
    .expect("class");
    classes
        .create(&PostParams::default(), &class)
        .await
        .expect("create class");
    cluster.shutdown().await.expect("shutdown saves");

    let cluster = SimCluster::start(config()).await.expect("restart");
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().expect("client"), "default");
    let got = api.get("keep").await.expect("still there");
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert_eq!(got.data.expect("data")["a"], "b");
    let classes: Api<DynamicObject> = Api::all_with(cluster.client().expect("client"), &ar);
    let class = classes.get("csi-sim").await.expect("custom resource kept");
    assert_eq!(class.data["driver"], "disk.csi.sim");
    // The counter continues past the saved version.
    let next = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "after"}})).expect("cm"),
        )
        .await
        .expect("create after restart");
    let rv = |c: &ConfigMap| {
        c.metadata
            .resource_version
            .as_deref()
            .unwrap_or("0")
            .parse::<u64>()
            .expect("rv")
    };
    assert!(rv(&next) > rv(&created));
    cluster.shutdown().await.expect("shutdown");
}
