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

mod api;
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

use super::store::{ApiError, SimConfig, SimContext, StoreEvent};

pub use csi::DRIVER as CSI_DRIVER;

/// How often every controller makes a pass even when no event woke it.
pub const RESYNC: Duration = Duration::from_secs(2);

/// How soon a controller retries after a pass that failed on some object (a conflict, usually).
const RETRY: Duration = Duration::from_millis(100);

/// Starts every controller, the scheduler and the kubelet of the instance `ctx` as tokio tasks;
/// they stop on the instance's shutdown signal. Must be called inside a tokio runtime.
pub fn spawn_all(ctx: &SimContext) {
    let objects = Objects::new(ctx);
    spawn(objects.clone(), volumes::PvController);
    spawn(objects.clone(), snapshots::SnapshotController);
    spawn(objects.clone(), workloads::StatefulSetController);
    spawn(objects.clone(), workloads::DeploymentController);
    spawn(objects.clone(), workloads::ReplicaSetController);
    spawn(objects.clone(), workloads::JobController);
    spawn(objects.clone(), workloads::DaemonSetController);
    spawn(objects.clone(), cronjobs::CronJobController);
    spawn(objects.clone(), scheduler::Scheduler);
    spawn(objects, kubelet::Kubelet::new());
}

/// Starts, against a real API server, what no real binary does here: the kubelet of the
/// agent's nodes (which runs lifeboat's own pods), the `disk.csi.sim` provisioner and the
/// csi-snapshotter sidecar's part. The real controller manager, scheduler and
/// snapshot-controller do the rest. Must be called inside a tokio runtime.
pub(crate) fn spawn_agent(objects: Objects) {
    spawn(objects.clone(), volumes::PvController);
    spawn(objects.clone(), snapshots::SnapshotController);
    spawn(objects, kubelet::Kubelet::new());
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
    /// A real API server refused a read or write.
    #[error("{op} {kind} {name}")]
    Api {
        /// The operation (`get`, `create`, `update`, …).
        op: &'static str,
        /// The resource kind.
        kind: &'static str,
        /// `namespace/name` or `name` of the object.
        name: String,
        /// The client's error (boxed: it is large).
        #[source]
        source: Box<kube::Error>,
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
            Error::Api { source, .. } => matches!(api::code(source), Some(404 | 409)),
            _ => false,
        }
    }

    /// Returns true if and only if the object was not found.
    fn is_not_found(&self) -> bool {
        match self {
            Error::Store { source, .. } => source.is_not_found(),
            Error::Api { source, .. } => api::code(source) == Some(404),
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
fn spawn<C: Controller>(objects: Objects, mut c: C) {
    let mut wake = Wake::new(&objects, &c);
    let shutdown = objects.shutdown.clone();
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
                woken = wake.next(c.watches()) => match woken {
                    Some(d) => dirty = d,
                    None => break,
                },
                _ = resync.tick() => dirty = true,
                _ = retry, if failed => dirty = true,
            }
            // Coalesce a burst of events into one pass.
            dirty |= wake.drain(c.watches());
        }
        tracing::debug!(controller = C::NAME, "stopped");
    });
}

/// What wakes a controller: the simulator's store events, or watches on a real API server.
enum Wake {
    Store(tokio::sync::broadcast::Receiver<StoreEvent>),
    Api(std::sync::Arc<tokio::sync::Notify>),
}

impl Wake {
    fn new<C: Controller>(objects: &Objects, c: &C) -> Wake {
        match &objects.backend {
            Backend::Store(ctx) => Wake::Store(ctx.store.subscribe()),
            Backend::Api { client, .. } => {
                let notify = std::sync::Arc::new(tokio::sync::Notify::new());
                for k in c.watches() {
                    watch_kind(client, *k, notify.clone(), objects.shutdown.clone());
                }
                Wake::Api(notify)
            }
        }
    }

