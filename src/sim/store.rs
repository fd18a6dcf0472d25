//! The simulated cluster's in-process object store: **the contract the controllers and the
//! kubelet code against** (`src/sim/controllers/`, `src/sim/kubelet.rs`). Its signatures stay
//! stable.
//!
//! - Every write goes through the same admission as the HTTP API (uid, resourceVersion,
//!   creationTimestamp, generation, managedFields, generateName, namespace checks, Service IP
//!   allocation, immutability rules, schema validation: built-ins must decode as their
//!   `k8s-openapi` type and carry the required fields restores trip over), so a controller
//!   cannot create what a client could not. Semantics follow the catalogue's definition of a
//!   type (e.g. its status subresource), whichever `ResourceType` copy the caller passes.
//! - Methods are synchronous and hold one short lock; never hold a returned value's borrow
//!   across an `.await` (there is none to hold: values are owned copies).
//! - `resourceVersion` is one global counter over all resources.
//! - [`Store::subscribe`] yields every committed change as a [`StoreEvent`]; a controller that
//!   lags more than the channel capacity gets `RecvError::Lagged` and should re-list.
//! - Objects are `serde_json::Value`s in their wire form (with `apiVersion`/`kind`); use
//!   [`Store::get_typed`]/[`ResourceType::of`] to work with `k8s-openapi` types.
//!
//! Things the API server side (not the controllers) already does:
//! - creates the Node objects named in [`SimConfig::nodes`], labelled with
//!   `topology.kubernetes.io/zone` from [`SimConfig::zones`] (round robin);
//! - the namespace lifecycle (a deleted namespace goes `Terminating`, its contents are deleted,
//!   then it disappears), the `default` ServiceAccount and `kube-root-ca.crt` ConfigMap in every
//!   namespace, the garbage collector for `ownerReferences`, CRD establishment;
//! - serves `GET .../pods/{name}/log` from the file [`SimContext::log_path`] names
//!   (`<state_dir>/logs/<ns>/<pod>/<container>.log`), which the kubelet writes.
//!
//! Deletion honours `metadata.finalizers`: an object with finalizers gets a
//! `deletionTimestamp` and stays until an update empties its finalizers. Pods are deleted at
//! once (no graceful termination). [`Store::delete_with`] takes preconditions and the `Orphan`
//! propagation policy.
//!
//! Objects are stored as their serialized bytes (cheap lists, low memory); `get`/`list` parse
//! on the way out, so a controller that lists a large kind on every event pays for it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};

pub use super::catalogue::{Catalogue, ResourceType};

/// The kind of a committed change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The object was created.
    Added,
    /// The object was updated (including getting a `deletionTimestamp`).
    Modified,
    /// The object is gone.
    Deleted,
}

impl EventKind {
    /// The watch event type on the wire: `ADDED`, `MODIFIED`, `DELETED`.
    pub fn wire(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One committed change, as broadcast by [`Store::subscribe`].
#[derive(Clone, Debug)]
pub struct StoreEvent {
    /// What happened.
    pub kind: EventKind,
    /// The type of the object.
    pub resource: Arc<ResourceType>,
    /// The object after the change (for `Deleted`, its last state with a new resourceVersion).
    pub object: Arc<Value>,
    /// The global resourceVersion of this change.
    pub resource_version: u64,
    /// The object serialized in list form (without apiVersion/kind for built-ins); the HTTP
    /// layer splices it into responses instead of re-serializing.
    pub raw: Bytes,
}

impl StoreEvent {
    /// The object's namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// A refusal from the API, rendered as a Kubernetes `Status` (over HTTP) or returned to
/// in-process callers.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`.
    pub reason: &'static str,
    /// Human message, worded as the real API server words it.
    pub message: String,
    /// `Status.details`, if any (boxed to keep the error small).
    pub details: Option<Box<Value>>,
    /// Seconds for a `Retry-After` header (429 only).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> ApiError {
        self.details = Some(Box::new(
            json!({"name": name, "group": rt.group, "kind": rt.plural}),
        ));
        self
    }

    /// 404 `<plural> "<name>" not found`.
    pub fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", qualified(rt), name),
        )
        .with_details(rt, name)
    }

    /// 409 `<plural> "<name>" already exists`.
    pub fn already_exists(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", qualified(rt), name),
        )
        .with_details(rt, name)
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(rt),
                name
            ),
        )
        .with_details(rt, name)
    }

    /// 422 Invalid: `<Kind> "<name>" is invalid: <field>: <detail>`.
    pub fn invalid(rt: &ResourceType, name: &str, field: &str, detail: &str) -> ApiError {
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{} \"{}\" is invalid: {}: {}", rt.kind, name, field, detail),
        );
        e.details = Some(Box::new(json!({
            "name": name, "group": rt.group, "kind": rt.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
        })));
        e
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 410 Gone with reason `Expired` (continue token) or `Gone` (watch too old).
    pub fn gone(reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(410, reason, message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    /// 429 TooManyRequests with a Retry-After.
    pub fn too_many_requests(retry_after: u32) -> ApiError {
        let mut e = ApiError::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        e.retry_after = Some(retry_after);
        e.details = Some(Box::new(json!({"retryAfterSeconds": retry_after})));
        e
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type})"
            ),
        )
    }

    /// Returns true if and only if this is a 404.
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }

    /// Returns true if and only if this is a 409 AlreadyExists.
    pub fn is_already_exists(&self) -> bool {
        self.code == 409 && self.reason == "AlreadyExists"
    }

    /// Returns true if and only if this is a 409 Conflict.
    pub fn is_conflict(&self) -> bool {
        self.code == 409 && self.reason == "Conflict"
    }

    /// The error as a `meta/v1 Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = (**d).clone();
        }
        s
    }
}

fn qualified(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

/// Configuration of one simulated cluster.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Cluster name; also the kubeconfig context, cluster and user name (e.g. `primary`).
    pub name: String,
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Availability zones of this region (e.g. `eastus2-1..3`); nodes are spread over them.
    pub zones: Vec<String>,
    /// Names of the nodes (Node objects are created at start, zone-labelled round robin).
    pub nodes: Vec<String>,
    /// Service cluster IP range, IPv4 CIDR, e.g. `10.0.0.0/16`.
    pub service_cidr: String,
    /// Inclusive NodePort range.
    pub node_port_range: (u16, u16),
    /// Directory for volumes, logs and the persisted store.
    pub state_dir: PathBuf,
    /// Returns true if and only if the store is saved to / loaded from `<state_dir>/store.jsonl`.
    pub persist: bool,
    /// Where to write the kubeconfig; `None` means `<state_dir>/kubeconfig`.
    pub kubeconfig_out: Option<PathBuf>,
    /// Pods whose container image equals this are really run by the kubelet.
    pub lifeboat_image: String,
    /// The lifeboat binary the kubelet executes for such pods.
    pub lifeboat_bin: PathBuf,
    /// How long after a CRD's creation its `Established` condition is set.
    pub crd_established_delay: Duration,
    /// A continue token expires (410) after this many writes since its list; `None`: never.
    pub continue_max_writes: Option<u64>,
    /// A continue token expires (410) after this age.
    pub continue_ttl: Duration,
    /// How many past events a watch can resume from; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// When set, every n-th API request is refused with 429 and `Retry-After: secs`.
    pub throttle: Option<Throttle>,
    /// Latency added to every API request (before it is handled).
    pub latency: Duration,
    /// How often the garbage collector and namespace finalizer look for work.
    pub gc_interval: Duration,
    /// Bookmark interval on watches that ask for bookmarks.
    pub bookmark_interval: Duration,
}

