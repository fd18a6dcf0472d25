//! The sample application the demo deploys into the primary region, and the Kubernetes calls
//! the demo makes itself (deploying, waiting, reading objects back).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::DemoError;

/// The application's namespace.
pub const NAMESPACE: &str = "shop";
/// The StatefulSet whose volume holds the generated data.
pub const STATEFULSET: &str = "db";
/// The claim the StatefulSet's template makes for its only replica.
pub const CLAIM: &str = "data-db-0";
/// The Deployment.
pub const DEPLOYMENT: &str = "web";
/// Replicas of the Deployment.
pub const WEB_REPLICAS: usize = 2;
/// The ConfigMap whose value changes between the two backups.
pub const CONFIGMAP: &str = "shop-settings";
/// The Secret.
pub const SECRET: &str = "db-credentials";
/// The Secret the backup's movers read the location's account key from (Azurite runs).
pub const CREDENTIALS_SECRET: &str = "lifeboat-credentials";
/// The VolumeSnapshotClass backups snapshot claims with.
pub const SNAPSHOT_CLASS: &str = "csi-sim-snapclass";

/// The zone-pinned StorageClass of a region, e.g. `premium-eastus2`.
pub fn storage_class(region: &str) -> String {
    format!("premium-{region}")
}

/// The application's objects, in creation order. `password` is the Secret's value (fresh per
/// run, so the check that it arrives intact compares something real).
pub fn manifests(region: &str, zone: &str, password: &str) -> Vec<(String, Value)> {
    let ns = NAMESPACE;
    let sc = storage_class(region);
    let labels = |c: &str| json!({"app": "shop", "component": c});
    vec![
        (
            "/api/v1/namespaces".into(),
            json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"team": "shop"}}}),
        ),
        // Pinned to one zone: a disk lives in one zone, so a class naming the primary's zones is
        // useless in the secondary region; the restore profile maps it.
        (
            "/apis/storage.k8s.io/v1/storageclasses".into(),
            json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": sc},
            "provisioner": "disk.csi.sim", "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete", "allowVolumeExpansion": true,
            "parameters": {"skuName": "Premium_LRS"},
            "allowedTopologies": [{"matchLabelExpressions": [
                {"key": "topology.kubernetes.io/zone", "values": [zone]}]}]}),
        ),
        (
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses".into(),
            json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": SNAPSHOT_CLASS,
                "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": "disk.csi.sim", "deletionPolicy": "Delete"}),
        ),
        (
            format!("/api/v1/namespaces/{ns}/secrets"),
            json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": SECRET, "labels": labels("db")},
            "stringData": {"username": "shop", "password": password}}),
        ),
        (
            format!("/api/v1/namespaces/{ns}/configmaps"),
            json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "labels": labels("web")},
            "data": {"currency": "EUR", "release": "1", "checkout.enabled": "true"}}),
        ),
        (
            format!("/api/v1/namespaces/{ns}/services"),
            json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": STATEFULSET, "labels": labels("db")},
            "spec": {"clusterIP": "None", "selector": labels("db"),
                "ports": [{"name": "postgres", "port": 5432}]}}),
        ),
        (
            format!("/api/v1/namespaces/{ns}/services"),
            json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": DEPLOYMENT, "labels": labels("web")},
            "spec": {"selector": labels("web"),
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        ),
        (
            format!("/apis/apps/v1/namespaces/{ns}/statefulsets"),
            json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": STATEFULSET, "labels": labels("db")},
            "spec": {"serviceName": STATEFULSET, "replicas": 1,
                "selector": {"matchLabels": labels("db")},
                "template": {"metadata": {"labels": labels("db")},
                    "spec": {"containers": [{"name": "postgres", "image": "postgres:17",
                        "envFrom": [{"secretRef": {"name": SECRET}}],
                        "ports": [{"containerPort": 5432}],
                        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": sc,
                        "resources": {"requests": {"storage": "1Gi"}}}}]}}),
        ),
        (
            format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": DEPLOYMENT, "labels": labels("web")},
            "spec": {"replicas": WEB_REPLICAS, "selector": {"matchLabels": labels("web")},
                "template": {"metadata": {"labels": labels("web")},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                        "envFrom": [{"configMapRef": {"name": CONFIGMAP}}],
                        "ports": [{"containerPort": 8080}]}]}}}}),
        ),
    ]
}

/// Creates the application in a cluster.
pub async fn deploy(
    client: &kube::Client,
    region: &str,
    zone: &str,
    password: &str,
) -> Result<(), DemoError> {
    for (path, body) in manifests(region, zone, password) {
        let what = format!(
            "creating {} {}",
            body["kind"].as_str().unwrap_or("object"),
            body["metadata"]["name"].as_str().unwrap_or("")
        );
        send(
            client,
            http::Method::POST,
            &path,
            Some(("application/json", body)),
            &what,
        )
        .await?;
    }
    Ok(())
}

