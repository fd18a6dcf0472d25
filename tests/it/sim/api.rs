//! The API server's semantics (issue 3 part 3), each over HTTP through `kube::Client`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope};
use kube::runtime::wait::{await_condition, conditions};
use lifeboat::sim::{SimConfig, Throttle};
use serde_json::{Value, json};

use super::{WAIT, code, start, start_with};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).expect("cm")
}

fn pp() -> PostParams {
    PostParams::default()
}

async fn wait_deleted<K>(api: &Api<K>, name: &str, uid: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), name, conditions::is_deleted(uid)),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} was not deleted in time"))
    .expect("watch");
}

#[tokio::test]
async fn discovery_serves_builtins_and_snapshot_crds_both_plain_and_aggregated() {
    let sim = start().await;
    for discovery in [
        Discovery::new(sim.client.clone())
            .run()
            .await
            .expect("discovery"),
        Discovery::new(sim.client.clone())
            .run_aggregated()
            .await
            .expect("aggregated discovery"),
    ] {
        let (ar, caps) = discovery
            .resolve_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"))
            .expect("configmaps discovered");
        assert_eq!(ar.plural, "configmaps");
        assert_eq!(caps.scope, Scope::Namespaced);
        let (ar, caps) = discovery
            .resolve_gvk(&GroupVersionKind::gvk(
                "snapshot.storage.k8s.io",
                "v1",
                "VolumeSnapshotContent",
            ))
            .expect("snapshot CRD discovered");
        assert_eq!(ar.plural, "volumesnapshotcontents");
        assert_eq!(caps.scope, Scope::Cluster);
        assert!(
            discovery
                .resolve_gvk(&GroupVersionKind::gvk(
                    "storage.k8s.io",
                    "v1",
                    "StorageClass"
                ))
                .is_some()
        );
        assert!(
            discovery
                .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "StatefulSet"))
                .is_some()
        );
    }
    let v = sim.client.apiserver_version().await.expect("version");
    assert_eq!(v.major, "1");
}

#[tokio::test]
async fn create_with_resource_version_is_refused_with_500() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let mut obj = cm("a");
    obj.metadata.resource_version = Some("42".into());
    let err = api.create(&pp(), &obj).await.expect_err("refused");
    let kube::Error::Api(s) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(s.code, 500);
    assert_eq!(
        s.message,
        "resourceVersion should not be set on objects to be created"
    );
}

#[tokio::test]
async fn server_sets_uid_timestamp_generation_managed_fields_and_generate_name() {
    let sim = start().await;
    let api: Api<Deployment> = Api::namespaced(sim.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"generateName": "web-", "uid": "client-uid", "creationTimestamp": "2001-01-01T00:00:00Z"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        "status": {"replicas": 7},
    }))
    .expect("deployment");
    let created = api.create(&pp(), &d).await.expect("created");
    let m = &created.metadata;
    let name = m.name.clone().expect("name");
    assert!(
        name.starts_with("web-") && name.len() == "web-".len() + 5,
        "{name}"
    );
    assert_ne!(m.uid.as_deref(), Some("client-uid"));
    assert_eq!(m.uid.as_deref().map(str::len), Some(36));
    assert!(
        m.creation_timestamp
            .as_ref()
            .is_some_and(|t| t.0.as_second() > 1_700_000_000)
    );
    assert_eq!(m.generation, Some(1));
    let mf = m.managed_fields.as_ref().expect("managed fields");
    assert_eq!(mf[0].operation.as_deref(), Some("Update"));
    // Status is ignored on create.
    assert!(created.status.as_ref().is_none_or(|s| s.replicas.is_none()));
    // A spec change bumps generation; a label change does not.
    let p = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("label patch");
    assert_eq!(p.metadata.generation, Some(1));
    let p = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("spec patch");
    assert_eq!(p.metadata.generation, Some(2));
    assert_eq!(p.metadata.uid, created.metadata.uid);
}

