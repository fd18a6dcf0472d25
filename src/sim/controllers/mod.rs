//! The simulated cluster's controllers: the `disk.csi.sim` CSI driver with its PV and snapshot
//! controllers, the workload controllers (StatefulSet, Deployment → ReplicaSet → Pod, Job → Pod,
//! CronJob → Job, DaemonSet → Pod),
//! a scheduler and a kubelet that really runs pods whose image is lifeboat's own.
//!
//! Every controller is a tokio task that subscribes to the store's events and, when an object of a
//! kind it cares about changes (or every [`RESYNC`]), makes one level-triggered pass over the
//! current state, like a real controller's informer resync. They read and write only through the
//! [`Store`], so clients watching over HTTP see every change they make, and they stop when the
//! instance shuts down. (The API server creates the Node objects and runs the garbage collector
//! that deletes the dependents of deleted owners.)

mod cronjobs;
mod csi;
pub mod kubelet;
mod scheduler;
mod snapshots;
mod volumes;
mod workloads;

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::store::{ApiError, SimConfig, SimContext, Store, StoreEvent};

pub use csi::DRIVER as CSI_DRIVER;

/// How often every controller makes a pass even when no event woke it.
pub const RESYNC: Duration = Duration::from_secs(2);

/// How soon a controller retries after a pass that failed on some object (a conflict, usually).
const RETRY: Duration = Duration::from_millis(100);

/// Starts every controller, the scheduler and the kubelet of the instance `ctx` as tokio tasks;
/// they stop on the instance's shutdown signal. Must be called inside a tokio runtime.
pub fn spawn_all(ctx: &SimContext) {
    spawn(ctx, volumes::PvController);
    spawn(ctx, snapshots::SnapshotController);
    spawn(ctx, workloads::StatefulSetController);
    spawn(ctx, workloads::DeploymentController);
    spawn(ctx, workloads::ReplicaSetController);
    spawn(ctx, workloads::JobController);
    spawn(ctx, workloads::DaemonSetController);
    spawn(ctx, cronjobs::CronJobController);
    spawn(ctx, scheduler::Scheduler);
    spawn(ctx, kubelet::Kubelet::new());
}

/// An error of one controller pass on one object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store refused a read or write.
    #[error("{op} {kind} {name}")]
    Store {
        /// The operation (`get`, `create`, `update`, …).
        op: &'static str,
        /// The resource kind.
        kind: &'static str,
        /// `namespace/name` or `name` of the object.
        name: String,
        /// The store's answer.
        #[source]
        source: ApiError,
    },
    /// The CSI driver's file-system work failed.
    #[error("CSI driver: {op} {path}")]
    Csi {
        /// What the driver was doing (`create volume`, `copy volume into snapshot`, …).
        op: &'static str,
        /// The directory involved.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The catalogue does not serve a kind the controllers need (the snapshot CRDs are
    /// installed at start, so this means a broken instance).
    #[error("the catalogue does not serve {kind}")]
    MissingKind {
        /// The kind.
        kind: &'static str,
    },
    /// The kubelet could not prepare a pod's container.
    #[error("kubelet: {phase} for pod {pod}")]
    Kubelet {
        /// The step that failed (`open log file`, `materialise volume`, …).
        phase: &'static str,
        /// `namespace/name` of the pod.
        pod: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Returns true if and only if the error is an optimistic-concurrency conflict or a race with
    /// another writer, which the next pass resolves by itself.
    fn is_race(&self) -> bool {
        match self {
            Error::Store { source, .. } => source.is_conflict() || source.is_not_found(),
            _ => false,
        }
    }
}

/// A controller: one level-triggered pass over the store's current state.
trait Controller: Send + 'static {
    /// The name logs carry.
    const NAME: &'static str;
    /// The kinds whose changes wake this controller.
    fn watches(&self) -> &'static [Kind];
    /// Brings the world one step closer to the desired state. Returns Err if some object failed;
    /// the others were still handled.
    fn pass(&mut self, objects: &Objects) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Runs `c` until shutdown: a pass at start, then one after each burst of relevant events, one
/// every [`RESYNC`], and a quick retry after a failed pass.
fn spawn<C: Controller>(ctx: &SimContext, mut c: C) {
    let objects = Objects::new(ctx);
    let mut events = ctx.store.subscribe();
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = true;
        let mut failed = false;
        loop {
            if shutdown.is_triggered() {
                break;
            }
            if dirty {
                failed = false;
                if let Err(e) = c.pass(&objects).await {
                    failed = true;
                    if e.is_race() {
                        tracing::debug!(controller = C::NAME, error = %error_chain(&e), "pass raced another writer; retrying");
                    } else {
                        tracing::warn!(controller = C::NAME, error = %error_chain(&e), "pass failed; retrying");
                    }
                }
            }
            // Every branch below sets `dirty` afresh.
            let retry = tokio::time::sleep(RETRY);
            tokio::select! {
                _ = shutdown.wait() => break,
                ev = events.recv() => match ev {
                    Ok(ev) => dirty = wakes(&c, &ev),
                    Err(RecvError::Lagged(_)) => dirty = true,
                    Err(RecvError::Closed) => break,
                },
                _ = resync.tick() => dirty = true,
                _ = retry, if failed => dirty = true,
            }
            // Coalesce a burst of events into one pass.
            loop {
                match events.try_recv() {
                    Ok(ev) => dirty |= wakes(&c, &ev),
                    Err(TryRecvError::Lagged(_)) => dirty = true,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
        }
        tracing::debug!(controller = C::NAME, "stopped");
    });
}

/// Returns true if and only if the store event concerns a kind `c` watches.
fn wakes<C: Controller>(c: &C, ev: &StoreEvent) -> bool {
    let rt = &ev.resource;
    c.watches().iter().any(|k| {
        let (group, plural, _) = k.gpk();
        rt.group == group && rt.plural == plural
    })
}

/// Formats an error with its sources, for a log line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The resource kinds the controllers touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pod,
    Pvc,
    Pv,
    StorageClass,
    Node,
    Event,
    Secret,
    ConfigMap,
    StatefulSet,
    Deployment,
    ReplicaSet,
    Job,
    CronJob,
    DaemonSet,
    VolumeSnapshot,
    VolumeSnapshotContent,
    VolumeSnapshotClass,
}