    /// Waits for the next change: Some(whether it concerns one of `kinds`), or None once the source closed.
    async fn next(&mut self, kinds: &'static [Kind]) -> Option<bool> {
        match self {
            Wake::Store(events) => match events.recv().await {
                Ok(ev) => Some(wakes(kinds, &ev)),
                Err(RecvError::Lagged(_)) => Some(true),
                Err(RecvError::Closed) => None,
            },
            Wake::Api(notify) => {
                notify.notified().await;
                Some(true)
            }
        }
    }

    /// Takes the changes already waiting: whether any concerns one of `kinds`.
    fn drain(&mut self, kinds: &'static [Kind]) -> bool {
        let Wake::Store(events) = self else {
            return false; // a Notify holds at most one wake-up, taken by `next`
        };
        let mut dirty = false;
        loop {
            match events.try_recv() {
                Ok(ev) => dirty |= wakes(kinds, &ev),
                Err(TryRecvError::Lagged(_)) => dirty = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        dirty
    }
}

/// Watches every object of kind `k` on a real API server and wakes `notify` on each change,
/// like an informer's event handler, until shutdown.
fn watch_kind(
    client: &kube::Client,
    k: Kind,
    notify: std::sync::Arc<tokio::sync::Notify>,
    shutdown: super::store::Shutdown,
) {
    use futures::StreamExt as _;
    use kube::runtime::WatchStreamExt as _;
    let api: kube::Api<kube::core::DynamicObject> =
        kube::Api::all_with(client.clone(), &k.api_resource());
    tokio::spawn(async move {
        let stream = kube::runtime::watcher(api, kube::runtime::watcher::Config::default())
            .default_backoff();
        futures::pin_mut!(stream);
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                ev = stream.next() => match ev {
                    Some(Ok(_)) => notify.notify_one(),
                    Some(Err(e)) => tracing::debug!(kind = k.kind(), error = %e, "watch failed; the watcher retries"),
                    None => break,
                },
            }
        }
    });
}

/// Returns true if and only if the store event concerns one of `kinds`.
fn wakes(kinds: &[Kind], ev: &StoreEvent) -> bool {
    let rt = &ev.resource;
    kinds.iter().any(|k| {
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
    CsiDriver,
    Lease,
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
            Kind::CsiDriver => ("storage.k8s.io", "csidrivers", "CSIDriver"),
            Kind::Lease => ("coordination.k8s.io", "leases", "Lease"),
        }
    }

    /// The `apiVersion` objects of this kind carry.
    pub(crate) fn api_version(self) -> &'static str {
        match self.gpk().0 {
            "" => "v1",
            "storage.k8s.io" => "storage.k8s.io/v1",
            "apps" => "apps/v1",
            "batch" => "batch/v1",
            "coordination.k8s.io" => "coordination.k8s.io/v1",
            _ => "snapshot.storage.k8s.io/v1",
        }
    }

    /// The resource's kind name.
    pub(crate) fn kind(self) -> &'static str {
        self.gpk().2
    }

    /// Returns true if and only if objects of this kind live in a namespace.
    pub(crate) fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Pv
                | Kind::StorageClass
                | Kind::Node
                | Kind::VolumeSnapshotContent
                | Kind::VolumeSnapshotClass
                | Kind::CsiDriver
        )
    }

    /// The resource for a watch through kube's dynamic API.
    fn api_resource(self) -> kube::core::ApiResource {
        let (group, plural, kind) = self.gpk();
        let api_version = self.api_version();
        let version = api_version.rsplit('/').next().unwrap_or("v1");
        kube::core::ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
        }
    }
}

/// The controllers' view of a cluster: typed by [`Kind`], answering "absent" as `None`, and
/// wrapping refusals in [`Error`] with the object named. Backed by the simulator's [`Store`]
/// (in process) or by a real API server over HTTP ([`Objects::api`]): the kubelet and the CSI
/// driver run unchanged against either.
#[derive(Clone)]
pub(crate) struct Objects {
    config: std::sync::Arc<SimConfig>,
    shutdown: super::store::Shutdown,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Store(SimContext),
    Api {
        client: kube::Client,
        /// Host and port of the API server, as pods reach it (`KUBERNETES_SERVICE_HOST/PORT`).
        server: (String, u16),
    },
}