#[tokio::test]
async fn namespaces_missing_terminating_and_deleted_with_their_contents() {
    let sim = start().await;
    let missing: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "nowhere");
    let err = missing.create(&pp(), &cm("a")).await.expect_err("404");
    assert_eq!(code(&err), (404, "NotFound".into()));

    let nss: Api<Namespace> = Api::all(sim.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "app"}})).expect("ns");
    let ns = nss.create(&pp(), &ns).await.expect("ns created");
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "app");
    // Keep the namespace Terminating while we probe it: a finalizer holds one object.
    let mut held = cm("held");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&pp(), &held).await.expect("held");
    cms.create(&pp(), &cm("plain")).await.expect("plain");
    let uid = nss.get("app").await.expect("ns").metadata.uid.expect("uid");
    nss.delete("app", &DeleteParams::default())
        .await
        .expect("delete ns");
    let terminating = nss.get("app").await.expect("still there");
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let err = cms.create(&pp(), &cm("late")).await.expect_err("403");
    assert_eq!(code(&err), (403, "Forbidden".into()));
    let plain_uid = cms
        .get("plain")
        .await
        .map(|c| c.metadata.uid.unwrap_or_default());
    if let Ok(plain_uid) = plain_uid {
        wait_deleted(&cms, "plain", &plain_uid).await;
    }
    // Releasing the finalizer lets the namespace go.
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release");
    wait_deleted(&nss, "app", &uid).await;
    assert!(
        cms.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn auto_created_namespaces_service_account_and_root_ca_collide() {
    let sim = start().await;
    let nss: Api<Namespace> = Api::all(sim.client.clone());
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        nss.get(ns).await.expect(ns);
        let ns_obj: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
        let err = nss.create(&pp(), &ns_obj).await.expect_err("409");
        assert_eq!(code(&err), (409, "AlreadyExists".into()));
    }
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "fresh"}})).expect("ns");
    nss.create(&pp(), &ns).await.expect("created");
    for ns in ["default", "fresh"] {
        let sas: Api<ServiceAccount> = Api::namespaced(sim.client.clone(), ns);
        sas.get("default").await.expect("default sa");
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa");
        assert_eq!(code(&sas.create(&pp(), &sa).await.expect_err("409")).0, 409);
        let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), ns);
        cms.get("kube-root-ca.crt").await.expect("root ca");
        assert_eq!(
            code(
                &cms.create(&pp(), &cm("kube-root-ca.crt"))
                    .await
                    .expect_err("409")
            )
            .0,
            409
        );
    }
    // The `kubernetes` Service exists too, with the first IP of the range.
    let svcs: Api<Service> = Api::namespaced(sim.client.clone(), "default");
    let k = svcs.get("kubernetes").await.expect("kubernetes service");
    assert_eq!(
        k.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("10.96.0.1")
    );
}

#[tokio::test]
async fn lists_paginate_omit_item_kinds_filter_and_expire_continue_tokens() {
    let sim = start_with(|c| c.continue_max_writes = Some(3)).await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    for i in 0..25 {
        let mut c = cm(&format!("cm-{i:02}"));
        c.metadata.labels = Some([("parity".to_string(), (i % 2).to_string())].into());
        api.create(&pp(), &c).await.expect("create");
    }
    // Raw list: items carry no kind/apiVersion, the list does.
    let req = http::Request::get("/api/v1/namespaces/default/configmaps?limit=10")
        .body(Vec::new())
        .expect("request");
    let page: Value =
        serde_json::from_str(&sim.client.request_text(req).await.expect("list")).expect("json");
    assert_eq!(page["kind"], "ConfigMapList");
    assert_eq!(page["apiVersion"], "v1");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 10);
    assert!(
        items
            .iter()
            .all(|i| i.get("kind").is_none() && i.get("apiVersion").is_none())
    );
    // Paging through everything visits each object once, in name order.
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(7);
    loop {
        let page = api.list(&lp).await.expect("page");
        names.extend(
            page.items
                .iter()
                .map(|c| c.metadata.name.clone().unwrap_or_default()),
        );
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    let ours: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with("cm-"))
        .cloned()
        .collect();
    assert_eq!(ours.len(), 25);
    assert!(ours.windows(2).all(|w| w[0] < w[1]));
    // Selectors.
    let odd = api
        .list(&ListParams::default().labels("parity=1"))
        .await
        .expect("labels");
    assert_eq!(odd.items.len(), 12);
    let one = api
        .list(&ListParams::default().fields("metadata.name=cm-03"))
        .await
        .expect("fields");
    assert_eq!(one.items.len(), 1);
    let all_ns: Api<ConfigMap> = Api::all(sim.client.clone());
    let def = all_ns
        .list(&ListParams::default().fields("metadata.namespace=default,metadata.name=cm-03"))
        .await
        .expect("all-namespace list");
    assert_eq!(def.items.len(), 1);
    // A token outlives 3 writes: 410 Expired.
    let first = api
        .list(&ListParams::default().limit(5))
        .await
        .expect("first page");
    let token = first.metadata.continue_.expect("token");
    for i in 0..4 {
        api.create(&pp(), &cm(&format!("late-{i}")))
            .await
            .expect("write");
    }
    let err = api
        .list(&ListParams::default().limit(5).continue_token(&token))
        .await
        .expect_err("410");
    assert_eq!(code(&err), (410, "Expired".into()));
}