impl Kind {
    /// The API group, plural and kind of the resource.
    fn gpk(self) -> (&'static str, &'static str, &'static str) {
        const SNAP: &str = "snapshot.storage.k8s.io";
        match self {
            Kind::Pod => ("", "pods", "Pod"),
            Kind::Pvc => ("", "persistentvolumeclaims", "PersistentVolumeClaim"),
            Kind::Pv => ("", "persistentvolumes", "PersistentVolume"),
            Kind::StorageClass => ("storage.k8s.io", "storageclasses", "StorageClass"),
            Kind::Node => ("", "nodes", "Node"),
            Kind::Event => ("", "events", "Event"),
            Kind::Secret => ("", "secrets", "Secret"),
            Kind::ConfigMap => ("", "configmaps", "ConfigMap"),
            Kind::StatefulSet => ("apps", "statefulsets", "StatefulSet"),
            Kind::Deployment => ("apps", "deployments", "Deployment"),
            Kind::ReplicaSet => ("apps", "replicasets", "ReplicaSet"),
            Kind::Job => ("batch", "jobs", "Job"),
            Kind::DaemonSet => ("apps", "daemonsets", "DaemonSet"),
            Kind::CronJob => ("batch", "cronjobs", "CronJob"),
            Kind::VolumeSnapshot => (SNAP, "volumesnapshots", "VolumeSnapshot"),
            Kind::VolumeSnapshotContent => {
                (SNAP, "volumesnapshotcontents", "VolumeSnapshotContent")
            }
            Kind::VolumeSnapshotClass => (SNAP, "volumesnapshotclasses", "VolumeSnapshotClass"),
        }
    }

    /// The `apiVersion` objects of this kind carry.
    pub(crate) fn api_version(self) -> &'static str {
        match self.gpk().0 {
            "" => "v1",
            "storage.k8s.io" => "storage.k8s.io/v1",
            "apps" => "apps/v1",
            "batch" => "batch/v1",
            _ => "snapshot.storage.k8s.io/v1",
        }
    }

    /// The resource's kind name.
    pub(crate) fn kind(self) -> &'static str {
        self.gpk().2
    }
}

/// The controllers' view of the store: typed by [`Kind`], answering "absent" as `None`, and
/// wrapping refusals in [`Error::Store`] with the object named.
#[derive(Clone)]
pub(crate) struct Objects {
    ctx: SimContext,
}