/// 429 injection: refuse every `every`-th request with `Retry-After: retry_after_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// Refuse one request in this many (1 refuses all).
    pub every: u64,
    /// The Retry-After value, seconds.
    pub retry_after_secs: u64,
}

static INSTANCE: AtomicU64 = AtomicU64::new(0);

impl Default for SimConfig {
    fn default() -> Self {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let zones: Vec<String> = (1..=3).map(|i| format!("sim-{i}")).collect();
        SimConfig {
            name: "sim".to_string(),
            port: 0,
            nodes: (0..zones.len()).map(|i| format!("node-{i}")).collect(),
            zones,
            service_cidr: "10.96.0.0/16".to_string(),
            node_port_range: (30000, 32767),
            state_dir: std::env::temp_dir().join(format!(
                "lifeboat-sim-{}-{}",
                std::process::id(),
                n
            )),
            persist: false,
            kubeconfig_out: None,
            lifeboat_image: "lifeboat:dev".to_string(),
            lifeboat_bin: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("lifeboat")),
            crd_established_delay: Duration::from_millis(300),
            continue_max_writes: None,
            continue_ttl: Duration::from_secs(300),
            watch_history: 10_000,
            throttle: None,
            latency: Duration::ZERO,
            gc_interval: Duration::from_millis(200),
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// A cloneable shutdown signal shared by the server and the controllers.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            rx,
        }
    }
}

impl Shutdown {
    /// Signals every holder to stop.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Returns true if and only if shutdown has been signalled.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once shutdown is signalled (use in `tokio::select!`).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the sender is gone, which only happens at teardown: stop as well.
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// What a controller or the kubelet receives.
#[derive(Clone, Debug)]
pub struct SimContext {
    /// The object store.
    pub store: Store,
    /// The served types (the same one the store uses).
    pub catalogue: Catalogue,
    /// The cluster's configuration.
    pub config: Arc<SimConfig>,
    /// Stop when this fires.
    pub shutdown: Shutdown,
}

impl SimContext {
    /// Where the kubelet writes a container's log and the API serves `pods/{name}/log` from:
    /// `<state_dir>/logs/<ns>/<pod>/<container>.log`.
    pub fn log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        log_path(&self.config.state_dir, namespace, pod, container)
    }

    /// `<state_dir>/volumes`: where the CSI driver keeps volume directories.
    pub fn volumes_dir(&self) -> PathBuf {
        self.config.state_dir.join("volumes")
    }
}

/// The last `n` lines of a container log (all of it when `n` is None), as `tailLines` asks.
pub(crate) fn tail_lines(bytes: Vec<u8>, n: Option<usize>) -> Vec<u8> {
    let Some(n) = n else { return bytes };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut s = lines[lines.len().saturating_sub(n)..].join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s.into_bytes()
}

pub(crate) fn log_path(state_dir: &std::path::Path, ns: &str, pod: &str, c: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join(ns)
        .join(pod)
        .join(format!("{c}.log"))
}

/// Kinds with a status whose objects a real API server (1.34) gives no `metadata.generation`
/// (measured against kube-apiserver by the differential suite).
fn without_generation(rt: &ResourceType) -> bool {
    matches!(
        (rt.group.as_str(), rt.plural.as_str()),
        (
            "",
            "namespaces" | "services" | "persistentvolumeclaims" | "persistentvolumes" | "nodes"
        ) | ("apiregistration.k8s.io", "apiservices")
    )
}

/// How a write was made (for managedFields and server-side apply).
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `fieldManager`; defaults to `lifeboat-sim`.
    pub field_manager: Option<String>,
    /// Returns true if and only if the write is `Apply` (server-side apply) rather than `Update`.
    pub apply: bool,
    /// Validate and default but do not persist.
    pub dry_run: bool,
    /// For server-side apply: the fields the applied configuration owns (`FieldsV1`), recorded
    /// in this manager's managedFields entry.
    pub applied_fields: Option<Value>,
}

/// Options of a delete (the parts of `meta/v1 DeleteOptions` the simulator honours).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// Refuse (409) unless the object's uid is this.
    pub precondition_uid: Option<String>,
    /// Refuse (409) unless the object's resourceVersion is this.
    pub precondition_resource_version: Option<String>,
    /// `propagationPolicy: Orphan`: dependents lose their ownerReference instead of being
    /// collected.
    pub orphan: bool,
}

/// One stored object, kept only as its list-form serialization: a parsed `Value` costs several
/// times the bytes (a B-tree node per map), and lists, the hot path, need the bytes anyway.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) raw: Bytes,
}

impl Entry {
    /// The object parsed back, with apiVersion/kind.
    pub(crate) fn value(&self, rt: &ResourceType) -> Value {
        serde_json::from_slice(&full_form(rt, &self.raw)).unwrap_or(Value::Null)
    }
}

#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) rt: Arc<ResourceType>,
    pub(crate) objects: BTreeMap<(String, String), Entry>,
}

type TableKey = (String, String);

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) rv: u64,
    pub(crate) tables: HashMap<TableKey, Table>,
    pub(crate) history: VecDeque<StoreEvent>,
    /// uid -> (table, ns, name), for the garbage collector.
    pub(crate) uids: HashSet<String>,
    /// Objects with ownerReferences, for the garbage collector.
    /// (table, ns, name) -> the uids its ownerReferences name.
    pub(crate) dependents: HashMap<(TableKey, String, String), Vec<String>>,
    rng: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<StoreEvent>,
    catalogue: Catalogue,
    config: Arc<SimConfig>,
    cidr: (u32, u32),
}

/// The object store; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Store {
    shared: Arc<Shared>,
}

const EVENT_CAPACITY: usize = 1 << 14;

/// A namespace that objects of the cluster start with.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn parse_cidr(cidr: &str) -> Option<(u32, u32)> {
    let (ip, bits) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    if bits > 30 {
        return None;
    }
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    Some((u32::from(ip) & mask, mask))
}