#[tokio::test]
async fn continue_tokens_expire_with_age() {
    let sim = start_with(|c| c.continue_ttl = Duration::from_millis(200)).await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    for i in 0..3 {
        api.create(&pp(), &cm(&format!("age-{i}")))
            .await
            .expect("create");
    }
    let first = api
        .list(&ListParams::default().limit(1))
        .await
        .expect("first page");
    let token = first.metadata.continue_.expect("token");
    api.list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .expect("a fresh token works");
    // The behaviour under test is the passing of time itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .expect_err("410");
    assert_eq!(code(&err), (410, "Expired".into()));
}

fn service(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("service")
}

#[tokio::test]
async fn services_allocate_validate_and_keep_headless() {
    let sim = start_with(|c| c.service_cidr = "10.40.0.0/16".into()).await;
    let api: Api<Service> = Api::namespaced(sim.client.clone(), "default");
    let ports = json!([{"port": 80}]);
    let auto = api
        .create(&pp(), &service("auto", json!({"ports": ports})))
        .await
        .expect("auto");
    let ip = auto
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .expect("allocated");
    assert!(ip.starts_with("10.40."), "{ip}");
    let err = api
        .create(
            &pp(),
            &service(
                "outside",
                json!({"clusterIP": "10.96.0.50", "ports": ports}),
            ),
        )
        .await
        .expect_err("outside the CIDR");
    let kube::Error::Api(s) = &err else {
        panic!("{err:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.contains("not in the valid range"),
        "{}",
        s.message
    );
    let err = api
        .create(
            &pp(),
            &service("dup", json!({"clusterIP": ip, "ports": ports})),
        )
        .await
        .expect_err("taken");
    assert_eq!(code(&err), (422, "Invalid".into()));
    let fixed = api
        .create(
            &pp(),
            &service("fixed", json!({"clusterIP": "10.40.7.7", "ports": ports})),
        )
        .await
        .expect("free IP in range");
    assert_eq!(
        fixed.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("10.40.7.7")
    );
    let headless = api
        .create(
            &pp(),
            &service("headless", json!({"clusterIP": "None", "ports": ports})),
        )
        .await
        .expect("headless");
    assert_eq!(
        headless.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );
    let np = api
        .create(&pp(), &service("np", json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "nodePort": 30123}]})))
        .await
        .expect("node port");
    let got: Vec<i32> = np
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.node_port)
        .collect();
    assert_eq!(got.len(), 2);
    assert!(got.contains(&30123) && got.iter().all(|p| (30000..=32767).contains(p)));
    let err = api
        .create(
            &pp(),
            &service(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30123}]}),
            ),
        )
        .await
        .expect_err("port taken");
    assert_eq!(code(&err), (422, "Invalid".into()));
}

