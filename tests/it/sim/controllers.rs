//! The simulated cluster's controllers and kubelet (issue 3, parts 3.9, 4 and 5), driven through
//! `kube::Client` over HTTP against a started `SimCluster`.

use std::path::PathBuf;
use std::time::Duration;

use futures::TryStreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt as _, watcher};
use lifeboat::sim::{SimCluster, SimConfig};
use serde_json::json;

/// Generous: the controllers react within milliseconds, but the test binary shares 2 cores.
const WAIT: Duration = Duration::from_secs(60);

struct Sim {
    cluster: SimCluster,
    client: kube::Client,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Sim {
    start_with_bin(PathBuf::from(env!("CARGO_BIN_EXE_lifeboat"))).await
}

/// Starts a cluster whose kubelet runs `bin` for `lifeboat:dev` containers.
async fn start_with_bin(bin: PathBuf) -> Sim {
    // RUST_LOG=lifeboat=debug shows what the controllers do.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let config = SimConfig {
        name: "primary".into(),
        zones: (1..=3).map(|i| format!("eastus2-{i}")).collect(),
        nodes: (1..=3).map(|i| format!("aks-eastus2-{i}")).collect(),
        state_dir: state.clone(),
        lifeboat_image: "lifeboat:dev".into(),
        lifeboat_bin: bin,
        ..SimConfig::default()
    };
    let cluster = SimCluster::start(config)
        .await
        .expect("start the simulated cluster");
    let client = cluster.client().expect("client");
    Sim {
        cluster,
        client,
        state,
        _dir: dir,
    }
}

impl Sim {
    async fn stop(self) {
        self.cluster.shutdown().await.expect("shutdown");
    }
}

/// Waits (watching, bounded by [`WAIT`]) until `cond` holds for the named object.
async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, cond: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let found = tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), name, move |o: Option<&K>| o.is_some_and(&cond)),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {name}: {what}"))
    .expect("watch");
    found.unwrap_or_else(|| panic!("{name} vanished while waiting for: {what}"))
}

async fn create_storage_class(client: &kube::Client, name: &str, extra: serde_json::Value) {
    let mut sc = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "disk.csi.sim",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        sc[k] = v.clone();
    }
    let sc: StorageClass = serde_json::from_value(sc).unwrap();
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &sc)
        .await
        .expect("create StorageClass");
}

fn claim(name: &str, class: &str, extra: serde_json::Value) -> PersistentVolumeClaim {
    let mut pvc = json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        pvc["spec"][k] = v.clone();
    }
    serde_json::from_value(pvc).unwrap()
}

fn is_bound(pvc: &PersistentVolumeClaim) -> bool {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

fn snapshot_api(client: &kube::Client, kind: &str, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        kind,
    ));
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// The directory a bound claim's `disk.csi.sim` volume lives in.
async fn volume_dir(client: &kube::Client, pvc: &PersistentVolumeClaim) -> PathBuf {
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .expect("volumeName");
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await
        .expect("get PV");
    let csi = pv.spec.and_then(|s| s.csi).expect("a CSI volume");
    assert_eq!(csi.driver, "disk.csi.sim");
    PathBuf::from(csi.volume_handle)
}