impl Store {
    /// An empty store (no namespaces yet; see [`Store::bootstrap`]).
    pub fn new(catalogue: Catalogue, config: Arc<SimConfig>) -> Store {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let seed =
            jiff::Timestamp::now().as_nanosecond() as u64 ^ (std::process::id() as u64) << 32;
        let cidr = parse_cidr(&config.service_cidr).unwrap_or((0x0a60_0000, 0xffff_0000));
        Store {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    rv: 1,
                    tables: HashMap::new(),
                    history: VecDeque::new(),
                    uids: HashSet::new(),
                    dependents: HashMap::new(),
                    rng: seed | 1,
                }),
                events,
                catalogue,
                config,
                cidr,
            }),
        }
    }

    /// The catalogue this store resolves types with.
    pub fn catalogue(&self) -> &Catalogue {
        &self.shared.catalogue
    }

    /// The cluster configuration.
    pub fn config(&self) -> &Arc<SimConfig> {
        &self.shared.config
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The served definition of `rt`: semantics (status subresource, validation) come from the
    /// catalogue, not from whatever copy a caller built.
    fn canonical(&self, rt: &ResourceType) -> Arc<ResourceType> {
        self.shared
            .catalogue
            .find(&rt.group, &rt.plural)
            .unwrap_or_else(|| Arc::new(rt.clone()))
    }

    /// The current (latest committed) global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Every committed change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.shared.events.subscribe()
    }

    /// One object, or `None`.
    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Option<Value> {
        self.get_entry(rt, ns, name).map(|e| e.value(rt))
    }

    /// One object deserialized into a `k8s-openapi` type.
    pub fn get_typed<K>(&self, ns: Option<&str>, name: &str) -> Option<K>
    where
        K: k8s_openapi::Resource + k8s_openapi::ListableResource + serde::de::DeserializeOwned,
        K::Scope: super::catalogue::ScopeFlag,
    {
        let rt = ResourceType::of::<K>();
        let e = self.get_entry(&rt, ns, name)?;
        serde_json::from_slice(&full_form(&rt, &e.raw)).ok()
    }

    pub(crate) fn get_entry(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Entry> {
        let st = self.lock();
        st.tables
            .get(&tkey(rt))?
            .objects
            .get(&okey(rt, ns, name))
            .cloned()
    }

    /// Every object of a type, in one namespace or (with `None`) all of them, in key order.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
        // Copy the bytes out under the lock, parse outside it.
        let raws: Vec<Entry> = {
            let st = self.lock();
            let Some(t) = st.tables.get(&tkey(rt)) else {
                return Vec::new();
            };
            match ns.filter(|_| rt.namespaced) {
                Some(ns) => t
                    .objects
                    .range((ns.to_string(), String::new())..)
                    .take_while(|(k, _)| k.0 == ns)
                    .map(|(_, e)| e.clone())
                    .collect(),
                None => t.objects.values().cloned().collect(),
            }
        };
        raws.iter().map(|e| e.value(rt)).collect()
    }

    /// A page of entries after `after` (exclusive) in key order, filtered; returns the page,
    /// the resourceVersion it was read at, and the key to continue after if there is more.
    pub(crate) fn list_page(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        after: Option<(String, String)>,
        limit: Option<usize>,
        filter: Option<&dyn Fn(&Value) -> bool>,
    ) -> (Vec<Bytes>, u64, Option<(String, String)>) {
        use std::ops::Bound;
        let st = self.lock();
        let rv = st.rv;
        let Some(t) = st.tables.get(&tkey(rt)) else {
            return (Vec::new(), rv, None);
        };
        let ns = ns.filter(|_| rt.namespaced);
        let lower = match (&after, ns) {
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut last = None;
        for (k, e) in t.objects.range((lower, Bound::Unbounded)) {
            if let Some(ns) = ns
                && k.0 != ns
            {
                break;
            }
            if out.len() == limit {
                return (out, rv, last);
            }
            if filter.is_none_or(|f| f(&e.value(&t.rt))) {
                out.push(e.raw.clone());
            }
            last = Some(k.clone());
        }
        (out, rv, None)
    }

    /// Creates an object with the HTTP API's admission and defaulting.
    pub fn create(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        obj: Value,
    ) -> Result<Value, ApiError> {
        self.create_with(rt, ns, obj, &WriteOptions::default())
    }

    /// [`Store::create`] with write options.
    pub fn create_with(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let (_, obj) = self.create_entry(rt, ns, obj, opts)?;
        Ok((*obj).clone())
    }

    /// [`Store::create_with`] returning the stored entry (its cached serialization included).
    pub(crate) fn create_entry(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<(Entry, Arc<Value>), ApiError> {
        let rt = &*self.canonical(rt);
        if !obj.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        if meta_str(&obj, "resourceVersion").is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let body_ns = meta_str(&obj, "namespace").map(str::to_string);
        let ns: Option<String> = if rt.namespaced {
            match (ns, body_ns) {
                (Some(p), Some(b)) if !b.is_empty() && p != b => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(p), _) => Some(p.to_string()),
                (None, Some(b)) if !b.is_empty() => Some(b),
                _ => Some("default".to_string()),
            }
        } else {
            None
        };
        let mut st = self.lock();
        // Name, possibly generated.
        let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => {
                    let prefix = prefix.to_string();
                    loop {
                        let cand = format!("{prefix}{}", st.random_suffix());
                        let taken = st.tables.get(&tkey(rt)).is_some_and(|t| {
                            t.objects.contains_key(&okey(rt, ns.as_deref(), &cand))
                        });
                        if !taken {
                            break cand;
                        }
                    }
                }
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            },
        };
        validate_name(rt, &name)?;
        if let Some(ns) = &ns {
            check_namespace_open(&st, ns)?;
        }
        if st
            .tables
            .get(&tkey(rt))
            .is_some_and(|t| t.objects.contains_key(&okey(rt, ns.as_deref(), &name)))
        {
            return Err(ApiError::already_exists(rt, &name));
        }
        // Server-set metadata.
        let uid = st.uuid();
        let ts = now();
        {
            let o = obj.as_object_mut().expect("checked above");
            o.insert("apiVersion".into(), Value::String(rt.api_version()));
            o.insert("kind".into(), Value::String(rt.kind.clone()));
            let meta = o
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            if !meta.is_object() {
                *meta = Value::Object(Map::new());
            }
            let m = meta.as_object_mut().expect("object");
            m.insert("name".into(), Value::String(name.clone()));
            match &ns {
                Some(ns) => m.insert("namespace".into(), Value::String(ns.clone())),
                None => m.remove("namespace"),
            };
            m.insert("uid".into(), Value::String(uid));
            m.insert("creationTimestamp".into(), Value::String(ts.clone()));
            m.remove("deletionTimestamp");
            m.remove("selfLink");
            if (rt.has_status() || rt.custom) && !without_generation(rt) {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
            m.insert(
                "managedFields".into(),
                json!([managed_entry(rt, opts, &ts)]),
            );
            if rt.has_status() {
                o.remove("status");
            }
        }
        admit_create(self, &st, rt, &name, &mut obj)?;
        validate(rt, &name, &obj)?;
        if opts.dry_run {
            return Ok((
                Entry {
                    raw: list_form(rt, &obj),
                },
                Arc::new(obj),
            ));
        }
        let created = st.commit(self, rt, EventKind::Added, obj);
        // Namespaces come with their default ServiceAccount and root CA ConfigMap, like the
        // controllers of a real cluster create them.
        if rt.is("", "Namespace") {
            let cat = &self.shared.catalogue;
            if let Some(sa) = cat.find("", "serviceaccounts") {
                let sa_obj = json!({"metadata": {"name": "default"}});
                st.insert_default(self, &sa, &name, sa_obj);
            }
            if let Some(cm) = cat.find("", "configmaps") {
                let cm_obj = json!({"metadata": {"name": "kube-root-ca.crt"},
                    "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nc2ltdWxhdGVk\n-----END CERTIFICATE-----\n"}});
                st.insert_default(self, &cm, &name, cm_obj);
            }
        }
        Ok(created)
    }

    /// Replaces an object (namespace and name from its metadata); 409 if its resourceVersion is
    /// set and stale. Keeps the stored status for types with a status subresource.
    pub fn update(&self, rt: &ResourceType, obj: Value) -> Result<Value, ApiError> {
        self.update_with(rt, obj, &WriteOptions::default())
    }

    /// [`Store::update`] with write options.
    pub fn update_with(
        &self,
        rt: &ResourceType,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.write_existing(rt, obj, opts, false)
    }

    /// Replaces an object's status only (the `/status` subresource).
    pub fn update_status(&self, rt: &ResourceType, obj: Value) -> Result<Value, ApiError> {
        self.write_existing(rt, obj, &WriteOptions::default(), true)
    }

    /// Atomically reads, changes and writes an object (no conflict possible); `f` runs under
    /// the store lock, so keep it short and do not call the store from it.
    pub fn modify(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        self.modify_with(rt, ns, name, &WriteOptions::default(), false, f)
    }

    /// [`Store::modify`] for the status subresource.
    pub fn modify_status(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        self.modify_with(rt, ns, name, &WriteOptions::default(), true, f)
    }

    /// [`Store::modify`] with options; `status` selects the status subresource.
    pub fn modify_with(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &WriteOptions,
        status: bool,
        f: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        let rt = &*self.canonical(rt);
        let mut st = self.lock();
        let old = st
            .tables
            .get(&tkey(rt))
            .and_then(|t| t.objects.get(&okey(rt, ns, name)))
            .map(|e| Arc::new(e.value(rt)))
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let mut new = (*old).clone();
        f(&mut new)?;
        // The closure saw the current version, so the write cannot be stale.
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        st.write_locked(self, rt, &old, new, opts, status)
    }

    fn write_existing(
        &self,
        rt: &ResourceType,
        obj: Value,
        opts: &WriteOptions,
        status: bool,
    ) -> Result<Value, ApiError> {
        let rt = &*self.canonical(rt);
        let name = meta_str(&obj, "name")
            .ok_or_else(|| {
                ApiError::invalid(rt, "", "metadata.name", "Required value: name is required")
            })?
            .to_string();
        let ns = meta_str(&obj, "namespace").map(str::to_string);
        let mut st = self.lock();
        let old = st
            .tables
            .get(&tkey(rt))
            .and_then(|t| t.objects.get(&okey(rt, ns.as_deref(), &name)))
            .map(|e| Arc::new(e.value(rt)))
            .ok_or_else(|| ApiError::not_found(rt, &name))?;
        st.write_locked(self, rt, &old, obj, opts, status)
    }

    /// Deletes an object and returns its last state; with finalizers (or for a namespace) it
    /// only gets a `deletionTimestamp` and stays until they are gone. Dependents are collected
    /// in the background.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.delete_with(rt, ns, name, &DeleteOptions::default())
    }

    /// [`Store::delete`] with `DeleteOptions`: preconditions and the propagation policy
    /// (`Orphan` removes this owner from its dependents' ownerReferences first).
    pub fn delete_with(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let rt = &*self.canonical(rt);
        let mut st = self.lock();
        let old = st
            .tables
            .get(&tkey(rt))
            .and_then(|t| t.objects.get(&okey(rt, ns, name)))
            .map(|e| Arc::new(e.value(rt)))
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let uid = meta_str(&old, "uid").unwrap_or_default().to_string();
        if let Some(want) = opts.precondition_uid.as_deref()
            && want != uid
        {
            let mut e = ApiError::conflict(rt, name);
            e.message = format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {uid}",
                qualified(rt)
            );
            return Err(e);
        }
        let rv = meta_str(&old, "resourceVersion").unwrap_or_default();
        if let Some(want) = opts.precondition_resource_version.as_deref()
            && want != rv
        {
            let mut e = ApiError::conflict(rt, name);
            e.message = format!(
                "Operation cannot be fulfilled on {} \"{name}\": the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({rv}). The object might have been modified",
                qualified(rt)
            );
            return Err(e);
        }
        if opts.orphan {
            st.orphan_dependents(self, &uid);
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let is_ns = rt.is("", "Namespace");
        if is_ns && matches!(name, "default" | "kube-system" | "kube-public") {
            let mut e = ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ));
            e.details = Some(Box::new(json!({"name": name, "kind": "namespaces"})));
            return Err(e);
        }
        if has_finalizers || is_ns {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok((*old).clone());
            }
            let mut new = (*old).clone();
            new["metadata"]["deletionTimestamp"] = Value::String(now());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if is_ns {
                new["status"] = json!({"phase": "Terminating"});
            }
            let (_, v) = st.commit(self, rt, EventKind::Modified, new);
            return Ok((*v).clone());
        }
        Ok(st.remove(self, rt, ns, name))
    }

    /// Events after `rv` still in the history, or `None` if `rv` is older than the history.
    /// The receiver is subscribed under the same lock, so nothing falls between the two.
    pub(crate) fn watch_from(
        &self,
        rv: u64,
    ) -> Result<(Vec<StoreEvent>, broadcast::Receiver<StoreEvent>), u64> {
        let st = self.lock();
        let rx = self.shared.events.subscribe();
        let oldest = st
            .history
            .front()
            .map(|e| e.resource_version)
            .unwrap_or(st.rv + 1);
        // History holds every event > oldest-1; a client at rv needs all events > rv.
        if rv + 1 < oldest && rv < st.rv {
            return Err(oldest);
        }
        let past = st
            .history
            .iter()
            .filter(|e| e.resource_version > rv)
            .cloned()
            .collect();
        Ok((past, rx))
    }

    /// Inserts objects loaded from disk verbatim (no admission), keeping their resourceVersions.
    pub(crate) fn load(&self, rv: u64, objects: Vec<(Arc<ResourceType>, Value)>) {
        let mut st = self.lock();
        st.rv = st.rv.max(rv);
        for (rt, obj) in objects {
            let ns = meta_str(&obj, "namespace").map(str::to_string);
            let name = meta_str(&obj, "name").unwrap_or_default().to_string();
            st.index(&rt, ns.as_deref(), &name, &obj);
            let raw = list_form(&rt, &obj);
            st.tables
                .entry(tkey(&rt))
                .or_insert_with(|| Table {
                    rt: rt.clone(),
                    objects: BTreeMap::new(),
                })
                .objects
                .insert(okey(&rt, ns.as_deref(), &name), Entry { raw });
        }
    }

    /// Every stored object with its type (for persistence and the garbage collector).
    /// The cached serializations are copied (reference-counted) under the lock and serialized
    /// by the caller outside it.
    pub(crate) fn snapshot(&self) -> (u64, Vec<(Arc<ResourceType>, Bytes)>) {
        let st = self.lock();
        let mut out = Vec::new();
        for t in st.tables.values() {
            for e in t.objects.values() {
                out.push((t.rt.clone(), e.raw.clone()));
            }
        }
        (st.rv, out)
    }

    /// Deletes every object of a type, with DELETED events (its CRD was deleted).
    pub(crate) fn drop_table(&self, group: &str, plural: &str) {
        let mut st = self.lock();
        let tk = (group.to_string(), plural.to_string());
        let Some(t) = st.tables.get(&tk) else { return };
        let rt = t.rt.clone();
        let keys: Vec<(String, String)> = t.objects.keys().cloned().collect();
        for (ns, name) in keys {
            let ns = rt.namespaced.then_some(ns);
            st.remove(self, &rt, ns.as_deref(), &name);
        }
        st.tables.remove(&tk);
    }

    /// Objects whose ownerReferences all name uids that no longer exist.
    pub(crate) fn orphans(&self) -> Vec<(Arc<ResourceType>, Option<String>, String)> {
        let st = self.lock();
        let mut out = Vec::new();
        for ((tk, ns, name), owners) in &st.dependents {
            let Some(t) = st.tables.get(tk) else { continue };
            if !owners.iter().any(|u| st.uids.contains(u)) {
                let ns = t.rt.namespaced.then(|| ns.clone());
                out.push((t.rt.clone(), ns, name.clone()));
            }
        }
        out
    }
}

