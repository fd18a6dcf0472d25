//! Single objects by API path, as JSON: create, get, delete, list by label. What the volume
//! orchestration needs for built-in and CSI snapshot kinds alike, with the retries of [`send`].

use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use super::{ClusterError, collection_path, send};

/// Where objects of one kind live: `("snapshot.storage.k8s.io", "v1", "volumesnapshots")`.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// API group ("" for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural resource.
    pub plural: &'static str,
}

/// PersistentVolumeClaims.
pub const PVCS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "persistentvolumeclaims",
};
/// PersistentVolumes.
pub const PVS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "persistentvolumes",
};
/// Pods.
pub const PODS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "pods",
};
/// Jobs.
pub const JOBS: Kind = Kind {
    group: "batch",
    version: "v1",
    plural: "jobs",
};
/// CSI VolumeSnapshots.
pub const VOLUME_SNAPSHOTS: Kind = Kind {
    group: "snapshot.storage.k8s.io",
    version: "v1",
    plural: "volumesnapshots",
};
/// CSI VolumeSnapshotClasses.
pub const VOLUME_SNAPSHOT_CLASSES: Kind = Kind {
    group: "snapshot.storage.k8s.io",
    version: "v1",
    plural: "volumesnapshotclasses",
};
/// Secrets.
pub const SECRETS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "secrets",
};
/// ServiceAccounts.
pub const SERVICE_ACCOUNTS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "serviceaccounts",
};
/// StorageClasses.
pub const STORAGE_CLASSES: Kind = Kind {
    group: "storage.k8s.io",
    version: "v1",
    plural: "storageclasses",
};

fn path(kind: Kind, ns: &str) -> String {
    collection_path(kind.group, kind.version, kind.plural, ns)
}

/// Creates `object` in `ns` ("" for cluster-scoped); returns what the server stored.
pub async fn create(
    client: &kube::Client,
    kind: Kind,
    ns: &str,
    object: &Value,
) -> Result<Value, ClusterError> {
    let uri = path(kind, ns);
    let body = serde_json::to_vec(object).expect("objects serialize");
    let bytes = send(
        client,
        "create",
        Method::POST,
        &uri,
        Some(("application/json", body)),
    )
    .await?;
    serde_json::from_slice(&bytes).map_err(|source| ClusterError::Decode {
        op: "create",
        path: uri,
        source,
    })
}

/// Reads one object; `None` if it does not exist.
pub async fn get(
    client: &kube::Client,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Option<Value>, ClusterError> {
    let uri = format!("{}/{name}", path(kind, ns));
    match send(client, "get", Method::GET, &uri, None).await {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ClusterError::Decode {
                    op: "get",
                    path: uri,
                    source,
                })
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The annotation the PV controller sets on volumes a provisioner created.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Returns true if and only if PersistentVolume `pv` points at data that outlives the cluster
/// and is restored by reference: pre-provisioned (no provisioner created it: a static NFS or
/// Azure Files share, a `Retain` disk bound by name) or of a shared-storage CSI driver.
pub fn restored_by_reference(pv: &Value, shared_drivers: &[String]) -> bool {
    let shared = pv["spec"]["csi"]["driver"]
        .as_str()
        .is_some_and(|d| shared_drivers.iter().any(|s| s == d));
    let dynamic = pv["metadata"]["annotations"][PROVISIONED_BY].is_string();
    shared || !dynamic
}

/// Deletes one object (dependents in the background); a missing object is not an error.
/// Returns whether it existed.
pub async fn delete(
    client: &kube::Client,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<bool, ClusterError> {
    let uri = format!("{}/{name}?propagationPolicy=Background", path(kind, ns));
    match send(client, "delete", Method::DELETE, &uri, None).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every object of `kind` (in `ns`, or all namespaces when `ns` is empty) matching `selector`.
pub async fn list(
    client: &kube::Client,
    kind: Kind,
    ns: &str,
    selector: Option<&str>,
) -> Result<Vec<Value>, ClusterError> {
    let mut uri = path(kind, ns);
    if let Some(s) = selector {
        uri = format!("{uri}?labelSelector={}", url_encode(s));
    }
    let bytes = send(client, "list", Method::GET, &uri, None).await?;
    let list: Value = serde_json::from_slice(&bytes).map_err(|source| ClusterError::Decode {
        op: "list",
        path: uri,
        source,
    })?;
    Ok(match list {
        Value::Object(mut m) => match m.remove("items") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    })
}

/// A pod's log (all containers' output for single-container pods).
pub async fn pod_log(client: &kube::Client, ns: &str, pod: &str) -> Result<String, ClusterError> {
    let uri = format!("{}/{pod}/log", path(PODS, ns));
    let bytes = send(client, "read log of", Method::GET, &uri, None).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The pace of every wait on the cluster: polls 100 ms apart at first, doubling to 2 s (quick
/// for fast clusters, gentle on slow work), never sleeping past the deadline.
#[derive(Debug)]
pub struct Poll {
    deadline: Instant,
    interval: Duration,
}

impl Poll {
    /// A wait of at most `timeout` from now.
    pub fn new(timeout: Duration) -> Self {
        Self {
            deadline: Instant::now() + timeout,
            interval: Duration::from_millis(100),
        }
    }

    /// Returns true if and only if the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Sleeps until the next poll.
    pub async fn next(&mut self) {
        tokio::time::sleep(
            self.interval
                .min(self.deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        self.interval = (self.interval * 2).min(Duration::from_secs(2));
    }
}

/// Polls `ready` on the object until it returns `Some`, the object disappears, or `timeout`
/// (at the pace of [`Poll`]).
pub async fn wait_for<T>(
    client: &kube::Client,
    kind: Kind,
    ns: &str,
    name: &str,
    timeout: Duration,
    mut ready: impl FnMut(&Value) -> Option<T>,
) -> Result<Result<T, WaitFailed>, ClusterError> {
    let mut poll = Poll::new(timeout);
    loop {
        match get(client, kind, ns, name).await? {
            None => return Ok(Err(WaitFailed::Gone)),
            Some(obj) => {
                if let Some(t) = ready(&obj) {
                    return Ok(Ok(t));
                }
            }
        }
        if poll.expired() {
            return Ok(Err(WaitFailed::Timeout(timeout)));
        }
        poll.next().await;
    }
}

/// Why [`wait_for`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitFailed {
    /// The object was deleted meanwhile.
    #[error("it was deleted while waiting")]
    Gone,
    /// The condition did not hold in time.
    #[error("it did not become ready within {}s", .0.as_secs())]
    Timeout(Duration),
}

/// Merges `annotations` into an object's metadata (JSON merge patch); a missing object is not
/// an error. Returns whether it existed.
pub async fn annotate(
    client: &kube::Client,
    kind: Kind,
    ns: &str,
    name: &str,
    annotations: &serde_json::Map<String, Value>,
) -> Result<bool, ClusterError> {
    let uri = format!("{}/{name}", path(kind, ns));
    let body = serde_json::to_vec(&serde_json::json!({"metadata": {"annotations": annotations}}))
        .expect("annotations serialize");
    match send(
        client,
        "annotate",
        Method::PATCH,
        &uri,
        Some(("application/merge-patch+json", body)),
    )
    .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until the object is gone (finalizers done), up to `timeout`; returns whether it is.
pub async fn wait_gone(
    client: &kube::Client,
    kind: Kind,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<bool, ClusterError> {
    Ok(wait_for(client, kind, ns, name, timeout, |_| None::<()>)
        .await?
        .is_err_and(|w| w == WaitFailed::Gone))
}