fn controller_of(meta: &kube::api::ObjectMeta) -> (String, String, String) {
    let r = meta
        .owner_references
        .as_ref()
        .and_then(|rs| rs.iter().find(|r| r.controller == Some(true)))
        .unwrap_or_else(|| panic!("{:?} has no controller ownerReference", meta.name));
    (r.kind.clone(), r.name.clone(), r.uid.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_claims_are_provisioned_bound_adopted_and_its_pods_run() {
    let sim = start().await;
    let client = sim.client.clone();
    create_storage_class(
        &client,
        "sim-wffc",
        json!({"volumeBindingMode": "WaitForFirstConsumer"}),
    )
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    // A claim that exists before its StatefulSet (as a restore creates it) is adopted, not replaced.
    let mut pre = claim("data-db-0", "sim-wffc", json!({}));
    pre.metadata.labels = Some([("restored".to_string(), "yes".to_string())].into());
    let pre = claims
        .create(&PostParams::default(), &pre)
        .await
        .expect("create claim");

    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 2,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": "postgres:16",
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]}]},
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "sim-wffc",
                         "resources": {"requests": {"storage": "2Gi"}}},
            }],
        },
    }))
    .unwrap();
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let sts = sets
        .create(&PostParams::default(), &sts)
        .await
        .expect("create StatefulSet");
    wait_for(&sets, "db", "2 ready replicas", |s| {
        s.status.as_ref().and_then(|s| s.ready_replicas) == Some(2)
    })
    .await;

    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("nodes");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for ordinal in 0..2 {
        let pvc = claims
            .get(&format!("data-db-{ordinal}"))
            .await
            .expect("claim from template");
        assert!(is_bound(&pvc), "data-db-{ordinal} is bound");
        let ann = pvc.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            ann.get("pv.kubernetes.io/bind-completed")
                .map(String::as_str),
            Some("yes")
        );
        assert_eq!(
            ann.get("pv.kubernetes.io/bound-by-controller")
                .map(String::as_str),
            Some("yes")
        );
        let pod = pods.get(&format!("db-{ordinal}")).await.expect("pod");
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("scheduled");
        assert_eq!(
            ann.get("volume.kubernetes.io/selected-node"),
            Some(&node),
            "WaitForFirstConsumer binds on the pod's node"
        );
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running")
        );
        assert_eq!(
            controller_of(&pod.metadata),
            (
                "StatefulSet".into(),
                "db".into(),
                sts.metadata.uid.clone().unwrap()
            )
        );

        // The PV: claimRef with the claim's uid, capacity, class and the zone of the pod's node.
        let pv_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap();
        let pv = Api::<PersistentVolume>::all(client.clone())
            .get(&pv_name)
            .await
            .expect("PV");
        let spec = pv.spec.clone().unwrap();
        assert_eq!(
            spec.claim_ref.as_ref().and_then(|r| r.uid.clone()),
            pvc.metadata.uid.clone()
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("sim-wffc"));
        let want_size = if ordinal == 0 { "1Gi" } else { "2Gi" };
        assert_eq!(
            spec.capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map(|q| q.0.as_str()),
            Some(want_size)
        );
        let node_zone = nodes
            .items
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node.as_str()))
            .and_then(|n| {
                n.metadata
                    .labels
                    .as_ref()?
                    .get("topology.kubernetes.io/zone")
                    .cloned()
            })
            .expect("node zone");
        let pv_zone = spec.node_affinity.and_then(|a| a.required).map(|r| {
            r.node_selector_terms[0].match_expressions.clone().unwrap()[0]
                .values
                .clone()
                .unwrap()[0]
                .clone()
        });
        assert_eq!(pv_zone, Some(node_zone));
        assert!(
            volume_dir(&client, &pvc).await.is_dir(),
            "the volume directory exists"
        );
    }
    let adopted = claims.get("data-db-0").await.unwrap();
    assert_eq!(
        adopted.metadata.uid, pre.metadata.uid,
        "the existing claim was adopted"
    );
    assert_eq!(
        adopted
            .metadata
            .labels
            .unwrap()
            .get("restored")
            .map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        claims
            .get("data-db-1")
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap()
            .get("app")
            .map(String::as_str),
        Some("db"),
        "claims from templates carry the selector's labels"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restores_the_same_bytes_and_deletion_cleans_up() {
    let sim = start().await;
    let client = sim.client.clone();
    create_storage_class(&client, "sim", json!({})).await;
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "sim-snap"}, "driver": "disk.csi.sim", "deletionPolicy": "Delete",
    }))
    .unwrap();
    snapshot_api(&client, "VolumeSnapshotClass", None)
        .create(&PostParams::default(), &class)
        .await
        .expect("create VolumeSnapshotClass");

    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    claims
        .create(&PostParams::default(), &claim("src", "sim", json!({})))
        .await
        .expect("create claim");
    let src = wait_for(&claims, "src", "Bound", is_bound).await;
    let src_dir = volume_dir(&client, &src).await;
    let payload: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::create_dir_all(src_dir.join("pgdata")).unwrap();
    std::fs::write(src_dir.join("pgdata/base.bin"), &payload).unwrap();

    let snapshots = snapshot_api(&client, "VolumeSnapshot", Some("default"));
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "src-snap"},
        "spec": {"volumeSnapshotClassName": "sim-snap", "source": {"persistentVolumeClaimName": "src"}},
    }))
    .unwrap();
    snapshots
        .create(&PostParams::default(), &vs)
        .await
        .expect("create VolumeSnapshot");
    let ready = wait_for(&snapshots, "src-snap", "readyToUse", |s: &DynamicObject| {
        s.data["status"]["readyToUse"] == true
    })
    .await;
    assert_eq!(ready.data["status"]["restoreSize"], "1Gi");
    assert!(ready.data["status"]["creationTime"].is_string());
    let content_name = ready.data["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .expect("bound content")
        .to_owned();
    let content = snapshot_api(&client, "VolumeSnapshotContent", None)
        .get(&content_name)
        .await
        .expect("content");
    assert_eq!(
        content.data["spec"]["volumeSnapshotRef"]["uid"].as_str(),
        ready.metadata.uid.as_deref()
    );
    let copy = sim.state.join("snapshots").join(&content_name);
    assert!(copy.is_dir(), "the snapshot is a copied directory");
    // Writes after the snapshot do not reach it.
    std::fs::write(src_dir.join("pgdata/base.bin"), b"overwritten").unwrap();

    let restore = claim(
        "restored",
        "sim",
        json!({"dataSource": {"kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "src-snap"}}),
    );
    claims
        .create(&PostParams::default(), &restore)
        .await
        .expect("create claim from snapshot");
    let restored = wait_for(&claims, "restored", "Bound", is_bound).await;
    let restored_dir = volume_dir(&client, &restored).await;
    assert_ne!(restored_dir, src_dir);
    assert_eq!(
        std::fs::read(restored_dir.join("pgdata/base.bin")).unwrap(),
        payload,
        "same bytes as at snapshot time"
    );

    // Deleting the snapshot (deletionPolicy Delete) deletes its content and the copy.
    snapshots
        .delete("src-snap", &DeleteParams::default())
        .await
        .expect("delete snapshot");
    let contents = snapshot_api(&client, "VolumeSnapshotContent", None);
    let uid = content.metadata.uid.clone().unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(contents, &content_name, conditions::is_deleted(&uid)),
    )
    .await
    .expect("content deleted in time")
    .expect("watch");
    assert!(!copy.exists(), "the snapshot copy is removed");

    // Deleting a claim whose class reclaims with Delete removes its PV and directory.
    let pv_name = src
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap();
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let pv_uid = pvs.get(&pv_name).await.unwrap().metadata.uid.unwrap();
    claims
        .delete("src", &DeleteParams::default())
        .await
        .expect("delete claim");
    tokio::time::timeout(
        WAIT,
        await_condition(pvs, &pv_name, conditions::is_deleted(&pv_uid)),
    )
    .await
    .expect("PV deleted in time")
    .expect("watch");
    assert!(!src_dir.exists(), "the volume directory is removed");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifeboat_job_runs_the_binary_and_succeeds_with_its_log() {
    let sim = start().await;
    let client = sim.client.clone();
    let job = |name: &str, args: serde_json::Value| -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "lifeboat", "image": "lifeboat:dev", "args": args}]}},
            },
        }))
        .unwrap()
    };
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let created = jobs
        .create(
            &PostParams::default(),
            &job("version", json!(["--version"])),
        )
        .await
        .expect("create Job");
    jobs.create(
        &PostParams::default(),
        &job("bad-flag", json!(["--no-such-flag"])),
    )
    .await
    .expect("create Job");
    let done = tokio::time::timeout(
        WAIT,
        await_condition(jobs.clone(), "version", conditions::is_job_completed()),
    )
    .await
    .expect("job completes in time")
    .expect("watch")
    .expect("job exists");
    assert_eq!(done.status.as_ref().and_then(|s| s.succeeded), Some(1));

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let listed = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=version"))
        .await
        .expect("pods");
    assert_eq!(listed.items.len(), 1);
    let pod = &listed.items[0];
    assert_eq!(
        controller_of(&pod.metadata),
        (
            "Job".into(),
            "version".into(),
            created.metadata.uid.clone().unwrap()
        )
    );
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let exit = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap()
        .exit_code;
    assert_eq!(exit, 0);
    let pod_name = pod.metadata.name.clone().unwrap();
    let log = std::fs::read_to_string(
        sim.state
            .join("logs/default")
            .join(&pod_name)
            .join("lifeboat.log"),
    )
    .expect("log file");
    assert!(
        log.contains("lifeboat 0.1.0"),
        "log holds the version: {log:?}"
    );
    let served = pods
        .logs(&pod_name, &LogParams::default())
        .await
        .expect("pods/log");
    assert!(
        served.contains("lifeboat 0.1.0"),
        "served log holds the version: {served:?}"
    );

    // A non-zero exit fails the pod with its exit code, and the Job with backoffLimit 0.
    let failed = wait_for(&jobs, "bad-flag", "Failed", |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
    })
    .await;
    assert_eq!(failed.status.and_then(|s| s.failed), Some(1));
    let bad = pods
        .list(&ListParams::default().labels("job-name=bad-flag"))
        .await
        .expect("pods");
    let status = bad.items[0].status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let exit = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap()
        .exit_code;
    assert_ne!(exit, 0, "the exit code of lifeboat is reported");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_class_pinned_to_a_foreign_zone_leaves_its_claim_pending_with_an_event() {
    let sim = start().await;
    let client = sim.client.clone();
    create_storage_class(
        &client,
        "primary-zone",
        json!({"allowedTopologies": [{"matchLabelExpressions": [
            {"key": "topology.kubernetes.io/zone", "values": ["centralus-1"]}]}]}),
    )
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let pvc = claims
        .create(
            &PostParams::default(),
            &claim("stranded", "primary-zone", json!({})),
        )
        .await
        .expect("create claim");

    let events: Api<Event> = Api::default_namespaced(client.clone());
    let uid = pvc.metadata.uid.clone();
    let stream = watcher(events, watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);
    let event = tokio::time::timeout(WAIT, async {
        while let Some(ev) = stream.try_next().await.expect("watch events") {
            if ev.reason.as_deref() == Some("ProvisioningFailed") && ev.involved_object.uid == uid {
                return ev;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("a ProvisioningFailed event in time");
    assert_eq!(
        event.involved_object.kind.as_deref(),
        Some("PersistentVolumeClaim")
    );
    assert_eq!(event.involved_object.name.as_deref(), Some("stranded"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let msg = event.message.unwrap_or_default();
    assert!(
        msg.contains("centralus-1") && msg.contains("eastus2-1"),
        "{msg}"
    );
    // The provisioner has decided: the claim is still unbound, and no PV was made for it.
    let now = claims.get("stranded").await.unwrap();
    assert!(!is_bound(&now));
    assert!(now.spec.and_then(|s| s.volume_name).is_none());
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(pvs.items.is_empty(), "no volume was provisioned");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_gets_a_replicaset_and_pods_with_owner_references() {
    let sim = start().await;
    let client = sim.client.clone();
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}},
        },
    }))
    .unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let deploy = deploys
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create Deployment");
    tokio::time::timeout(
        WAIT,
        await_condition(
            deploys.clone(),
            "web",
            conditions::is_deployment_completed(),
        ),
    )
    .await
    .expect("deployment completes in time")
    .expect("watch");
    let deploy_now = deploys.get("web").await.unwrap();
    assert_eq!(
        deploy_now
            .status
            .as_ref()
            .and_then(|s| s.available_replicas),
        Some(2)
    );

    let sets = Api::<ReplicaSet>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(sets.items.len(), 1);
    let rs = &sets.items[0];
    let hash = rs
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .expect("pod-template-hash")
        .clone();
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(
        controller_of(&rs.metadata),
        (
            "Deployment".into(),
            "web".into(),
            deploy.metadata.uid.clone().unwrap()
        )
    );

    let pods = Api::<Pod>::default_namespaced(client.clone())
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);
    for pod in &pods.items {
        assert_eq!(
            controller_of(&pod.metadata),
            (
                "ReplicaSet".into(),
                format!("web-{hash}"),
                rs.metadata.uid.clone().unwrap()
            )
        );
        assert!(
            pod.metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with(&format!("web-{hash}-"))
        );
        assert!(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some(),
            "scheduled"
        );
        let status = pod.status.clone().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(
            status
                .conditions
                .unwrap()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifeboat_pod_gets_its_args_env_secrets_and_volume_mounts() {
    // `/bin/sh` stands in for the lifeboat binary, so the container's args make it print what the
    // kubelet gave it.
    let sim = start_with_bin(PathBuf::from("/bin/sh")).await;
    let client = sim.client.clone();
    create_storage_class(&client, "sim", json!({})).await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    claims
        .create(&PostParams::default(), &claim("data", "sim", json!({})))
        .await
        .expect("create claim");
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"}, "stringData": {"key": "hunter2"},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::default_namespaced(client.clone())
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "mover"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "creds", "secret": {"secretName": "creds"}},
            ],
            "initContainers": [{"name": "prepare", "image": "lifeboat:dev", "args": ["-c", "echo prepared"]}],
            "containers": [{
                "name": "mover",
                "image": "lifeboat:dev",
                "args": ["-c", "echo \"ARGS=$0\"; env", "--target=$(TARGET)"],
                "env": [
                    {"name": "TARGET", "value": "/data"},
                    {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data", "readOnly": true},
                    {"name": "creds", "mountPath": "/etc/creds"},
                ],
            }],
        },
    }))
    .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create Pod");
    let done = wait_for(&pods, "mover", "finished", |p: &Pod| {
        matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    })
    .await;
    let log =
        std::fs::read_to_string(sim.state.join("logs/default/mover/mover.log")).expect("log file");
    let status = done.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"), "{log}");
    let init = &status
        .init_container_statuses
        .expect("init container statuses")[0];
    assert_eq!(
        init.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
        Some(0)
    );
    let init_log = std::fs::read_to_string(sim.state.join("logs/default/mover/prepare.log"))
        .expect("init log");
    assert_eq!(
        init_log, "prepared\n",
        "the init container ran first, with its own log"
    );

    let env: std::collections::HashMap<&str, &str> =
        log.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(
        env.get("ARGS"),
        Some(&"--target=/data"),
        "$(VAR) expands in args: {log}"
    );
    assert_eq!(
        env.get("KEY"),
        Some(&"hunter2"),
        "secretKeyRef resolves: {log}"
    );
    assert_eq!(env.get("POD"), Some(&"mover"), "fieldRef resolves: {log}");
    assert_eq!(env.get("HOSTNAME"), Some(&"mover"));
    assert!(env.contains_key("PATH"));
    let mounts: lifeboat::sim::controllers::kubelet::SimMounts =
        serde_json::from_str(env.get("LIFEBOAT_SIM_MOUNTS").expect("mounts env"))
            .expect("mounts JSON");
    let bound = claims.get("data").await.unwrap();
    assert_eq!(
        mounts["/data"].path,
        volume_dir(&client, &bound).await,
        "a PVC mount maps to its volume directory"
    );
    assert!(mounts["/data"].read_only);
    assert!(!mounts["/etc/creds"].read_only);
    assert_eq!(
        std::fs::read_to_string(mounts["/etc/creds"].path.join("key")).unwrap(),
        "hunter2",
        "a secret volume is materialised"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_waits_for_each_pod_and_unschedulable_pods_say_why() {
    let sim = start().await;
    let client = sim.client.clone();
    // Its claims can never bind here, so pod 0 can never be scheduled, let alone be Ready.
    create_storage_class(
        &client,
        "foreign",
        json!({"allowedTopologies": [{"matchLabelExpressions": [
            {"key": "topology.kubernetes.io/zone", "values": ["centralus-1"]}]}]}),
    )
    .await;
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "q"},
        "spec": {
            "replicas": 3,
            "serviceName": "q",
            "selector": {"matchLabels": {"app": "q"}},
            "template": {"metadata": {"labels": {"app": "q"}},
                         "spec": {"containers": [{"name": "q", "image": "rabbitmq:4"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "foreign",
                         "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    }))
    .unwrap();
    Api::<StatefulSet>::default_namespaced(client.clone())
        .create(&PostParams::default(), &sts)
        .await
        .expect("create StatefulSet");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let stuck = wait_for(&pods, "q-0", "Unschedulable", |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    })
    .await;
    assert!(stuck.spec.unwrap().node_name.is_none());
    // The controller has seen pod 0 (it made it); with pod 0 not Ready it made no other.
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    wait_for(&sets, "q", "status counts pod 0", |s| {
        s.status.as_ref().is_some_and(|s| s.replicas == 1)
    })
    .await;
    let all = pods
        .list(&ListParams::default().labels("app=q"))
        .await
        .unwrap();
    let names: Vec<_> = all
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["q-0"]);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_in_use_stays_until_its_pod_goes() {
    let sim = start().await;
    let client = sim.client.clone();
    create_storage_class(&client, "sim", json!({})).await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    claims
        .create(&PostParams::default(), &claim("busy", "sim", json!({})))
        .await
        .expect("create claim");
    let bound = wait_for(&claims, "busy", "Bound", is_bound).await;
    assert!(
        bound
            .metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == "kubernetes.io/pvc-protection"),
        "claims carry the pvc-protection finalizer"
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "user"},
        "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "busy"}}],
                 "containers": [{"name": "app", "image": "redis:7", "volumeMounts": [{"name": "d", "mountPath": "/data"}]}]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create Pod");
    wait_for(&pods, "user", "Running", |p: &Pod| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;

    claims
        .delete("busy", &DeleteParams::default())
        .await
        .expect("delete claim");
    // A claim created after the delete is bound by a pass that also saw the deleted one.
    claims
        .create(&PostParams::default(), &claim("barrier", "sim", json!({})))
        .await
        .expect("create claim");
    wait_for(&claims, "barrier", "Bound", is_bound).await;
    let terminating = claims
        .get("busy")
        .await
        .expect("the claim in use is still there");
    assert!(
        terminating.metadata.deletion_timestamp.is_some(),
        "Terminating"
    );

    let uid = terminating.metadata.uid.clone().unwrap();
    pods.delete("user", &DeleteParams::default())
        .await
        .expect("delete Pod");
    tokio::time::timeout(
        WAIT,
        await_condition(claims.clone(), "busy", conditions::is_deleted(&uid)),
    )
    .await
    .expect("claim goes once unused")
    .expect("watch");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_with_a_ttl_is_deleted() {
    let sim = start().await;
    let client = sim.client.clone();
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "short-lived"},
        "spec": {
            "ttlSecondsAfterFinished": 0,
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "lifeboat", "image": "lifeboat:dev", "args": ["--version"]}]}},
        },
    }))
    .unwrap();
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let job = jobs
        .create(&PostParams::default(), &job)
        .await
        .expect("create Job");
    let uid = job.metadata.uid.clone().unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(jobs.clone(), "short-lived", conditions::is_deleted(&uid)),
    )
    .await
    .expect("job deleted in time")
    .expect("watch");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_naming_an_existing_volume_binds_to_it() {
    let sim = start().await;
    let client = sim.client.clone();
    // A statically provisioned volume, as an operator (or a restore) creates it.
    let dir = sim.state.join("volumes").join("static-1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kept"), b"data").unwrap();
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "static-1"},
        "spec": {
            "capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "csi": {"driver": "disk.csi.sim", "volumeHandle": dir.to_string_lossy()},
        },
    }))
    .unwrap();
    let pvs = Api::<PersistentVolume>::all(client.clone());
    pvs.create(&PostParams::default(), &pv)
        .await
        .expect("create PV");
    wait_for(&pvs, "static-1", "Available", |p: &PersistentVolume| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available")
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    claims
        .create(
            &PostParams::default(),
            &claim("static", "", json!({"volumeName": "static-1"})),
        )
        .await
        .expect("create claim");
    let bound = wait_for(&claims, "static", "Bound", is_bound).await;
    assert_eq!(volume_dir(&client, &bound).await, dir);
    let pv = pvs.get("static-1").await.unwrap();
    assert_eq!(
        pv.spec.unwrap().claim_ref.and_then(|r| r.uid),
        bound.metadata.uid
    );

    // Retain: deleting the claim releases the volume and keeps its data.
    claims
        .delete("static", &DeleteParams::default())
        .await
        .expect("delete claim");
    wait_for(&pvs, "static-1", "Released", |p: &PersistentVolume| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")
    })
    .await;
    assert_eq!(std::fs::read(dir.join("kept")).unwrap(), b"data");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_runs_one_owned_pod_per_node() {
    let sim = start().await;
    let client = sim.client.clone();
    let ds: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                         "spec": {"containers": [{"name": "agent", "image": "fluent-bit:3"}]}},
        },
    }))
    .unwrap();
    let sets: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::default_namespaced(client.clone());
    let ds = sets
        .create(&PostParams::default(), &ds)
        .await
        .expect("create DaemonSet");
    wait_for(&sets, "agent", "3 ready", |d| {
        d.status.as_ref().is_some_and(|s| s.number_ready == 3)
    })
    .await;
    let pods = Api::<Pod>::default_namespaced(client.clone())
        .list(&ListParams::default().labels("app=agent"))
        .await
        .unwrap();
    let mut nodes: Vec<String> = pods
        .items
        .iter()
        .map(|p| {
            assert_eq!(
                controller_of(&p.metadata),
                (
                    "DaemonSet".into(),
                    "agent".into(),
                    ds.metadata.uid.clone().unwrap()
                )
            );
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .expect("scheduled")
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["aks-eastus2-1", "aks-eastus2-2", "aks-eastus2-3"]);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_provisioned_snapshot_binds_to_its_content_and_restores() {
    let sim = start().await;
    let client = sim.client.clone();
    create_storage_class(&client, "sim", json!({})).await;
    // A copy that exists outside any snapshot object, imported through a content.
    let handle = sim.state.join("snapshots").join("imported");
    std::fs::create_dir_all(&handle).unwrap();
    std::fs::write(handle.join("dump.sql"), b"CREATE TABLE t ();").unwrap();
    let content: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "imported"},
        "spec": {
            "deletionPolicy": "Retain",
            "driver": "disk.csi.sim",
            "source": {"snapshotHandle": handle.to_string_lossy()},
            "volumeSnapshotRef": {"namespace": "default", "name": "imported"},
        },
    }))
    .unwrap();
    snapshot_api(&client, "VolumeSnapshotContent", None)
        .create(&PostParams::default(), &content)
        .await
        .expect("create content");
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "imported"},
        "spec": {"source": {"volumeSnapshotContentName": "imported"}},
    }))
    .unwrap();
    let snapshots = snapshot_api(&client, "VolumeSnapshot", Some("default"));
    snapshots
        .create(&PostParams::default(), &vs)
        .await
        .expect("create VolumeSnapshot");
    let ready = wait_for(&snapshots, "imported", "readyToUse", |s: &DynamicObject| {
        s.data["status"]["readyToUse"] == true
    })
    .await;
    assert_eq!(
        ready.data["status"]["boundVolumeSnapshotContentName"],
        "imported"
    );

    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let restore = claim(
        "from-import",
        "sim",
        json!({"dataSource": {"kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "imported"}}),
    );
    claims
        .create(&PostParams::default(), &restore)
        .await
        .expect("create claim");
    let bound = wait_for(&claims, "from-import", "Bound", is_bound).await;
    let dir = volume_dir(&client, &bound).await;
    assert_eq!(
        std::fs::read(dir.join("dump.sql")).unwrap(),
        b"CREATE TABLE t ();"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_count_against_the_job_backoff_limit() {
    let sim = start().await;
    let client = sim.client.clone();
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "flaky"},
        "spec": {
            "backoffLimit": 1,
            "template": {"spec": {"restartPolicy": "OnFailure",
                "containers": [{"name": "lifeboat", "image": "lifeboat:dev", "args": ["--no-such-flag"]}]}},
        },
    }))
    .unwrap();
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create Job");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    // The pod's name is generated: watch for the Job's first pod.
    let stream = watcher(
        pods.clone(),
        watcher::Config::default().labels("job-name=flaky"),
    )
    .applied_objects();
    let mut stream = std::pin::pin!(stream);
    let first = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .expect("the Job makes a pod in time")
        .expect("watch")
        .expect("a pod");
    let pod_name = first.metadata.name.clone().unwrap();
    let restarted = wait_for(&pods, &pod_name, "a restart", |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs[0].restart_count >= 1)
    })
    .await;
    let last = restarted.status.unwrap().container_statuses.unwrap()[0]
        .last_state
        .clone();
    assert_ne!(
        last.and_then(|s| s.terminated).map(|t| t.exit_code),
        Some(0),
        "the restarted container had failed"
    );
    let failed = wait_for(&jobs, "flaky", "Failed", |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "Failed"
                        && c.status == "True"
                        && c.reason.as_deref() == Some("BackoffLimitExceeded")
                })
            })
    })
    .await;
    assert!(failed.status.is_some());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_pod_that_was_running_lifeboat_is_failed_and_volumes_persist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || SimConfig {
        name: "primary".into(),
        zones: vec!["eastus2-1".into()],
        nodes: vec!["aks-eastus2-1".into()],
        state_dir: dir.path().join("state"),
        persist: true,
        lifeboat_image: "lifeboat:dev".into(),
        // `/bin/sh` stands in for lifeboat so the container can outlive the first simulator.
        lifeboat_bin: PathBuf::from("/bin/sh"),
        ..SimConfig::default()
    };
    let cluster = SimCluster::start(config()).await.expect("start");
    let client = cluster.client().expect("client");
    create_storage_class(&client, "sim", json!({})).await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    claims
        .create(&PostParams::default(), &claim("kept", "sim", json!({})))
        .await
        .expect("create claim");
    let bound = wait_for(&claims, "kept", "Bound", is_bound).await;
    std::fs::write(volume_dir(&client, &bound).await.join("f"), b"persisted").unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "long"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "lifeboat:dev", "args": ["-c", "sleep 300"]}]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create Pod");
    wait_for(&pods, "long", "Running", |p: &Pod| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    cluster.shutdown().await.expect("shutdown");

    let cluster = SimCluster::start(config()).await.expect("restart");
    let client = cluster.client().expect("client");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let failed = wait_for(&pods, "long", "Failed", |p: &Pod| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;
    assert_eq!(
        failed.status.unwrap().reason.as_deref(),
        Some("NodeRestarted")
    );
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let kept = claims.get("kept").await.expect("the claim survives");
    assert!(is_bound(&kept));
    assert_eq!(
        std::fs::read(volume_dir(&client, &kept).await.join("f")).unwrap(),
        b"persisted"
    );
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_is_not_lifeboat_fails_like_a_missing_executable() {
    let sim = start().await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "shell"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "lifeboat:dev", "command": ["/bin/sh", "-c"], "args": ["true"]}]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(sim.client.clone());
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create Pod");
    let done = wait_for(&pods, "shell", "Failed", |p: &Pod| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;
    let term = done.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 127);
    let log = std::fs::read_to_string(sim.state.join("logs/default/shell/c.log")).expect("log");
    assert!(log.contains("executable file not found"), "{log}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_starts_its_missed_run_as_an_owned_job_and_prunes_history() {
    let sim = start().await;
    let client = sim.client.clone();
    let cj: k8s_openapi::api::batch::v1::CronJob = serde_json::from_value(json!({
        "metadata": {"name": "nightly"},
        "spec": {
            "schedule": "*/5 * * * *",
            "successfulJobsHistoryLimit": 0,
            "jobTemplate": {
                "metadata": {"labels": {"cron": "nightly"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "lifeboat", "image": "lifeboat:dev", "args": ["--version"]}]}}},
            },
        },
    }))
    .unwrap();
    let cronjobs: Api<k8s_openapi::api::batch::v1::CronJob> =
        Api::default_namespaced(client.clone());
    let cj = cronjobs
        .create(&PostParams::default(), &cj)
        .await
        .expect("create CronJob");
    // As if the last run was an hour ago: the most recent 5-minute mark since then is due now.
    let hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    cronjobs
        .patch_status(
            "nightly",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"lastScheduleTime": hour_ago.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}})),
        )
        .await
        .expect("patch status");

    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let stream = watcher(
        jobs.clone(),
        watcher::Config::default().labels("cron=nightly"),
    )
    .applied_objects();
    let mut stream = std::pin::pin!(stream);
    let job = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .expect("the CronJob starts a Job in time")
        .expect("watch")
        .expect("a job");
    assert_eq!(
        controller_of(&job.metadata),
        (
            "CronJob".into(),
            "nightly".into(),
            cj.metadata.uid.clone().unwrap()
        )
    );
    let scheduled = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("batch.kubernetes.io/cronjob-scheduled-timestamp"))
        .expect("scheduled timestamp");
    let at: jiff::Timestamp = scheduled.parse().unwrap();
    assert_eq!(at.as_second() % 300, 0, "on a 5-minute mark");
    assert!(at > hour_ago && at <= jiff::Timestamp::now());
    assert_eq!(
        job.metadata.name.clone().unwrap(),
        format!("nightly-{}", at.as_second() / 60)
    );
    wait_for(&cronjobs, "nightly", "lastScheduleTime of that run", |c| {
        c.status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .map(|t| t.0.as_second())
            == Some(at.as_second())
    })
    .await;

    // It completes, and successfulJobsHistoryLimit 0 prunes it.
    let uid = job.metadata.uid.clone().unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(
            jobs,
            job.metadata.name.as_deref().unwrap(),
            conditions::is_deleted(&uid),
        ),
    )
    .await
    .expect("the finished job is pruned in time")
    .expect("watch");
    sim.stop().await;
}