#[tokio::test]
async fn immutable_fields_are_refused_with_422() {
    let sim = start().await;
    let c = sim.client.clone();
    // PVC: only the storage request may change.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "default");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "none-such",
            "resources": {"requests": {"storage": "1Gi"}}}}))
    .expect("pvc");
    pvcs.create(&pp(), &pvc).await.expect("pvc");
    pvcs.patch(
        "data",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
    )
    .await
    .expect("resize allowed");
    let err = pvcs
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"accessModes": ["ReadWriteMany"]}})),
        )
        .await
        .expect_err("access modes immutable");
    assert_eq!(code(&err), (422, "Invalid".into()));
    // StorageClass parameters and provisioner.
    let scs: Api<StorageClass> = Api::all(c.clone());
    let sc: StorageClass = serde_json::from_value(json!({"metadata": {"name": "fast"},
        "provisioner": "disk.csi.sim", "parameters": {"tier": "a"}}))
    .expect("sc");
    scs.create(&pp(), &sc).await.expect("sc");
    for patch in [
        json!({"parameters": {"tier": "b"}}),
        json!({"provisioner": "other"}),
    ] {
        let err = scs
            .patch("fast", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect_err("immutable");
        assert_eq!(code(&err), (422, "Invalid".into()));
    }
    scs.patch(
        "fast",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"ok": "yes"}}})),
    )
    .await
    .expect("labels may change");
    // Immutable ConfigMap and Secret; a Secret's type.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mut frozen = cm("frozen");
    frozen.immutable = Some(true);
    cms.create(&pp(), &frozen).await.expect("frozen");
    let err = cms
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        )
        .await
        .expect_err("immutable data");
    assert_eq!(code(&err), (422, "Invalid".into()));
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}))
            .expect("secret");
    let s = secrets.create(&pp(), &s).await.expect("secret");
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert_eq!(s.data.expect("data folded from stringData")["a"].0, b"b");
    let err = secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"type": "kubernetes.io/tls"})),
        )
        .await
        .expect_err("type immutable");
    assert_eq!(code(&err), (422, "Invalid".into()));
    let fs: Secret = serde_json::from_value(
        json!({"metadata": {"name": "fs"}, "immutable": true, "data": {"a": "Yg=="}}),
    )
    .expect("secret");
    secrets.create(&pp(), &fs).await.expect("frozen secret");
    let err = secrets
        .patch(
            "fs",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "Yw=="}})),
        )
        .await
        .expect_err("immutable secret");
    assert_eq!(code(&err), (422, "Invalid".into()));
}

#[tokio::test]
async fn garbage_collector_deletes_dangling_and_cascades() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let mut orphan = cm("orphan");
    orphan.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-4000-8000-000000000000"}))
    .expect("owner ref")]);
    let orphan = cms
        .create(&pp(), &orphan)
        .await
        .expect("created despite the missing owner");
    let owner = cms.create(&pp(), &cm("owner")).await.expect("owner");
    let mut child = cm("child");
    child.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}))
        .expect("owner ref"),
    ]);
    let child = cms.create(&pp(), &child).await.expect("child");
    wait_deleted(&cms, "orphan", orphan.metadata.uid.as_deref().expect("uid")).await;
    // The child lives while its owner does.
    assert!(cms.get_opt("child").await.expect("get").is_some());
    cms.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    wait_deleted(&cms, "child", child.metadata.uid.as_deref().expect("uid")).await;

    // Orphan propagation keeps the dependent and drops its reference.
    let owner2 = cms.create(&pp(), &cm("owner2")).await.expect("owner2");
    let mut kept = cm("kept");
    kept.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": owner2.metadata.uid}))
        .expect("owner ref"),
    ]);
    cms.create(&pp(), &kept).await.expect("kept");
    cms.delete("owner2", &DeleteParams::orphan())
        .await
        .expect("orphan delete");
    let kept = cms.get("kept").await.expect("dependent survives");
    assert!(kept.metadata.owner_references.is_none());
}

#[tokio::test]
async fn delete_preconditions_are_checked() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let c = cms.create(&pp(), &cm("pre")).await.expect("create");
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("00000000-0000-4000-8000-000000000000".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let err = cms.delete("pre", &wrong).await.expect_err("uid mismatch");
    assert_eq!(code(&err), (409, "Conflict".into()));
    let right = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: c.metadata.uid.clone(),
            resource_version: c.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    cms.delete("pre", &right)
        .await
        .expect("matching preconditions");
    assert!(cms.get_opt("pre").await.expect("get").is_none());
}