fn tkey(rt: &ResourceType) -> TableKey {
    (rt.group.clone(), rt.plural.clone())
}

fn okey(rt: &ResourceType, ns: Option<&str>, name: &str) -> (String, String) {
    let ns = if rt.namespaced {
        ns.unwrap_or("default")
    } else {
        ""
    };
    (ns.to_string(), name.to_string())
}

fn managed_entry(rt: &ResourceType, opts: &WriteOptions, ts: &str) -> Value {
    json!({
        "manager": opts.field_manager.as_deref().unwrap_or("lifeboat-sim"),
        "operation": if opts.apply { "Apply" } else { "Update" },
        "apiVersion": rt.api_version(),
        "time": ts,
        "fieldsType": "FieldsV1",
        "fieldsV1": opts.applied_fields.clone().unwrap_or_else(|| json!({})),
    })
}

/// The list form of an object: built-in list items carry no apiVersion/kind.
pub(crate) fn list_form(rt: &ResourceType, obj: &Value) -> Bytes {
    /// Serializes an object's fields except apiVersion/kind, without copying them.
    struct WithoutTypeMeta<'a>(&'a Map<String, Value>);
    impl serde::Serialize for WithoutTypeMeta<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap as _;
            let mut m = s.serialize_map(None)?;
            for (k, v) in self.0 {
                if k != "apiVersion" && k != "kind" {
                    m.serialize_entry(k, v)?;
                }
            }
            m.end()
        }
    }
    let bytes = match obj.as_object() {
        Some(_) if rt.custom => serde_json::to_vec(obj),
        Some(o) => serde_json::to_vec(&WithoutTypeMeta(o)),
        None => Ok(b"{}".to_vec()),
    };
    Bytes::from(bytes.unwrap_or_default())
}