impl Objects {
    pub(crate) fn new(ctx: &SimContext) -> Objects {
        Objects {
            config: ctx.config.clone(),
            shutdown: ctx.shutdown.clone(),
            backend: Backend::Store(ctx.clone()),
        }
    }

    /// Objects of a real API server reached through `client`; `config` says where volumes,
    /// logs and pod directories live and which nodes are this agent's.
    pub(crate) fn api(
        client: kube::Client,
        server: (String, u16),
        config: std::sync::Arc<SimConfig>,
        shutdown: super::store::Shutdown,
    ) -> Objects {
        Objects {
            config,
            shutdown,
            backend: Backend::Api { client, server },
        }
    }

    /// Returns true if and only if these objects live in a real API server, whose own
    /// controllers (PV binder, snapshot controller, workload controllers) do their part.
    pub(crate) fn is_real(&self) -> bool {
        matches!(self.backend, Backend::Api { .. })
    }

    /// `KUBERNETES_SERVICE_HOST` and `_PORT` for a pod of a real API server, where in-cluster
    /// clients find it (the simulator gives pods no in-cluster credentials).
    pub(crate) fn in_cluster_env(&self) -> Vec<(String, String)> {
        match &self.backend {
            Backend::Api { server, .. } => vec![
                ("KUBERNETES_SERVICE_HOST".to_owned(), server.0.clone()),
                ("KUBERNETES_SERVICE_PORT".to_owned(), server.1.to_string()),
                (
                    "KUBERNETES_SERVICE_PORT_HTTPS".to_owned(),
                    server.1.to_string(),
                ),
            ],
            Backend::Store(_) => Vec::new(),
        }
    }