#[tokio::test]
async fn optimistic_concurrency_and_status_subresource() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let v1 = api.create(&pp(), &cm("occ")).await.expect("create");
    let mut a = v1.clone();
    a.data = Some([("k".to_string(), "a".to_string())].into());
    let v2 = api.replace("occ", &pp(), &a).await.expect("first update");
    assert_ne!(v2.metadata.resource_version, v1.metadata.resource_version);
    let mut stale = v1.clone();
    stale.data = Some([("k".to_string(), "b".to_string())].into());
    let err = api.replace("occ", &pp(), &stale).await.expect_err("stale");
    assert_eq!(code(&err), (409, "Conflict".into()));
    // resourceVersions are one global increasing counter.
    let other = api.create(&pp(), &cm("other")).await.expect("other");
    let rv = |c: &ConfigMap| {
        c.metadata
            .resource_version
            .as_deref()
            .unwrap_or("0")
            .parse::<u64>()
            .expect("numeric rv")
    };
    assert!(rv(&other) > rv(&v2));

    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}], "nodeName": "nowhere"},
        "status": {"phase": "Succeeded"}}))
    .expect("pod");
    let created = pods.create(&pp(), &pod).await.expect("pod");
    assert_ne!(
        created.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded")
    );
    // Writes to the main resource keep status; the subresource changes only status.
    let patched = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"message": "hello"}, "metadata": {"labels": {"no": "way"}}}),
            ),
        )
        .await
        .expect("status patch");
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.message.as_deref()),
        Some("hello")
    );
    assert!(
        patched
            .metadata
            .labels
            .is_none_or(|l| !l.contains_key("no"))
    );
    let relabel = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"message": "ignored"}, "metadata": {"labels": {"x": "y"}}}),
            ),
        )
        .await
        .expect("main patch");
    assert_eq!(
        relabel.status.and_then(|s| s.message).as_deref(),
        Some("hello")
    );
}

#[tokio::test]
async fn patches_json_merge_strategic_and_server_side_apply() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let ssa = PatchParams::apply("lifeboat-test").force();
    let applied = api
        .patch(
            "ssa",
            &ssa,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ssa"}, "data": {"a": "1"}})),
        )
        .await
        .expect("apply creates");
    assert_eq!(applied.data.as_ref().expect("data")["a"], "1");
    let mf = applied.metadata.managed_fields.expect("mf");
    assert_eq!(mf[0].manager.as_deref(), Some("lifeboat-test"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let applied = api
        .patch(
            "ssa",
            &ssa,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ssa"}, "data": {"a": "2", "b": "3"}})),
        )
        .await
        .expect("apply updates");
    assert_eq!(applied.data.as_ref().expect("data")["a"], "2");
    // Fields the manager stops applying are removed.
    let applied = api
        .patch(
            "ssa",
            &ssa,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ssa"}, "data": {"a": "2"}})),
        )
        .await
        .expect("apply drops b");
    assert!(!applied.data.as_ref().expect("data").contains_key("b"));
    let applied = api
        .patch(
            "ssa",
            &ssa,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ssa"}, "data": {"a": "2", "b": "3"}})),
        )
        .await
        .expect("apply restores b");
    assert_eq!(applied.data.as_ref().expect("data")["b"], "3");
    let j = api
        .patch("ssa", &PatchParams::default(), &Patch::<Value>::Json(serde_json::from_value(json!([
            {"op": "replace", "path": "/data/a", "value": "9"}, {"op": "remove", "path": "/data/b"}])).expect("json patch")))
        .await
        .expect("json patch");
    assert_eq!(j.data.as_ref().expect("data").len(), 1);
    assert_eq!(j.data.as_ref().expect("data")["a"], "9");
    let s = api
        .patch(
            "ssa",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"c": "4"}})),
        )
        .await
        .expect("strategic");
    assert_eq!(s.data.expect("data").len(), 2);
    let err = api
        .patch(
            "absent",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {}})),
        )
        .await
        .expect_err("404");
    assert_eq!(code(&err), (404, "NotFound".into()));
}