/// Creates the movers' credentials Secret (`env` = `value`) in the app's namespace, labelled as
/// lifeboat's own: never backed up or restored.
pub async fn credentials_secret(
    client: &kube::Client,
    env: &str,
    value: &str,
) -> Result<(), DemoError> {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS_SECRET, "labels": {"lifeboat.io/credentials": "true"}},
        "stringData": {env: value},
    });
    send(
        client,
        http::Method::POST,
        &format!("/api/v1/namespaces/{NAMESPACE}/secrets"),
        Some(("application/json", body)),
        "creating the movers' credentials Secret",
    )
    .await
    .map(|_| ())
}

/// Sends one request; `body` is `(content type, JSON)`.
pub async fn send(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    body: Option<(&str, Value)>,
    what: &str,
) -> Result<Value, DemoError> {
    let mut req = http::Request::builder().method(method).uri(path);
    let bytes = match body {
        Some((ct, v)) => {
            req = req.header("content-type", ct);
            serde_json::to_vec(&v).unwrap_or_default()
        }
        None => Vec::new(),
    };
    let req = req.body(bytes).map_err(|e| DemoError::Kube {
        what: what.to_owned(),
        source: kube::Error::HttpError(e),
    })?;
    client
        .request::<Value>(req)
        .await
        .map_err(|source| DemoError::Kube {
            what: what.to_owned(),
            source,
        })
}

/// GET `path`; `None` if it does not exist.
pub async fn get(client: &kube::Client, path: &str) -> Result<Option<Value>, DemoError> {
    match send(
        client,
        http::Method::GET,
        path,
        None,
        &format!("reading {path}"),
    )
    .await
    {
        Ok(v) => Ok(Some(v)),
        Err(DemoError::Kube {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Polls `probe` until it returns `Some`, at most `limit`: the simulator's controllers work
/// asynchronously, so every "wait until" is a bounded poll of the API.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> Result<T, DemoError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, DemoError>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(DemoError::Timeout {
                what: what.to_owned(),
                seconds: limit.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The application's pods, by name, with their phase and node.
pub async fn pods(client: &kube::Client) -> Result<Vec<(String, String, String)>, DemoError> {
    // The app's own pods only: backup and restore run mover pods in the same namespace.
    let list = get(
        client,
        &format!("/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3Dshop"),
    )
    .await?
    .unwrap_or_default();
    Ok(list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .map(|p| {
                    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                    (
                        s(&p["metadata"]["name"]),
                        s(&p["status"]["phase"]),
                        s(&p["spec"]["nodeName"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Returns the pods once the StatefulSet's and the Deployment's are all Running.
pub async fn wait_running(
    client: &kube::Client,
    limit: Duration,
) -> Result<Vec<(String, String, String)>, DemoError> {
    poll("the application's pods to be Running", limit, || async {
        let pods = pods(client).await?;
        let running = pods.iter().filter(|p| p.1 == "Running").count();
        Ok((running == pods.len() && pods.len() == WEB_REPLICAS + 1).then_some(pods))
    })
    .await
}

/// A bound claim's PersistentVolume: its name, its zone and the directory holding its data
/// (the simulated CSI driver's volume handle is that directory).
#[derive(Debug, Clone)]
pub struct BoundVolume {
    /// The PersistentVolume.
    pub pv: String,
    /// The claim's StorageClass.
    pub storage_class: String,
    /// The zone of the PV's node affinity.
    pub zone: String,
    /// The directory.
    pub dir: PathBuf,
}

/// Waits until the claim is Bound and returns its volume.
pub async fn wait_bound(client: &kube::Client, limit: Duration) -> Result<BoundVolume, DemoError> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{CLAIM}");
    let pvc = poll(
        &format!("claim {NAMESPACE}/{CLAIM} to be Bound"),
        limit,
        || async {
            Ok(get(client, &path)
                .await?
                .filter(|p| p["status"]["phase"] == "Bound"))
        },
    )
    .await?;
    let pv_name = pvc["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let pv = get(client, &format!("/api/v1/persistentvolumes/{pv_name}"))
        .await?
        .ok_or_else(|| {
            DemoError::Unexpected(format!(
                "PersistentVolume {pv_name} of {CLAIM} does not exist"
            ))
        })?;
    let handle = pv["spec"]["csi"]["volumeHandle"]
        .as_str()
        .unwrap_or_default();
    if handle.is_empty() {
        return Err(DemoError::Unexpected(format!(
            "PersistentVolume {pv_name} has no CSI volume handle"
        )));
    }
    let zone = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"]
        [0]["values"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(BoundVolume {
        pv: pv_name,
        storage_class: pvc["spec"]["storageClassName"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        zone,
        dir: PathBuf::from(handle),
    })
}