/// The full wire form from a cached list form: splice apiVersion/kind back in front.
pub(crate) fn full_form(rt: &ResourceType, raw: &Bytes) -> Bytes {
    if rt.custom {
        return raw.clone();
    }
    let mut out = Vec::with_capacity(raw.len() + 64);
    out.extend_from_slice(b"{\"apiVersion\":");
    out.extend_from_slice(
        serde_json::to_string(&rt.api_version())
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b",\"kind\":");
    out.extend_from_slice(
        serde_json::to_string(&rt.kind)
            .unwrap_or_default()
            .as_bytes(),
    );
    if raw.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(&raw[1..]);
    Bytes::from(out)
}

fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let ok = name.len() <= 253
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    // Some built-in kinds (e.g. RBAC) accept colons; keep those permissive.
    if ok || rt.group == "rbac.authorization.k8s.io" {
        Ok(())
    } else {
        Err(ApiError::invalid(
            rt,
            name,
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

fn check_namespace_open(st: &State, ns: &str) -> Result<(), ApiError> {
    let entry = st
        .tables
        .get(&(String::new(), "namespaces".to_string()))
        .and_then(|t| {
            let e = t.objects.get(&(String::new(), ns.to_string()))?;
            Some(e.value(&t.rt))
        });
    match entry {
        None => Err(ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("namespaces \"{ns}\" not found"),
            details: Some(Box::new(json!({"name": ns, "kind": "namespaces"}))),
            retry_after: None,
        }),
        Some(e) if e.pointer("/metadata/deletionTimestamp").is_some() => {
            let mut err = ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ));
            err.details = Some(Box::new(json!({"name": ns, "kind": "namespaces",
                "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]})));
            Err(err)
        }
        Some(_) => Ok(()),
    }
}

/// Moves a Secret's write-only `stringData` into `data` (base64), as the API server does.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine as _;
    let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    let Some(sd) = sd.as_object() else { return };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in sd {
        let text = v.as_str().unwrap_or_default();
        obj["data"][k] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Schema validation: built-ins must decode as their `k8s-openapi` type (which catches wrong
/// types but fills in missing required fields), then the required fields restores trip over.
fn validate(rt: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    if let Some(Err(detail)) = rt.validate.map(|check| (check.0)(obj)) {
        let mut e = ApiError::invalid(rt, name, "", &detail);
        e.message = format!("{} \"{}\" is invalid: {}", rt.kind, name, detail);
        return Err(e);
    }
    let required = |ptr: &str, field: &str| -> Result<(), ApiError> {
        let present = obj.pointer(ptr).is_some_and(|v| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        });
        if present {
            Ok(())
        } else {
            Err(ApiError::invalid(rt, name, field, "Required value"))
        }
    };
    let containers = |base: &str| -> Result<(), ApiError> {
        let field = |f: &str| format!("{}.{f}", base.trim_start_matches('/').replace('/', "."));
        required(&format!("{base}/containers"), &field("containers"))?;
        let list = obj
            .pointer(&format!("{base}/containers"))
            .and_then(Value::as_array);
        for (i, c) in list.into_iter().flatten().enumerate() {
            for f in ["name", "image"] {
                if c.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        &field(&format!("containers[{i}].{f}")),
                        "Required value",
                    ));
                }
            }
        }
        Ok(())
    };
    let refs = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    for (i, r) in refs.into_iter().flatten().enumerate() {
        for f in ["apiVersion", "kind", "name", "uid"] {
            if r.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                let field = format!("metadata.ownerReferences[{i}].{f}");
                return Err(ApiError::invalid(rt, name, &field, "Required value"));
            }
        }
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => containers("/spec")?,
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet" | "DaemonSet") => {
            required("/spec/selector", "spec.selector")?;
            containers("/spec/template/spec")?;
            let selector = obj
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object);
            let labels = obj
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object);
            let matches = selector.is_none_or(|sel| {
                sel.iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            });
            if !matches {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec.template.metadata.labels",
                    "Invalid value: `selector` does not match template `labels`",
                ));
            }
        }
        ("batch", "Job") => containers("/spec/template/spec")?,
        ("batch", "CronJob") => {
            required("/spec/schedule", "spec.schedule")?;
            containers("/spec/jobTemplate/spec/template/spec")?;
        }
        ("", "PersistentVolumeClaim") => {
            required("/spec/accessModes", "spec.accessModes")?;
            required(
                "/spec/resources/requests/storage",
                "spec.resources[storage]",
            )?;
        }
        ("", "PersistentVolume") => {
            required("/spec/accessModes", "spec.accessModes")?;
            required("/spec/capacity/storage", "spec.capacity")?;
        }
        ("", "Service") => {
            let t = obj.pointer("/spec/type").and_then(Value::as_str);
            let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
            if t != Some("ExternalName") && !headless {
                required("/spec/ports", "spec.ports")?;
            }
        }
        ("storage.k8s.io", "StorageClass") => required("/provisioner", "provisioner")?,
        _ => {}
    }
    Ok(())
}

/// Per-type admission on create: defaults and validation that need the store.
fn admit_create(
    store: &Store,
    st: &State,
    rt: &ResourceType,
    name: &str,
    obj: &mut Value,
) -> Result<(), ApiError> {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            if let Some(m) = obj["metadata"].as_object_mut() {
                let labels = m.entry("labels").or_insert_with(|| json!({}));
                if labels.is_object() {
                    labels["kubernetes.io/metadata.name"] = Value::String(name.to_string());
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "PersistentVolume") => {
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "Pod") => {
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "Secret") => {
            fold_string_data(obj);
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
        }
        ("", "Service") => admit_service(store, st, rt, name, obj, None)?,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => admit_crd(rt, name, obj)?,
        ("apps", "StatefulSet" | "Deployment" | "DaemonSet") => default_rollout(rt, obj),
        _ => {}
    }
    Ok(())
}

/// The API server's defaults for how a workload rolls out (kubectl's `rollout status` reads
/// them: it refuses a StatefulSet without `updateStrategy.type`). Set only where absent.
fn default_rollout(rt: &ResourceType, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let (key, default) = match rt.kind.as_str() {
        "StatefulSet" => {
            spec.entry("podManagementPolicy")
                .or_insert_with(|| json!("OrderedReady"));
            (
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            )
        }
        "Deployment" => {
            spec.entry("progressDeadlineSeconds")
                .or_insert_with(|| json!(600));
            (
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            )
        }
        _ => (
            "updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
        ),
    };
    spec.entry(key).or_insert(default);
    spec.entry("revisionHistoryLimit")
        .or_insert_with(|| json!(10));
}