#[tokio::test]
async fn crd_is_established_after_a_delay_and_serves_its_resources() {
    let sim = start_with(|c| c.crd_established_delay = Duration::from_millis(300)).await;
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]}}))
    .expect("crd");
    let started = Instant::now();
    crds.create(&pp(), &crd).await.expect("crd");
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(sim.client.clone(), "default", &ar);
    let w: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}}))
        .expect("widget");
    // Not served until established (kubectl and clients must wait).
    let err = widgets
        .create(&pp(), &w)
        .await
        .expect_err("not yet established");
    assert_eq!(code(&err).0, 404);
    tokio::time::timeout(
        WAIT,
        await_condition(
            crds.clone(),
            "widgets.example.com",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("established in time")
    .expect("watch");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "established too early"
    );
    let created = widgets.create(&pp(), &w).await.expect("widget");
    assert_eq!(created.data["spec"]["size"], 3);
    let list = widgets.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
    // Custom resources keep kind/apiVersion in list items.
    let req = http::Request::get("/apis/example.com/v1/namespaces/default/widgets")
        .body(Vec::new())
        .expect("req");
    let raw: Value =
        serde_json::from_str(&sim.client.request_text(req).await.expect("raw list")).expect("json");
    assert_eq!(raw["items"][0]["kind"], "Widget");
    let discovery = Discovery::new(sim.client.clone())
        .run()
        .await
        .expect("discovery");
    assert!(
        discovery
            .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
            .is_some()
    );
    // Deleting the CRD stops serving it.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .expect("delete crd");
    super::eventually("widgets to stop being served", || {
        let widgets = widgets.clone();
        async move { widgets.list(&ListParams::default()).await.err().map(|_| ()) }
    })
    .await;
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_and_clients_back_off() {
    let sim = start_with(|c| {
        c.throttle = Some(Throttle {
            every: 2,
            retry_after_secs: 1,
        })
    })
    .await;
    // A client without retries sees the 429 and its Retry-After.
    let mut cfg = kube::Config::new(sim.cluster.url().parse().expect("url"));
    cfg.default_retry = false;
    let raw = kube::Client::try_from(cfg).expect("client");
    let mut saw = None;
    for _ in 0..2 {
        let req = http::Request::get("/api/v1/namespaces/default/configmaps")
            .body(kube::client::Body::from(Vec::new()))
            .expect("req");
        let resp = raw.send(req).await.expect("response");
        if resp.status() == http::StatusCode::TOO_MANY_REQUESTS {
            saw = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(saw.as_deref(), Some("1"));
    // kube's default client honours Retry-After and succeeds.
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let started = Instant::now();
    for i in 0..3 {
        api.create(&pp(), &cm(&format!("t{i}")))
            .await
            .expect("create after back-off");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "no back-off observed"
    );
}

#[tokio::test]
async fn injected_latency_delays_every_request() {
    let sim = start_with(|c: &mut SimConfig| c.latency = Duration::from_millis(150)).await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let started = Instant::now();
    api.get("kube-root-ca.crt").await.expect("get");
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn two_regions_share_a_kubeconfig_and_refuse_each_others_cluster_ips() {
    let primary = start_with(|c| {
        c.name = "primary".into();
        c.service_cidr = "10.10.0.0/16".into();
    })
    .await;
    let secondary = start_with(|c| {
        c.name = "secondary".into();
        c.service_cidr = "10.20.0.0/16".into();
    })
    .await;
    let path = primary._dir.path().join("both.kubeconfig");
    lifeboat::sim::write_merged_kubeconfig(&path, &[&primary.cluster, &secondary.cluster])
        .expect("kubeconfig");
    lifeboat::sim::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
    let opts = kube::config::KubeConfigOptions {
        context: Some("secondary".into()),
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &opts)
        .await
        .expect("secondary context");
    let client = kube::Client::try_from(cfg).expect("client");
    let svc = Api::<Service>::namespaced(primary.client.clone(), "default")
        .create(&pp(), &service("db", json!({"ports": [{"port": 5432}]})))
        .await
        .expect("primary service");
    let ip = svc.spec.and_then(|s| s.cluster_ip).expect("ip");
    // The same Service, clusterIP included, is invalid in the other region.
    let err = Api::<Service>::namespaced(client, "default")
        .create(
            &pp(),
            &service("db", json!({"clusterIP": ip, "ports": [{"port": 5432}]})),
        )
        .await
        .expect_err("foreign cluster IP");
    assert_eq!(code(&err), (422, "Invalid".into()));
}

#[tokio::test]
async fn objects_that_do_not_match_their_schema_are_refused() {
    let sim = start().await;
    let raw = |path: &str, body: Value| {
        http::Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).expect("body"))
            .expect("request")
    };
    // A Deployment without its required selector.
    let req = raw(
        "/apis/apps/v1/namespaces/default/deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
    );
    let err = sim.client.request_text(req).await.expect_err("no selector");
    assert_eq!(code(&err), (422, "Invalid".into()));
    let req = raw(
        "/apis/apps/v1/namespaces/default/deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
    );
    let err = sim
        .client
        .request_text(req)
        .await
        .expect_err("selector mismatch");
    assert_eq!(code(&err), (422, "Invalid".into()));
    let req = raw(
        "/api/v1/namespaces/default/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}),
    );
    let err = sim
        .client
        .request_text(req)
        .await
        .expect_err("no containers");
    assert_eq!(code(&err), (422, "Invalid".into()));
    // ConfigMap data values must be strings.
    let req = raw(
        "/api/v1/namespaces/default/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"n": 1}}),
    );
    let err = sim
        .client
        .request_text(req)
        .await
        .expect_err("number in data");
    assert_eq!(code(&err).0, 422);
    // A patch that breaks the schema is refused too, and the object is unchanged.
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    api.create(&pp(), &cm("ok")).await.expect("valid");
    let err = api
        .patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": ["not", "a", "string"]}})),
        )
        .await
        .expect_err("bad patch");
    assert_eq!(code(&err).0, 422);
    assert_eq!(
        api.get("ok").await.expect("get").data.expect("data")["k"],
        "v"
    );
}

#[tokio::test]
async fn workloads_serve_the_scale_subresource() {
    let sim = start().await;
    let api: Api<Deployment> = Api::namespaced(sim.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }))
    .expect("deployment");
    api.create(&pp(), &d).await.expect("created");
    let scale = api.get_scale("web").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(
        scale.status.map(|s| s.selector),
        Some(Some("app=web".into()))
    );
    let scaled = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scale to zero");
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(0));
    let d = api.get("web").await.expect("get");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(0));
    assert_eq!(d.metadata.generation, Some(2));
}