    /// A token of service account `sa` bound to `pod`, as a projected `serviceAccountToken`
    /// source asks (`audience`, `expirationSeconds`): from the TokenRequest API of a real API
    /// server. The simulator authenticates nobody, so there it is empty. None if the account
    /// does not exist.
    pub(crate) async fn service_account_token(
        &self,
        pod: &Value,
        sa: &str,
        source: &Value,
    ) -> Result<Option<String>, Error> {
        let Backend::Api { client, .. } = &self.backend else {
            return Ok(Some(String::new()));
        };
        let ns = namespace(pod).unwrap_or("default");
        let mut spec = json!({
            "expirationSeconds": source["expirationSeconds"].as_i64().unwrap_or(3607),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name(pod), "uid": uid(pod)},
        });
        if let Some(aud) = source["audience"].as_str() {
            spec["audiences"] = json!([aud]);
        }
        let body =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
        match api::send(client, http::Method::POST, &path, Some(&body)).await {
            Ok(v) => Ok(v["status"]["token"].as_str().map(str::to_owned)),
            Err(e) if api::code(&e) == Some(404) => Ok(None),
            Err(source) => Err(api_err("create token", Kind::Pod, Some(ns), sa, source)),
        }
    }

    /// The instance's configuration.
    pub(crate) fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Fires when the instance (or agent) stops.
    pub(crate) fn shutdown(&self) -> &super::store::Shutdown {
        &self.shutdown
    }

    /// Where the kubelet writes a container's log.
    pub(crate) fn log_path(&self, ns: &str, pod: &str, container: &str) -> std::path::PathBuf {
        super::store::log_path(&self.config.state_dir, ns, pod, container)
    }

    /// The catalogue entry of a kind. The catalogue installs every kind here at start (the
    /// snapshot kinds as CRDs), so a missing one is a broken instance.
    fn resource(
        ctx: &SimContext,
        k: Kind,
    ) -> Result<std::sync::Arc<super::catalogue::ResourceType>, Error> {
        let (group, plural, _) = k.gpk();
        ctx.catalogue
            .find(group, plural)
            .ok_or(Error::MissingKind { kind: k.kind() })
    }

    /// Returns the object, or None if it does not exist.
    pub(crate) async fn get(
        &self,
        k: Kind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, Error> {
        match &self.backend {
            Backend::Store(ctx) => {
                let rt = Self::resource(ctx, k)?;
                Ok(ctx.store.get(&rt, ns, name))
            }
            Backend::Api { client, .. } => {
                match api::send(
                    client,
                    http::Method::GET,
                    &api::path(k, ns, Some(name)),
                    None,
                )
                .await
                {
                    Ok(v) => Ok(Some(v)),
                    Err(e) if api::code(&e) == Some(404) => Ok(None),
                    Err(source) => Err(api_err("get", k, ns, name, source)),
                }
            }
        }
    }

    /// Lists the objects of a kind, in every namespace when `ns` is None.
    pub(crate) async fn list(&self, k: Kind, ns: Option<&str>) -> Result<Vec<Value>, Error> {
        match &self.backend {
            Backend::Store(ctx) => {
                let rt = Self::resource(ctx, k)?;
                Ok(ctx.store.list(&rt, ns))
            }
            Backend::Api { client, .. } => {
                let list = api::send(client, http::Method::GET, &api::path(k, ns, None), None)
                    .await
                    .map_err(|source| api_err("list", k, ns, "", source))?;
                // A real list's items carry no apiVersion and kind; the store's do.
                Ok(list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|item| {
                        let mut item = item.clone();
                        item["apiVersion"] = json!(k.api_version());
                        item["kind"] = json!(k.kind());
                        item
                    })
                    .collect())
            }
        }
    }

    /// Creates an object; Ok(None) if one of that name already exists.
    pub(crate) async fn create(&self, k: Kind, obj: Value) -> Result<Option<Value>, Error> {
        let ns = namespace(&obj).map(str::to_owned);
        match &self.backend {
            Backend::Store(ctx) => {
                let rt = Self::resource(ctx, k)?;
                match ctx.store.create(&rt, ns.as_deref(), obj.clone()) {
                    Ok(v) => Ok(Some(v)),
                    Err(e) if e.is_already_exists() => Ok(None),
                    Err(source) => Err(store_err("create", k, ns.as_deref(), name(&obj), source)),
                }
            }
            Backend::Api { client, .. } => {
                let mut body = obj.clone();
                body["apiVersion"] = json!(k.api_version());
                body["kind"] = json!(k.kind());
                let path = api::path(k, ns.as_deref(), None);
                match api::send(client, http::Method::POST, &path, Some(&body)).await {
                    Ok(v) => Ok(Some(v)),
                    Err(e) if api::code(&e) == Some(409) => Ok(None),
                    Err(source) => Err(api_err("create", k, ns.as_deref(), name(&obj), source)),
                }
            }
        }
    }

    /// Replaces an object's spec and metadata (optimistic: fails on a stale resourceVersion).
    pub(crate) async fn update(&self, k: Kind, obj: Value) -> Result<Value, Error> {
        self.replace(k, obj, false).await
    }

    /// Replaces an object's status (optimistic: fails on a stale resourceVersion).
    pub(crate) async fn update_status(&self, k: Kind, obj: Value) -> Result<Value, Error> {
        self.replace(k, obj, true).await
    }

    async fn replace(&self, k: Kind, obj: Value, status: bool) -> Result<Value, Error> {
        let (ns, n) = (namespace(&obj).map(str::to_owned), name(&obj).to_owned());
        let op = if status { "update status" } else { "update" };
        match &self.backend {
            Backend::Store(ctx) => {
                let rt = Self::resource(ctx, k)?;
                let r = if status {
                    ctx.store.update_status(&rt, obj)
                } else {
                    ctx.store.update(&rt, obj)
                };
                r.map_err(|source| store_err(op, k, ns.as_deref(), &n, source))
            }
            Backend::Api { client, .. } => {
                let mut body = obj;
                body["apiVersion"] = json!(k.api_version());
                body["kind"] = json!(k.kind());
                let mut path = api::path(k, ns.as_deref(), Some(&n));
                if status {
                    path.push_str("/status");
                }
                api::send(client, http::Method::PUT, &path, Some(&body))
                    .await
                    .map_err(|source| api_err(op, k, ns.as_deref(), &n, source))
            }
        }
    }

    /// Changes the status of `obj` atomically from its current version (no conflict possible);
    /// Ok(None) if the object is gone or was replaced by another of the same name (another uid).
    pub(crate) async fn modify_status(
        &self,
        k: Kind,
        obj: &Value,
        f: impl Fn(&mut Value),
    ) -> Result<Option<Value>, Error> {
        let (ns, n, id) = (namespace(obj), name(obj), uid(obj));
        match &self.backend {
            Backend::Store(ctx) => {
                let rt = Self::resource(ctx, k)?;
                let replaced = ApiError::not_found(&rt, n);
                match ctx.store.modify_status(&rt, ns, n, |v| {
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
            Backend::Api { .. } => {
                // Read, change, write; a conflict means another writer came between: again.
                let mut tries = 0;
                loop {
                    let Some(mut current) = self.get(k, ns, n).await? else {
                        return Ok(None);
                    };
                    if !id.is_empty() && uid(&current) != id {
                        return Ok(None);
                    }
                    f(&mut current);
                    match self.update_status(k, current).await {
                        Ok(v) => return Ok(Some(v)),
                        Err(e) if e.is_not_found() => return Ok(None),
                        Err(e) if e.is_race() && tries < 10 => tries += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Deletes an object; a missing one is not an error.
    pub(crate) async fn delete(&self, k: Kind, ns: Option<&str>, name: &str) -> Result<(), Error> {
        match &self.backend {
            Backend::Store(ctx) => {
                let rt = Self::resource(ctx, k)?;
                match ctx.store.delete(&rt, ns, name) {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() => Ok(()),
                    Err(source) => Err(store_err("delete", k, ns, name, source)),
                }
            }
            Backend::Api { client, .. } => {
                let path = api::path(k, ns, Some(name));
                match api::send(client, http::Method::DELETE, &path, None).await {
                    Ok(_) => Ok(()),
                    Err(e) if api::code(&e) == Some(404) => Ok(()),
                    Err(source) => Err(api_err("delete", k, ns, name, source)),
                }
            }
        }
    }

    /// Confirms the deletion of a pod that is being deleted, as the kubelet does once its
    /// containers stopped: a delete with grace period 0 for that very pod (by uid). Only a real
    /// API server waits for this; the simulator deletes pods at once.
    pub(crate) async fn confirm_pod_deletion(&self, pod: &Value) -> Result<(), Error> {
        let Backend::Api { client, .. } = &self.backend else {
            return Ok(());
        };
        let (ns, n) = (namespace(pod), name(pod));
        let body = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid(pod)}});
        let path = api::path(Kind::Pod, ns, Some(n));
        match api::send(client, http::Method::DELETE, &path, Some(&body)).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(api::code(&e), Some(404 | 409)) => Ok(()),
            Err(source) => Err(api_err("delete", Kind::Pod, ns, n, source)),
        }
    }

    /// Records a core/v1 Event about `obj` (of kind `k`), as a real controller's event recorder
    /// does. Repeats of the same reason and message bump the existing Event's count at most once
    /// a minute, so a controller's resync does not flood the store.
    pub(crate) async fn event(
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
        if let Some(mut existing) = self.get(Kind::Event, Some(&ns), &ev_name).await? {
            let stale = existing["lastTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_none_or(|t| jiff::Timestamp::now().duration_since(t).as_secs() >= 60);
            if stale {
                let count = existing["count"].as_i64().unwrap_or(1) + 1;
                existing["count"] = json!(count);
                existing["lastTimestamp"] = json!(now);
                self.update(Kind::Event, existing).await?;
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
        self.create(Kind::Event, event).await?;
        Ok(())
    }
}

fn api_err(op: &'static str, k: Kind, ns: Option<&str>, name: &str, source: kube::Error) -> Error {
    Error::Api {
        op,
        kind: k.kind(),
        name: qualified(ns, name),
        source: Box::new(source),
    }
}

fn qualified(ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

fn store_err(op: &'static str, k: Kind, ns: Option<&str>, name: &str, source: ApiError) -> Error {
    Error::Store {
        op,
        kind: k.kind(),
        name: qualified(ns, name),
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
    crate::units::parse_quantity(q).and_then(|v| u64::try_from(v).ok())
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