fn admit_crd(rt: &ResourceType, name: &str, obj: &mut Value) -> Result<(), ApiError> {
    let group = obj
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = obj
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if group.is_empty() || plural.is_empty() {
        return Err(ApiError::invalid(
            rt,
            name,
            "spec",
            "Required value: spec.group and spec.names.plural are required",
        ));
    }
    if name != format!("{plural}.{group}") {
        return Err(ApiError::invalid(
            rt,
            name,
            "metadata.name",
            &format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let served = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .is_some_and(|v| !v.is_empty());
    if !served {
        return Err(ApiError::invalid(
            rt,
            name,
            "spec.versions",
            "Required value: must have at least one version",
        ));
    }
    let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    obj["status"] = json!({
        "acceptedNames": names,
        "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
            "message": "no conflicts found", "lastTransitionTime": now()}],
        "storedVersions": [],
    });
    Ok(())
}

/// Service cluster IP and node port allocation; `old` is set on update.
fn admit_service(
    store: &Store,
    st: &State,
    rt: &ResourceType,
    name: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let ns = meta_str(obj, "namespace").unwrap_or("default").to_string();
    if obj.get("spec").is_none_or(|s| !s.is_object()) {
        obj["spec"] = json!({});
    }
    let stype = obj["spec"]
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    obj["spec"]["type"] = Value::String(stype.clone());
    // What other services hold.
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    if let Some(t) = st.tables.get(&(String::new(), "services".to_string())) {
        for ((ons, oname), e) in &t.objects {
            if *ons == ns && oname == name {
                continue;
            }
            let e = e.value(&t.rt);
            if let Some(ip) = e.pointer("/spec/clusterIP").and_then(Value::as_str) {
                ips.insert(ip.to_string());
            }
            for p in e
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                    ports.insert(n);
                }
            }
        }
    }
    let old_ip = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let given = obj["spec"]
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if stype == "ExternalName" {
        return Ok(());
    }
    let ip = match (given, old_ip) {
        (None, Some(old)) => old,
        (Some(g), Some(old)) if g != old => {
            return Err(ApiError::invalid(
                rt,
                name,
                "spec.clusterIPs[0]",
                &format!("Invalid value: []string{{\"{g}\"}}: may not change once set"),
            ));
        }
        (Some(g), Some(_)) => g,
        (Some(g), None) if g == "None" => g,
        (Some(g), None) => {
            let (base, mask) = store.shared.cidr;
            let parsed: Option<Ipv4Addr> = g.parse().ok();
            let inside = parsed.is_some_and(|ip| u32::from(ip) & mask == base);
            if !inside {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec.clusterIPs",
                    &format!(
                        "Invalid value: []string{{\"{g}\"}}: failed to allocate IP {g}: the provided IP ({g}) is not in the valid range. The range of valid IPs is {}",
                        store.shared.config.service_cidr
                    ),
                ));
            }
            if ips.contains(&g) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec.clusterIPs",
                    &format!(
                        "Invalid value: []string{{\"{g}\"}}: failed to allocate IP {g}: provided IP is already allocated"
                    ),
                ));
            }
            g
        }
        (None, None) => {
            let (base, mask) = store.shared.cidr;
            let size = (!mask).saturating_sub(1);
            let found = (1..=size)
                .map(|i| Ipv4Addr::from(base + i).to_string())
                .find(|c| !ips.contains(c));
            found.ok_or_else(|| {
                ApiError::internal(format!(
                    "failed to allocate a serviceIP: range is full ({})",
                    store.shared.config.service_cidr
                ))
            })?
        }
    };
    obj["spec"]["clusterIP"] = Value::String(ip.clone());
    obj["spec"]["clusterIPs"] = json!([ip]);
    if stype == "NodePort" || stype == "LoadBalancer" {
        let (lo, hi) = store.shared.config.node_port_range;
        let old_ports: Vec<Value> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut used_here = HashSet::new();
        if let Some(list) = obj["spec"].get_mut("ports").and_then(Value::as_array_mut) {
            for (i, p) in list.iter_mut().enumerate() {
                let keep = old_ports
                    .get(i)
                    .and_then(|o| o.get("nodePort"))
                    .and_then(Value::as_u64);
                let want = p.get("nodePort").and_then(Value::as_u64).or(keep);
                let port = match want {
                    Some(n) => {
                        if n < lo as u64 || n > hi as u64 {
                            return Err(ApiError::invalid(
                                rt,
                                name,
                                &format!("spec.ports[{i}].nodePort"),
                                &format!(
                                    "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                                ),
                            ));
                        }
                        if ports.contains(&n) || used_here.contains(&n) {
                            return Err(ApiError::invalid(
                                rt,
                                name,
                                &format!("spec.ports[{i}].nodePort"),
                                &format!("Invalid value: {n}: provided port is already allocated"),
                            ));
                        }
                        n
                    }
                    None => (lo as u64..=hi as u64)
                        .find(|n| !ports.contains(n) && !used_here.contains(n))
                        .ok_or_else(|| {
                            ApiError::internal("failed to allocate a nodePort: range is full")
                        })?,
                };
                used_here.insert(port);
                p["nodePort"] = json!(port);
            }
        }
    }
    Ok(())
}

/// Per-type admission on update: immutability rules.
fn admit_update(
    store: &Store,
    st: &State,
    rt: &ResourceType,
    name: &str,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "ConfigMap") | ("", "Secret") => {
            if rt.kind == "Secret" {
                fold_string_data(new);
            }
            if old.get("immutable").and_then(Value::as_bool) == Some(true) {
                for f in ["data", "binaryData", "immutable"] {
                    let changed = old.get(f) != new.get(f);
                    if changed {
                        return Err(ApiError::invalid(
                            rt,
                            name,
                            f,
                            "Forbidden: field is immutable when `immutable` is set",
                        ));
                    }
                }
            }
            if rt.kind == "Secret" {
                if new.get("type").is_none() {
                    new["type"] = old.get("type").cloned().unwrap_or(json!("Opaque"));
                }
                if old.get("type") != new.get("type") {
                    let t = new.get("type").and_then(Value::as_str).unwrap_or_default();
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        "type",
                        &format!("Invalid value: \"{t}\": field is immutable"),
                    ));
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            let strip = |v: &Value| {
                let mut s = v.get("spec").cloned().unwrap_or(json!({}));
                if let Some(r) = s
                    .pointer_mut("/resources/requests")
                    .and_then(Value::as_object_mut)
                {
                    r.remove("storage");
                }
                if let Some(o) = s.as_object_mut() {
                    o.remove("volumeAttributesClassName");
                }
                s
            };
            let mut old_spec = strip(old);
            let new_spec = strip(new);
            // Binding may fill an empty volumeName once.
            if old_spec
                .get("volumeName")
                .is_none_or(|v| v.as_str() == Some(""))
                && let Some(v) = new_spec.get("volumeName")
            {
                old_spec["volumeName"] = v.clone();
            }
            // Defaulting may fill storageClassName/volumeMode once.
            for f in ["storageClassName", "volumeMode"] {
                if old_spec.get(f).is_none()
                    && let Some(v) = new_spec.get(f)
                {
                    old_spec[f] = v.clone();
                }
            }
            if old_spec != new_spec {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec",
                    "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
        }
        ("apps", "StatefulSet") => {
            // Only these spec fields may change, as on a real API server.
            const MUTABLE: &[&str] = &[
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ];
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or(json!({}));
                if let Some(o) = spec.as_object_mut() {
                    o.retain(|k, _| !MUTABLE.contains(&k.as_str()));
                }
                spec
            };
            if strip(old) != strip(new) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec",
                    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet")
            if old.pointer("/spec/selector") != new.pointer("/spec/selector") =>
        {
            let v = new
                .pointer("/spec/selector")
                .cloned()
                .unwrap_or(Value::Null);
            return Err(ApiError::invalid(
                rt,
                name,
                "spec.selector",
                &format!("Invalid value: {v}: field is immutable"),
            ));
        }
        ("batch", "Job") => {
            for (ptr, field) in [
                ("/spec/selector", "spec.selector"),
                ("/spec/template", "spec.template"),
            ] {
                if old.pointer(ptr) != new.pointer(ptr) {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        field,
                        "Invalid value: field is immutable",
                    ));
                }
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            for f in [
                "parameters",
                "provisioner",
                "reclaimPolicy",
                "volumeBindingMode",
            ] {
                if old.get(f) != new.get(f) {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        f,
                        "Forbidden: updates to {f} are forbidden."
                            .replace("{f}", f)
                            .as_str(),
                    ));
                }
            }
        }
        ("", "Service") => admit_service(store, st, rt, name, new, Some(old))?,
        // The namespace lifecycle owns spec and status.phase.
        ("", "Namespace") if new.get("spec").is_none() => {
            new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
        }
        _ => {}
    }
    Ok(())
}