#[tokio::test]
async fn workload_specs_are_immutable_where_a_real_server_says_so() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let sim = start().await;
    let sts: Api<StatefulSet> = Api::namespaced(sim.client.clone(), "default");
    let s: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 0, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "postgres"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "a",
                    "resources": {"requests": {"storage": "1Gi"}}}}]},
    }))
    .expect("sts");
    sts.create(&pp(), &s).await.expect("sts");
    sts.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .expect("replicas may change");
    let mut changed = sts.get("db").await.expect("get");
    changed
        .spec
        .as_mut()
        .expect("spec")
        .volume_claim_templates
        .as_mut()
        .expect("vct")[0]
        .spec
        .as_mut()
        .expect("pvc spec")
        .storage_class_name = Some("b".into());
    let err = sts
        .replace("db", &pp(), &changed)
        .await
        .expect_err("volumeClaimTemplates are immutable");
    assert_eq!(code(&err), (422, "Invalid".into()));
    let deps: Api<Deployment> = Api::namespaced(sim.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "v": "1"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }))
    .expect("deployment");
    deps.create(&pp(), &d).await.expect("deployment");
    let err = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"matchLabels": {"v": "1"}}}})),
        )
        .await
        .expect_err("selector is immutable");
    assert_eq!(code(&err), (422, "Invalid".into()));
}