impl Objects {
    pub(crate) fn new(ctx: &SimContext) -> Objects {
        Objects { ctx: ctx.clone() }
    }

    /// The instance's configuration.
    pub(crate) fn config(&self) -> &SimConfig {
        &self.ctx.config
    }

    /// The instance's context.
    pub(crate) fn ctx(&self) -> &SimContext {
        &self.ctx
    }

    fn store(&self) -> &Store {
        &self.ctx.store
    }

    /// The catalogue entry of a kind. The catalogue installs every kind here at start (the
    /// snapshot kinds as CRDs), so a missing one is a broken instance.
    fn resource(&self, k: Kind) -> Result<std::sync::Arc<super::catalogue::ResourceType>, Error> {
        let (group, plural, _) = k.gpk();
        self.ctx
            .catalogue
            .find(group, plural)
            .ok_or(Error::MissingKind { kind: k.kind() })
    }

    /// Returns the object, or None if it does not exist.
    pub(crate) fn get(
        &self,
        k: Kind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, Error> {
        let rt = self.resource(k)?;
        Ok(self.store().get(&rt, ns, name))
    }

    /// Lists the objects of a kind, in every namespace when `ns` is None.
    pub(crate) fn list(&self, k: Kind, ns: Option<&str>) -> Result<Vec<Value>, Error> {
        let rt = self.resource(k)?;
        Ok(self.store().list(&rt, ns))
    }

    /// Creates an object; Ok(None) if one of that name already exists.
    pub(crate) fn create(&self, k: Kind, obj: Value) -> Result<Option<Value>, Error> {
        let rt = self.resource(k)?;
        let ns = namespace(&obj).map(str::to_owned);
        match self.store().create(&rt, ns.as_deref(), obj.clone()) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_already_exists() => Ok(None),
            Err(source) => Err(store_err("create", k, ns.as_deref(), name(&obj), source)),
        }
    }

    /// Replaces an object's spec and metadata (optimistic: fails on a stale resourceVersion).
    pub(crate) fn update(&self, k: Kind, obj: Value) -> Result<Value, Error> {
        let rt = self.resource(k)?;
        let (ns, n) = (namespace(&obj).map(str::to_owned), name(&obj).to_owned());
        self.store()
            .update(&rt, obj)
            .map_err(|source| store_err("update", k, ns.as_deref(), &n, source))
    }

    /// Replaces an object's status (optimistic: fails on a stale resourceVersion).
    pub(crate) fn update_status(&self, k: Kind, obj: Value) -> Result<Value, Error> {
        let rt = self.resource(k)?;
        let (ns, n) = (namespace(&obj).map(str::to_owned), name(&obj).to_owned());
        self.store()
            .update_status(&rt, obj)
            .map_err(|source| store_err("update status", k, ns.as_deref(), &n, source))
    }