/// Everything but metadata and status, to decide whether generation moves.
fn spec_part(v: &Value) -> Vec<(&String, &Value)> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "kind" | "apiVersion")
                })
                .collect()
        })
        .unwrap_or_default()
}

impl State {
    fn next_rand(&mut self) -> u64 {
        // xorshift64*: uniqueness, not secrecy, is what names and uids need here.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uuid(&mut self) -> String {
        let a = self.next_rand();
        let b = self.next_rand();
        let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
        let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    fn random_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut r = self.next_rand();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
                r /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    fn index(&mut self, rt: &Arc<ResourceType>, ns: Option<&str>, name: &str, obj: &Value) {
        let key = okey(rt, ns, name);
        if let Some(uid) = meta_str(obj, "uid") {
            self.uids.insert(uid.to_string());
        }
        let owners: Vec<String> = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
            .collect();
        let dkey = (tkey(rt), key.0, key.1);
        if owners.is_empty() {
            self.dependents.remove(&dkey);
        } else {
            self.dependents.insert(dkey, owners);
        }
    }

    /// Stores `obj` with a new resourceVersion and broadcasts the event.
    fn commit(
        &mut self,
        store: &Store,
        rt: &ResourceType,
        kind: EventKind,
        mut obj: Value,
    ) -> (Entry, Arc<Value>) {
        self.rv += 1;
        let rv = self.rv;
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let ns = meta_str(&obj, "namespace").map(str::to_string);
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let table = self.tables.entry(tkey(rt)).or_insert_with(|| Table {
            rt: store
                .shared
                .catalogue
                .find(&rt.group, &rt.plural)
                .unwrap_or_else(|| Arc::new(rt.clone())),
            objects: BTreeMap::new(),
        });
        let rt_arc = table.rt.clone();
        let raw = list_form(rt, &obj);
        let obj = Arc::new(obj);
        table
            .objects
            .insert(okey(rt, ns.as_deref(), &name), Entry { raw: raw.clone() });
        self.index(&rt_arc, ns.as_deref(), &name, &obj);
        self.emit(store, kind, rt_arc, obj.clone(), raw.clone(), rv);
        (Entry { raw }, obj)
    }

    fn emit(
        &mut self,
        store: &Store,
        kind: EventKind,
        rt: Arc<ResourceType>,
        obj: Arc<Value>,
        raw: Bytes,
        rv: u64,
    ) {
        let ev = StoreEvent {
            kind,
            resource: rt,
            object: obj,
            resource_version: rv,
            raw,
        };
        let cap = store.shared.config.watch_history;
        if cap > 0 {
            if self.history.len() >= cap {
                self.history.pop_front();
            }
            self.history.push_back(ev.clone());
        }
        // No receivers is normal (nobody watching).
        let _ = store.shared.events.send(ev);
    }

    fn remove(&mut self, store: &Store, rt: &ResourceType, ns: Option<&str>, name: &str) -> Value {
        let key = okey(rt, ns, name);
        let Some(table) = self.tables.get_mut(&tkey(rt)) else {
            return Value::Null;
        };
        let rt_arc = table.rt.clone();
        let Some(e) = table.objects.remove(&key) else {
            return Value::Null;
        };
        let mut last = e.value(&rt_arc);
        if let Some(uid) = meta_str(&last, "uid") {
            self.uids.remove(uid);
        }
        self.dependents.remove(&(tkey(rt), key.0, key.1));
        self.rv += 1;
        let rv = self.rv;
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let raw = list_form(rt, &last);
        let last = Arc::new(last);
        self.emit(store, EventKind::Deleted, rt_arc, last.clone(), raw, rv);
        (*last).clone()
    }

    /// Removes ownerReferences to `uid` from every dependent (orphan propagation).
    fn orphan_dependents(&mut self, store: &Store, uid: &str) {
        let deps: Vec<_> = self
            .dependents
            .iter()
            .filter(|(_, owners)| owners.iter().any(|o| o == uid))
            .map(|(k, _)| k.clone())
            .collect();
        for (tk, ns, name) in deps {
            let Some(t) = self.tables.get(&tk) else {
                continue;
            };
            let rt = t.rt.clone();
            let Some(e) = t.objects.get(&(ns.clone(), name.clone())) else {
                continue;
            };
            let mut obj = e.value(&rt);
            let Some(refs) = obj
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            let before = refs.len();
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
            if refs.len() != before {
                if refs.is_empty()
                    && let Some(m) = obj["metadata"].as_object_mut()
                {
                    m.remove("ownerReferences");
                }
                self.commit(store, &rt, EventKind::Modified, obj);
            }
        }
    }

    fn insert_default(&mut self, store: &Store, rt: &ResourceType, ns: &str, mut obj: Value) {
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if self
            .tables
            .get(&tkey(rt))
            .is_some_and(|t| t.objects.contains_key(&okey(rt, Some(ns), &name)))
        {
            return;
        }
        let uid = self.uuid();
        let ts = now();
        obj["apiVersion"] = Value::String(rt.api_version());
        obj["kind"] = Value::String(rt.kind.clone());
        obj["metadata"]["namespace"] = Value::String(ns.to_string());
        obj["metadata"]["uid"] = Value::String(uid);
        obj["metadata"]["creationTimestamp"] = Value::String(ts.clone());
        let opts = WriteOptions {
            field_manager: Some("kube-controller-manager".into()),
            ..WriteOptions::default()
        };
        obj["metadata"]["managedFields"] = json!([managed_entry(rt, &opts, &ts)]);
        self.commit(store, rt, EventKind::Added, obj);
    }

    /// The shared tail of update, update_status and modify.
    fn write_locked(
        &mut self,
        store: &Store,
        rt: &ResourceType,
        old: &Arc<Value>,
        mut new: Value,
        opts: &WriteOptions,
        status: bool,
    ) -> Result<Value, ApiError> {
        let name = meta_str(old, "name").unwrap_or_default().to_string();
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|s| !s.is_empty())
            && Some(rv) != meta_str(old, "resourceVersion")
        {
            return Err(ApiError::conflict(rt, &name));
        }
        if let Some(uid) = meta_str(&new, "uid").filter(|s| !s.is_empty())
            && Some(uid) != meta_str(old, "uid")
        {
            return Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    qualified(rt),
                    name,
                    uid,
                    meta_str(old, "uid").unwrap_or_default()
                ),
                details: None,
                retry_after: None,
            });
        }
        if status {
            // The status subresource changes status only.
            let st = new.get("status").cloned();
            let mut merged = (**old).clone();
            match st {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(o) = merged.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            new = merged;
        } else {
            if rt.has_status() {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            admit_update(store, self, rt, &name, old, &mut new)?;
        }
        // Server-owned metadata survives whatever the client sent.
        {
            let ts = now();
            let o = new.as_object_mut().expect("checked above");
            o.insert("apiVersion".into(), Value::String(rt.api_version()));
            o.insert("kind".into(), Value::String(rt.kind.clone()));
            let meta = o.entry("metadata").or_insert_with(|| json!({}));
            if !meta.is_object() {
                *meta = json!({});
            }
            let om = old["metadata"].as_object().cloned().unwrap_or_default();
            let m = meta.as_object_mut().expect("object");
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match om.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            m.remove("selfLink");
            let old_gen = om.get("generation").and_then(Value::as_i64);
            match old_gen {
                Some(g) => m.insert("generation".into(), json!(g)),
                None => m.remove("generation"),
            };
            let mut mf: Vec<Value> = om
                .get("managedFields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let manager = opts.field_manager.as_deref().unwrap_or("lifeboat-sim");
            let op = if opts.apply { "Apply" } else { "Update" };
            mf.retain(|e| {
                !(e.get("manager").and_then(Value::as_str) == Some(manager)
                    && e.get("operation").and_then(Value::as_str) == Some(op))
            });
            let mut entry = managed_entry(rt, opts, &ts);
            if status {
                entry["subresource"] = json!("status");
            }
            mf.push(entry);
            m.insert("managedFields".into(), Value::Array(mf));
        }
        // generation moves when anything outside metadata and status changed.
        if !status
            && new.pointer("/metadata/generation").is_some()
            && spec_part(old) != spec_part(&new)
        {
            let g = new["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        validate(rt, &name, &new)?;
        if opts.dry_run {
            return Ok(new);
        }
        let terminating = new.pointer("/metadata/deletionTimestamp").is_some();
        let no_finalizers = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        let ns_done = !rt.is("", "Namespace")
            || new
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty());
        if terminating && no_finalizers && ns_done {
            let ns = meta_str(&new, "namespace").map(str::to_string);
            self.commit(store, rt, EventKind::Modified, new);
            return Ok(self.remove(store, rt, ns.as_deref(), &name));
        }
        Ok((*self.commit(store, rt, EventKind::Modified, new).1).clone())
    }
}

impl Store {
    /// Every namespaced object in `ns`, as (type, name), for the namespace finalizer.
    pub(crate) fn namespace_contents(&self, ns: &str) -> Vec<(Arc<ResourceType>, String)> {
        let st = self.lock();
        let mut out = Vec::new();
        for t in st.tables.values().filter(|t| t.rt.namespaced) {
            for (k, _) in t
                .objects
                .range((ns.to_string(), String::new())..)
                .take_while(|(k, _)| k.0 == ns)
            {
                out.push((t.rt.clone(), k.1.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_keeps_the_last_n() {
        assert_eq!(tail_lines(b"a\nb\nc\n".to_vec(), Some(2)), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\n".to_vec(), Some(5)), b"a\nb\n");
        assert_eq!(tail_lines(b"a\nb".to_vec(), None), b"a\nb");
        assert_eq!(tail_lines(Vec::new(), Some(1)), b"");
    }

    fn store() -> Store {
        let cat = Catalogue::builtin();
        let store = Store::new(cat.clone(), Arc::new(SimConfig::default()));
        let ns = cat.find("", "namespaces").expect("namespaces");
        store
            .create(&ns, None, json!({"metadata": {"name": "default"}}))
            .expect("namespace");
        store
    }

    #[test]
    fn create_defaults_and_broadcasts() {
        let s = store();
        let mut rx = s.subscribe();
        let cm = s.catalogue().find("", "configmaps").expect("cm");
        let v = s
            .create(&cm, Some("default"), json!({"metadata": {"name": "a"}}))
            .expect("create");
        assert_eq!(v["kind"], "ConfigMap");
        assert_eq!(v["metadata"]["namespace"], "default");
        assert!(v["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
        let ev = rx.try_recv().expect("event");
        assert_eq!(ev.kind, EventKind::Added);
        assert_eq!(ev.name(), "a");
        assert_eq!(
            ev.resource_version.to_string(),
            v["metadata"]["resourceVersion"]
        );
        // The list form drops apiVersion/kind; the full form splices them back.
        let raw: Value = serde_json::from_slice(&ev.raw).expect("raw");
        assert!(raw.get("kind").is_none());
        let full: Value = serde_json::from_slice(&full_form(&cm, &ev.raw)).expect("full");
        assert_eq!(full, v);
        assert!(s.get(&cm, Some("default"), "kube-root-ca.crt").is_some());
        let err = s
            .create(&cm, Some("nowhere"), json!({"metadata": {"name": "a"}}))
            .expect_err("missing namespace");
        assert!(err.is_not_found());
    }

    #[test]
    fn finalizers_hold_deletion_until_released() {
        let s = store();
        let cm = s.catalogue().find("", "configmaps").expect("cm");
        s.create(
            &cm,
            Some("default"),
            json!({"metadata": {"name": "f", "finalizers": ["x/y"]}}),
        )
        .expect("create");
        let deleting = s.delete(&cm, Some("default"), "f").expect("delete");
        assert!(deleting["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get(&cm, Some("default"), "f").is_some());
        let mut rx = s.subscribe();
        s.modify(&cm, Some("default"), "f", |o| {
            o["metadata"]["finalizers"] = json!([]);
            Ok(())
        })
        .expect("release");
        assert!(s.get(&cm, Some("default"), "f").is_none());
        let kinds: Vec<EventKind> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, vec![EventKind::Modified, EventKind::Deleted]);
    }

    #[test]
    fn status_and_spec_are_written_separately() {
        let s = store();
        let pvc = s
            .catalogue()
            .find("", "persistentvolumeclaims")
            .expect("pvc");
        let spec = json!({"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}});
        let created = s
            .create(
                &pvc,
                Some("default"),
                json!({"metadata": {"name": "c"}, "spec": spec, "status": {"phase": "Bound"}}),
            )
            .expect("create");
        assert_eq!(created["status"]["phase"], "Pending");
        let mut st = created.clone();
        st["status"]["phase"] = json!("Bound");
        st["spec"]["volumeName"] = json!("ignored-by-status-write");
        let after = s.update_status(&pvc, st).expect("status");
        assert_eq!(after["status"]["phase"], "Bound");
        assert!(after["spec"].get("volumeName").is_none());
        let mut upd = after.clone();
        upd["status"]["phase"] = json!("Lost");
        upd["spec"]["volumeName"] = json!("pv-1");
        let after = s.update(&pvc, upd).expect("spec update");
        assert_eq!(after["status"]["phase"], "Bound");
        assert_eq!(after["spec"]["volumeName"], "pv-1");
        // A stale write conflicts.
        let err = s.update(&pvc, created).expect_err("stale");
        assert!(err.is_conflict());
    }
}