    /// Changes the status of `obj` atomically from its current version (no conflict possible);
    /// Ok(None) if the object is gone or was replaced by another of the same name (another uid).
    pub(crate) fn modify_status(
        &self,
        k: Kind,
        obj: &Value,
        f: impl FnOnce(&mut Value),
    ) -> Result<Option<Value>, Error> {
        let rt = self.resource(k)?;
        let (ns, n, id) = (namespace(obj), name(obj), uid(obj));
        let replaced = ApiError::not_found(&rt, n);
        match self.store().modify_status(&rt, ns, n, |v| {
            if !id.is_empty() && uid(v) != id {
                return Err(replaced);
            }
            f(v);
            Ok(())
        }) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(source) => Err(store_err("update status", k, ns, n, source)),
        }
    }

    /// Deletes an object; a missing one is not an error.
    pub(crate) fn delete(&self, k: Kind, ns: Option<&str>, name: &str) -> Result<(), Error> {
        let rt = self.resource(k)?;
        match self.store().delete(&rt, ns, name) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(source) => Err(store_err("delete", k, ns, name, source)),
        }
    }

    /// Records a core/v1 Event about `obj` (of kind `k`), as a real controller's event recorder
    /// does. Repeats of the same reason and message bump the existing Event's count at most once
    /// a minute, so a controller's resync does not flood the store.
    pub(crate) fn event(
        &self,
        k: Kind,
        obj: &Value,
        warning: bool,
        reason: &str,
        message: &str,
        component: &str,
    ) -> Result<(), Error> {
        let ns = namespace(obj).unwrap_or("default").to_owned();
        let digest = hex::encode(&Sha256::digest(format!("{}/{reason}/{message}", uid(obj)))[..8]);
        let ev_name = format!("{}.{digest}", name(obj));
        let now = now();
        if let Some(mut existing) = self.get(Kind::Event, Some(&ns), &ev_name)? {
            let stale = existing["lastTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_none_or(|t| jiff::Timestamp::now().duration_since(t).as_secs() >= 60);
            if stale {
                let count = existing["count"].as_i64().unwrap_or(1) + 1;
                existing["count"] = json!(count);
                existing["lastTimestamp"] = json!(now);
                self.update(Kind::Event, existing)?;
            }
            return Ok(());
        }
        tracing::debug!(object = name(obj), reason, message, "event");
        let event = json!({
            "metadata": {"name": ev_name, "namespace": ns},
            "involvedObject": {
                "apiVersion": k.api_version(),
                "kind": k.kind(),
                "name": name(obj),
                "namespace": namespace(obj),
                "uid": uid(obj),
                "resourceVersion": obj["metadata"]["resourceVersion"],
            },
            "reason": reason,
            "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": "",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        self.create(Kind::Event, event)?;
        Ok(())
    }
}

fn store_err(op: &'static str, k: Kind, ns: Option<&str>, name: &str, source: ApiError) -> Error {
    let name = match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    };
    Error::Store {
        op,
        kind: k.kind(),
        name,
        source,
    }
}

// ---- Helpers over JSON objects.

/// The object's `metadata.name`.
pub(crate) fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// The object's `metadata.namespace`, if it has one.
pub(crate) fn namespace(obj: &Value) -> Option<&str> {
    obj["metadata"]["namespace"].as_str()
}

/// The object's `metadata.uid`.
pub(crate) fn uid(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

/// Returns true if and only if the object is being deleted (it carries a deletionTimestamp).
pub(crate) fn is_deleting(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

/// The uid of the object's controlling owner, if it has one.
pub(crate) fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
        .and_then(|r| r["uid"].as_str())
}

/// An ownerReference naming `owner` (of kind `k`) as the controller.
pub(crate) fn owner_ref(k: Kind, owner: &Value) -> Value {
    json!({
        "apiVersion": k.api_version(),
        "kind": k.kind(),
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Parses a Kubernetes quantity (`10Gi`, `500M`, `1.5Gi`, `1e9`, `100`) into a whole number of
/// units (bytes, for storage), rounding up.
pub(crate) fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    if n < 0.0 {
        return None;
    }
    Some((n * mult).ceil() as u64)
}

/// Returns true if and only if the pod has the condition `Ready` = `True`.
pub(crate) fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The pod's phase (`Pending` when the status has none yet).
pub(crate) fn pod_phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("Pending")
}

/// Returns true if and only if the pod has finished (Succeeded or Failed).
pub(crate) fn pod_finished(pod: &Value) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

/// The label map of an object's (or a template's) metadata.
pub(crate) fn labels(meta: &Value) -> serde_json::Map<String, Value> {
    meta["labels"].as_object().cloned().unwrap_or_default()
}

/// The strings of a JSON array (empty when it is not one).
pub(crate) fn str_list(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|vs| vs.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Evaluates one selector requirement against a label's value (None: the label is absent).
pub(crate) fn expression_matches(op: &str, value: Option<&str>, values: &[&str]) -> bool {
    match op {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let v = value.and_then(|v| v.parse::<i64>().ok());
            let bound = values.first().and_then(|b| b.parse::<i64>().ok());
            match (v, bound) {
                (Some(v), Some(b)) if op == "Gt" => v > b,
                (Some(v), Some(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("100"), Some(100));
        assert_eq!(parse_quantity("10Xi"), None);
        assert_eq!(parse_quantity("-1"), None);
    }

    #[test]
    fn selector_expressions_evaluate_like_kubernetes() {
        assert!(expression_matches("In", Some("a"), &["a", "b"]));
        assert!(!expression_matches("In", None, &["a"]));
        assert!(expression_matches("NotIn", None, &["a"]));
        assert!(expression_matches("Exists", Some(""), &[]));
        assert!(expression_matches("DoesNotExist", None, &[]));
        assert!(expression_matches("Gt", Some("5"), &["4"]));
        assert!(!expression_matches("Lt", Some("5"), &["4"]));
    }
}
