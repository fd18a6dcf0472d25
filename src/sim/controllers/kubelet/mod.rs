//! The kubelet of every simulated node.
//!
//! A pod bound to a node starts once the claims it mounts are Bound and the Secrets and
//! ConfigMaps it needs exist. Pods with a container whose image is the instance's
//! `lifeboat_image` (e.g. `lifeboat:dev`) are really run; every other pod just goes Running and
//! Ready without running anything.
//!
//! # How a lifeboat container runs
//! - The program is `SimConfig::lifeboat_bin`. A container `command` is honoured only when its
//!   first word names lifeboat (`lifeboat` or a path ending in `/lifeboat`): its other words go
//!   before `args`. Any other command fails the container with exit code 127, as a missing
//!   executable would. `$(VAR)` references in command and args expand from the container's env.
//! - The environment is the container's `envFrom` and `env` (plain values; `valueFrom`
//!   `secretKeyRef`, `configMapKeyRef` and `fieldRef` resolved from the store), plus `PATH`,
//!   `HOME` (a per-pod directory), `HOSTNAME` (the pod's name) and [`MOUNTS_ENV`]. Nothing
//!   else of the simulator's environment leaks in.
//! - The pod's volumes are host directories: a PVC's is its PV's `disk.csi.sim` directory; an
//!   `emptyDir` is a per-pod directory; `secret` and `configMap` volumes are materialised as
//!   files in a per-pod directory; a `hostPath` is that path. [`MOUNTS_ENV`] maps each mount
//!   path of the container to its host directory (see [`SimMount`]); lifeboat's `mover`
//!   translates in-pod paths through it with [`translate`].
//! - stdout and stderr go to `<state_dir>/logs/<ns>/<pod>/<container>.log`, which the API
//!   server serves as `pods/{name}/log`.
//! - Init containers run one after another, then the containers together. The pod is Running
//!   while they run, then Succeeded if every container exited 0, else Failed, with each
//!   container's `exitCode`. `restartPolicy` `Always` and `OnFailure` restart a container (after
//!   a second) and count `restartCount`. Containers of another image in such a pod are reported
//!   as exited 0 at once.
//! - Deleting the pod kills its processes; so does shutting the instance down. A pod found
//!   Running at start (the simulator was restarted while it ran) is marked Failed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

mod mountns;

use super::{
    Controller, Error, Kind, Objects, is_deleting, name, namespace, now, pod_finished, pod_phase,
    uid,
};

// The mount table protocol is the mover's (it reads it); the kubelet only writes it.
pub use crate::mover::mounts::{MOUNTS_ENV, SimMount, SimMounts, translate};

const COMPONENT: &str = "kubelet";

/// What the kubelet knows of a pod it has handled.
enum Handled {
    /// Its containers run; dropping or sending on the sender kills them.
    Running(watch::Sender<bool>),
    /// Started (a pod without lifeboat containers) or finished; nothing more to do.
    Done,
}

/// See the module doc.
pub(crate) struct Kubelet {
    /// By pod uid. Finished pods stay until the pod is gone, so a pass that listed the pod
    /// before its task wrote the final status does not take it for an orphan.
    /// A lifeboat pod found Running but not here was started by an earlier run of the
    /// simulator, and its processes died with it.
    pods: Arc<Mutex<HashMap<String, Handled>>>,
}

impl Kubelet {
    /// A kubelet for every node of the instance.
    pub(crate) fn new() -> Kubelet {
        Kubelet {
            pods: Arc::default(),
        }
    }
}

impl Controller for Kubelet {
    const NAME: &'static str = "kubelet";

    fn watches(&self) -> &'static [Kind] {
        &[
            Kind::Pod,
            Kind::Node,
            Kind::Pvc,
            Kind::Secret,
            Kind::ConfigMap,
        ]
    }

    async fn pass(&mut self, objects: &Objects) -> Result<(), Error> {
        let pods = objects.list(Kind::Pod, None).await?;
        let nodes: Vec<Value> = objects.list(Kind::Node, None).await?;
        // Forget pods that are gone; kill the processes of pods that are being deleted.
        {
            let live: HashMap<&str, &Value> = pods.iter().map(|p| (uid(p), p)).collect();
            let mut handled = self.pods.lock().unwrap_or_else(|e| e.into_inner());
            handled.retain(|id, h| match live.get(id.as_str()) {
                Some(p) if !is_deleting(p) => true,
                _ => {
                    if let Handled::Running(kill) = h {
                        let _ = kill.send(true);
                    }
                    false
                }
            });
        }
        let mut result = Ok(());
        for pod in &pods {
            let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
            // A pod bound to a node that does not exist stays Pending, as no kubelet runs it.
            // Against a real API server, only the agent's own nodes are this kubelet's.
            let ours = nodes.iter().any(|n| name(n) == node)
                && (!objects.is_real() || objects.config().nodes.iter().any(|n| n == node));
            if ours && is_deleting(pod) {
                // Its processes were killed above; a real API server waits for this.
                if let Err(e) = objects.confirm_pod_deletion(pod).await {
                    result = Err(e);
                }
                continue;
            }
            if !ours || pod_finished(pod) {
                continue;
            }
            if self
                .pods
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(uid(pod))
            {
                continue;
            }
            if let Err(e) = self.start(objects, pod).await {
                result = Err(e);
            }
        }
        result
    }
}

/// Returns true if and only if the pod has a container (or init container) that runs lifeboat.
fn runs_lifeboat(pod: &Value, image: &str) -> bool {
    containers(pod, "initContainers")
        .chain(containers(pod, "containers"))
        .any(|c| is_lifeboat(c, image))
}

/// Whether the kubelet runs this container: its image is the configured lifeboat image, or any
/// tag of a `…/lifeboat` repository (the image lifeboat's own mover Jobs use by default).
fn is_lifeboat(c: &Value, image: &str) -> bool {
    let Some(i) = c["image"].as_str() else {
        return false;
    };
    if i == image {
        return true;
    }
    // The last path segment without its tag or digest (a registry's `:port` is in an earlier one).
    let last = i.rsplit('/').next().unwrap_or(i);
    let name = last.split([':', '@']).next().unwrap_or(last);
    i.contains('/') && name == "lifeboat"
}

fn containers<'a>(pod: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
    pod["spec"][field].as_array().into_iter().flatten()
}

impl Kubelet {
    async fn start(&mut self, objects: &Objects, pod: &Value) -> Result<(), Error> {
        let image = objects.config().lifeboat_image.clone();
        let lifeboat = runs_lifeboat(pod, &image);
        if pod_phase(pod) == "Running" {
            if lifeboat {
                // Not started by this kubelet: its processes died with the previous simulator.
                objects
                    .modify_status(Kind::Pod, pod, |p| {
                        p["status"]["phase"] = json!("Failed");
                        p["status"]["reason"] = json!("NodeRestarted");
                        p["status"]["message"] = json!("the simulator restarted while the pod ran");
                    })
                    .await?;
            }
            self.mark(pod, Handled::Done);
            return Ok(());
        }
        let prepared = match prepare(objects, pod).await {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => {
                waiting(objects, pod, &why).await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if !lifeboat {
            // Containers of other images run nothing: a Job's pod has done its work at once
            // (Succeeded, as a kubelet reports containers that exited 0); others keep running.
            let finished = owned_by_job(pod);
            objects
                .modify_status(Kind::Pod, pod, |p| {
                    set_running(p, &prepared.ip, None);
                    if finished {
                        set_succeeded(p);
                    }
                })
                .await?;
            self.mark(pod, Handled::Done);
            return Ok(());
        }
        let (kill, killed) = watch::channel(false);
        self.mark(pod, Handled::Running(kill));
        let objects = objects.clone();
        let pods = self.pods.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            let id = uid(&pod).to_owned();
            run_pod(&objects, &pod, prepared, killed).await;
            let mut handled = pods.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = handled.get_mut(&id) {
                *h = Handled::Done;
            }
        });
        Ok(())
    }

    fn mark(&self, pod: &Value, h: Handled) {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid(pod).to_owned(), h);
    }
}

/// Records why a pod cannot start yet: a Pending status with ContainerCreating containers and
/// a FailedMount (or Failed) Event, once per reason.
async fn waiting(objects: &Objects, pod: &Value, why: &str) -> Result<(), Error> {
    if pod["status"]["message"] != why {
        objects.modify_status(Kind::Pod, pod, |p| {
            p["status"]["phase"] = json!("Pending");
            p["status"]["message"] = json!(why);
            let statuses: Vec<Value> = containers(p, "containers")
                .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false, "started": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}))
                .collect();
            p["status"]["containerStatuses"] = json!(statuses);
        }).await?;
    }
    objects
        .event(Kind::Pod, pod, true, "FailedMount", why, COMPONENT)
        .await
}

/// Everything a pod's run needs, resolved from the store before it starts.
struct Prepared {
    ip: String,
    /// Volume name → host directory and whether the volume itself is read-only.
    volumes: HashMap<String, PathBuf>,
    /// Container name → resolved env.
    env: HashMap<String, Vec<(String, String)>>,
    home: PathBuf,
}

/// Resolves a pod's volumes and env: Ok(Err(reason)) when something it needs is not there yet.
async fn prepare(objects: &Objects, pod: &Value) -> Result<Result<Prepared, String>, Error> {
    let ns = namespace(pod).unwrap_or("default");
    let state = &objects.config().state_dir;
    let pod_dir = state.join("pods").join(uid(pod));
    let h = Sha256::digest(uid(pod).as_bytes());
    let ip = format!("10.244.{}.{}", h[0], h[1] % 250 + 2);
    let io = |phase: &'static str| {
        let pod = format!("{ns}/{}", name(pod));
        move |source| Error::Kubelet { phase, pod, source }
    };
    let mut volumes = HashMap::new();
    for vol in containers(pod, "volumes") {
        let vname = vol["name"].as_str().unwrap_or("").to_owned();
        let dir = if let Some(claim) = vol["persistentVolumeClaim"]["claimName"].as_str() {
            let Some(pvc) = objects.get(Kind::Pvc, Some(ns), claim).await? else {
                return Ok(Err(format!("persistentvolumeclaim {claim:?} not found")));
            };
            if pvc["status"]["phase"] != "Bound" {
                return Ok(Err(format!("persistentvolumeclaim {claim:?} is not bound")));
            }
            let pv = pvc["spec"]["volumeName"].as_str().unwrap_or("");
            let handle = objects.get(Kind::Pv, None, pv).await?.and_then(|pv| {
                pv["spec"]["csi"]["volumeHandle"]
                    .as_str()
                    .or(pv["spec"]["hostPath"]["path"].as_str())
                    .map(PathBuf::from)
            });
            let Some(handle) = handle else {
                return Ok(Err(format!(
                    "volume {pv:?} of claim {claim:?} has no host directory"
                )));
            };
            handle
        } else if let Some(path) = vol["hostPath"]["path"].as_str() {
            PathBuf::from(path)
        } else {
            let dir = pod_dir.join("volumes").join(&vname);
            std::fs::create_dir_all(&dir).map_err(io("create volume directory"))?;
            let files = if vol["secret"].is_object() {
                let secret = vol["secret"]["secretName"].as_str().unwrap_or("");
                match objects.get(Kind::Secret, Some(ns), secret).await? {
                    Some(s) => Some((data_of(&s), &vol["secret"])),
                    None if vol["secret"]["optional"] == true => None,
                    None => {
                        return Ok(Err(format!(
                            "MountVolume.SetUp failed for volume {vname:?} : secret {secret:?} not found"
                        )));
                    }
                }
            } else if vol["configMap"].is_object() {
                let cm = vol["configMap"]["name"].as_str().unwrap_or("");
                match objects.get(Kind::ConfigMap, Some(ns), cm).await? {
                    Some(c) => Some((data_of(&c), &vol["configMap"])),
                    None if vol["configMap"]["optional"] == true => None,
                    None => {
                        return Ok(Err(format!(
                            "MountVolume.SetUp failed for volume {vname:?} : configmap {cm:?} not found"
                        )));
                    }
                }
            } else if vol["projected"].is_object() {
                match projected(objects, pod, &vol["projected"]).await? {
                    Ok(files) => Some((files, &Value::Null)),
                    Err(why) => {
                        return Ok(Err(format!(
                            "MountVolume.SetUp failed for volume {vname:?} : {why}"
                        )));
                    }
                }
            } else {
                None // emptyDir and anything else: an empty directory
            };
            if let Some((data, source)) = files {
                let items = source["items"].as_array();
                for (key, bytes) in data {
                    let rel = match items {
                        Some(items) => match items.iter().find(|i| i["key"] == key.as_str()) {
                            Some(i) => i["path"].as_str().unwrap_or(&key).to_owned(),
                            None => continue,
                        },
                        None => key.clone(),
                    };
                    let file = dir.join(rel);
                    if let Some(parent) = file.parent() {
                        std::fs::create_dir_all(parent).map_err(io("materialise volume"))?;
                    }
                    std::fs::write(&file, bytes).map_err(io("materialise volume"))?;
                }
            }
            dir
        };
        volumes.insert(vname, dir);
    }
    let mut env = HashMap::new();
    for c in containers(pod, "initContainers").chain(containers(pod, "containers")) {
        match container_env(objects, pod, c, &ip).await? {
            Ok(e) => {
                env.insert(c["name"].as_str().unwrap_or("").to_owned(), e);
            }
            Err(why) => return Ok(Err(why)),
        }
    }
    let home = pod_dir.join("home");
    std::fs::create_dir_all(&home).map_err(io("create home directory"))?;
    Ok(Ok(Prepared {
        ip,
        volumes,
        env,
        home,
    }))
}

/// The files of a `projected` volume (what the ServiceAccount admission plugin gives every pod
/// for its API credentials): a bound service-account token from the TokenRequest API, ConfigMap
/// and Secret keys, and downward-API fields. Err(reason) when a source is missing.
async fn projected(
    objects: &Objects,
    pod: &Value,
    spec: &Value,
) -> Result<Result<Vec<(String, Vec<u8>)>, String>, Error> {
    let ns = namespace(pod).unwrap_or("default");
    let mut files = Vec::new();
    for src in spec["sources"].as_array().into_iter().flatten() {
        if let Some(path) = src["serviceAccountToken"]["path"].as_str() {
            let sa = pod["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default");
            match objects
                .service_account_token(pod, sa, &src["serviceAccountToken"])
                .await?
            {
                Some(token) => files.push((path.to_owned(), token.into_bytes())),
                None => return Ok(Err(format!("no token for service account {ns}/{sa}"))),
            }
            continue;
        }
        let (kind, r) = if src["secret"].is_object() {
            (Kind::Secret, &src["secret"])
        } else if src["configMap"].is_object() {
            (Kind::ConfigMap, &src["configMap"])
        } else {
            for item in src["downwardAPI"]["items"].as_array().into_iter().flatten() {
                let value = field_ref(
                    pod,
                    item["fieldRef"]["fieldPath"].as_str().unwrap_or(""),
                    "",
                );
                files.push((
                    item["path"].as_str().unwrap_or("").to_owned(),
                    value.into_bytes(),
                ));
            }
            continue;
        };
        let src_name = r["name"].as_str().unwrap_or("");
        let Some(obj) = objects.get(kind, Some(ns), src_name).await? else {
            if r["optional"] == true {
                continue;
            }
            return Ok(Err(format!(
                "{} {src_name:?} not found",
                kind.kind().to_lowercase()
            )));
        };
        let items = r["items"].as_array();
        for (key, bytes) in data_of(&obj) {
            let rel = match items {
                Some(items) => match items.iter().find(|i| i["key"] == key.as_str()) {
                    Some(i) => i["path"].as_str().unwrap_or(&key).to_owned(),
                    None => continue,
                },
                None => key,
            };
            files.push((rel, bytes));
        }
    }
    Ok(Ok(files))
}

/// The data of a Secret (base64-decoded) or ConfigMap (`data` and `binaryData`).
fn data_of(obj: &Value) -> Vec<(String, Vec<u8>)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let secret = obj["kind"] == "Secret";
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let s = v.as_str().unwrap_or("");
        let bytes = if secret {
            b64.decode(s).unwrap_or_default()
        } else {
            s.as_bytes().to_vec()
        };
        out.push((k.clone(), bytes));
    }
    for field in ["binaryData"] {
        for (k, v) in obj[field].as_object().into_iter().flatten() {
            out.push((
                k.clone(),
                b64.decode(v.as_str().unwrap_or("")).unwrap_or_default(),
            ));
        }
    }
    for (k, v) in obj["stringData"].as_object().into_iter().flatten() {
        out.push((k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec()));
    }
    out
}

/// A container's env in order: envFrom, then env, as the real kubelet builds it.
async fn container_env(
    objects: &Objects,
    pod: &Value,
    c: &Value,
    ip: &str,
) -> Result<Result<Vec<(String, String)>, String>, Error> {
    let ns = namespace(pod).unwrap_or("default");
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        out.retain(|(x, _)| *x != k);
        out.push((k, v));
    };
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or("");
        let (kind, r) = if from["secretRef"].is_object() {
            (Kind::Secret, &from["secretRef"])
        } else {
            (Kind::ConfigMap, &from["configMapRef"])
        };
        let src = r["name"].as_str().unwrap_or("");
        match objects.get(kind, Some(ns), src).await? {
            Some(obj) => {
                for (k, v) in data_of(&obj) {
                    set(
                        &mut out,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if r["optional"] == true => {}
            None => {
                return Ok(Err(format!(
                    "Error: {} {src:?} not found",
                    kind.kind().to_lowercase()
                )));
            }
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().unwrap_or("").to_owned();
        if let Some(v) = e["value"].as_str() {
            let v = expand(v, &out);
            set(&mut out, key, v);
            continue;
        }
        let from = &e["valueFrom"];
        let (kind, r) = if from["secretKeyRef"].is_object() {
            (Some(Kind::Secret), &from["secretKeyRef"])
        } else if from["configMapKeyRef"].is_object() {
            (Some(Kind::ConfigMap), &from["configMapKeyRef"])
        } else {
            (None, &from["fieldRef"])
        };
        let value = match kind {
            Some(kind) => {
                let src = r["name"].as_str().unwrap_or("");
                let wanted = r["key"].as_str().unwrap_or("");
                let found = objects
                    .get(kind, Some(ns), src)
                    .await?
                    .and_then(|obj| data_of(&obj).into_iter().find(|(k, _)| k == wanted))
                    .map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
                match found {
                    Some(v) => v,
                    None if r["optional"] == true => continue,
                    None => {
                        return Ok(Err(format!(
                            "Error: couldn't find key {wanted} in {} {ns}/{src}",
                            kind.kind()
                        )));
                    }
                }
            }
            None => field_ref(pod, r["fieldPath"].as_str().unwrap_or(""), ip),
        };
        set(&mut out, key, value);
    }
    Ok(Ok(out))
}

/// The value of a downward-API `fieldRef`.
fn field_ref(pod: &Value, path: &str, ip: &str) -> String {
    let meta = &pod["metadata"];
    let label = |field: &str, key: &str| meta[field][key].as_str().unwrap_or("").to_owned();
    match path {
        "metadata.name" => name(pod).to_owned(),
        "metadata.namespace" => namespace(pod).unwrap_or("").to_owned(),
        "metadata.uid" => uid(pod).to_owned(),
        "spec.nodeName" => pod["spec"]["nodeName"].as_str().unwrap_or("").to_owned(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_owned(),
        "status.podIP" | "status.podIPs" => ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_owned(),
        p => {
            let keyed = |prefix: &str| {
                p.strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix("['"))
                    .and_then(|r| r.strip_suffix("']"))
                    .map(str::to_owned)
            };
            if let Some(k) = keyed("metadata.labels") {
                label("labels", &k)
            } else if let Some(k) = keyed("metadata.annotations") {
                label("annotations", &k)
            } else {
                String::new()
            }
        }
    }
}

/// Expands `$(VAR)` from `env` as the kubelet does; `$$` escapes `$`, unknown references stay.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let var = &body[..end];
            match env.iter().rev().find(|(k, _)| k == var) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(var);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A container's status entry.
fn container_status(c: &Value, state: Value, ready: bool, restarts: i64) -> Value {
    let running = state.get("running").is_some();
    json!({
        "name": c["name"],
        "image": c["image"],
        "imageID": format!("sim://{}", c["image"].as_str().unwrap_or("")),
        "containerID": format!("sim://{}", c["name"].as_str().unwrap_or("")),
        "ready": ready,
        "started": running,
        "restartCount": restarts,
        "state": state,
    })
}

fn conditions(ready: bool, initialized: bool) -> Value {
    let t = now();
    let s = |b: bool| if b { "True" } else { "False" };
    json!([
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
        {"type": "Initialized", "status": s(initialized), "lastTransitionTime": t},
        {"type": "Ready", "status": s(ready), "lastTransitionTime": t},
        {"type": "ContainersReady", "status": s(ready), "lastTransitionTime": t},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
    ])
}

/// Sets a pod Running and Ready; `statuses` replaces the container statuses (None: every
/// container running).
fn set_running(p: &mut Value, ip: &str, statuses: Option<Vec<Value>>) {
    let t = now();
    let statuses = statuses.unwrap_or_else(|| {
        containers(p, "containers")
            .map(|c| container_status(c, json!({"running": {"startedAt": t}}), true, 0))
            .collect()
    });
    let inits: Vec<Value> = containers(p, "initContainers")
        .map(|c| container_status(c, json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}}), false, 0))
        .collect();
    let st = &mut p["status"];
    if !st.is_object() {
        *st = json!({});
    }
    st["phase"] = json!("Running");
    st["conditions"] = conditions(true, true);
    st["hostIP"] = json!("127.0.0.1");
    st["hostIPs"] = json!([{"ip": "127.0.0.1"}]);
    st["podIP"] = json!(ip);
    st["podIPs"] = json!([{"ip": ip}]);
    // A real API server sets the QoS class at creation and refuses to change it.
    if st["qosClass"].is_null() {
        st["qosClass"] = json!("BestEffort");
    }
    if st["startTime"].is_null() {
        st["startTime"] = json!(t);
    }
    if let Some(o) = st.as_object_mut() {
        o.remove("message");
        o.remove("reason");
    }
    st["containerStatuses"] = json!(statuses);
    if !inits.is_empty() {
        st["initContainerStatuses"] = json!(inits);
    }
}

/// Returns true if and only if a Job controls the pod.
fn owned_by_job(pod: &Value) -> bool {
    pod["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["kind"] == "Job" && r["controller"] == true)
        })
}

/// Marks a started pod Succeeded: every container exited 0, as the kubelet reports a finished
/// Job pod.
fn set_succeeded(p: &mut Value) {
    let t = now();
    let statuses: Vec<Value> = containers(p, "containers")
        .map(|c| {
            let done = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}});
            container_status(c, done, false, 0)
        })
        .collect();
    p["status"]["phase"] = json!("Succeeded");
    p["status"]["conditions"] = completed_conditions();
    p["status"]["containerStatuses"] = json!(statuses);
}

/// The conditions of a pod whose containers have all ended.
fn completed_conditions() -> Value {
    let mut conds = conditions(false, true);
    for c in conds.as_array_mut().into_iter().flatten() {
        if c["type"] == "Ready" || c["type"] == "ContainersReady" {
            c["reason"] = json!("PodCompleted");
        }
    }
    conds
}

/// Runs a lifeboat pod to its end (or until it is killed) and writes its statuses.
async fn run_pod(
    objects: &Objects,
    pod: &Value,
    prepared: Prepared,
    mut killed: watch::Receiver<bool>,
) {
    let pod_key = format!("{}/{}", namespace(pod).unwrap_or("default"), name(pod));
    let image = objects.config().lifeboat_image.clone();
    let policy = pod["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_owned();
    let t0 = now();
    // Init containers, one after another.
    let inits: Vec<Value> = containers(pod, "initContainers").cloned().collect();
    let mut init_statuses: Vec<Value> = inits
        .iter()
        .map(|c| {
            container_status(
                c,
                json!({"waiting": {"reason": "PodInitializing"}}),
                false,
                0,
            )
        })
        .collect();
    for (i, c) in inits.iter().enumerate() {
        init_statuses[i] = container_status(c, json!({"running": {"startedAt": t0}}), false, 0);
        write_pod_status(objects, pod, &pod_key, |p| {
            p["status"]["phase"] = json!("Pending");
            p["status"]["conditions"] = conditions(false, false);
            p["status"]["initContainerStatuses"] = json!(init_statuses);
        })
        .await;
        let Some(exit) =
            run_container(objects, pod, c, &prepared, &image, "Never", &mut killed).await
        else {
            return;
        };
        init_statuses[i] = container_status(c, exit.state(), false, 0);
        if exit.code != 0 {
            write_pod_status(objects, pod, &pod_key, |p| {
                p["status"]["phase"] = json!("Failed");
                p["status"]["conditions"] = conditions(false, false);
                p["status"]["initContainerStatuses"] = json!(init_statuses);
            })
            .await;
            return;
        }
    }
    // The containers, together.
    let main: Vec<Value> = containers(pod, "containers").cloned().collect();
    let started = now();
    let initial: Vec<Value> = main
        .iter()
        .map(|c| {
            if is_lifeboat(c, &image) {
                container_status(c, json!({"running": {"startedAt": started}}), true, 0)
            } else {
                container_status(c, json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started}}), false, 0)
            }
        })
        .collect();
    write_pod_status(objects, pod, &pod_key, |p| {
        set_running(p, &prepared.ip, Some(initial.clone()));
        if !init_statuses.is_empty() {
            p["status"]["initContainerStatuses"] = json!(init_statuses);
        }
    })
    .await;
    tracing::info!(pod = %pod_key, "kubelet started lifeboat pod");
    let runs = main
        .iter()
        .enumerate()
        .filter(|(_, c)| is_lifeboat(c, &image))
        .map(|(i, c)| {
            let mut killed = killed.clone();
            let prepared = &prepared;
            let image = &image;
            let policy = &policy;
            async move {
                let exit =
                    run_container(objects, pod, c, prepared, image, policy, &mut killed).await;
                (i, exit)
            }
        });
    let exits = futures::future::join_all(runs).await;
    if exits.iter().any(|(_, e)| e.is_none()) {
        return; // killed: the pod is being deleted or the instance stops
    }
    let mut statuses = initial;
    let mut ok = true;
    for (i, exit) in exits {
        let exit = exit.expect("checked above");
        ok &= exit.code == 0;
        statuses[i] = container_status(&main[i], exit.state(), false, exit.restarts);
    }
    let phase = if ok { "Succeeded" } else { "Failed" };
    tracing::info!(pod = %pod_key, phase, "kubelet: lifeboat pod finished");
    write_pod_status(objects, pod, &pod_key, |p| {
        p["status"]["phase"] = json!(phase);
        p["status"]["conditions"] = completed_conditions();
        p["status"]["containerStatuses"] = json!(statuses.clone());
    })
    .await;
}

/// Writes a pod's status through `f`; a failure is logged (the next pass tries again).
async fn write_pod_status(objects: &Objects, pod: &Value, pod_key: &str, f: impl Fn(&mut Value)) {
    if let Err(e) = objects.modify_status(Kind::Pod, pod, f).await {
        tracing::warn!(pod = %pod_key, error = %super::error_chain(&e), "kubelet could not write the pod's status");
    }
}

/// How a container ended.
struct Exit {
    code: i32,
    started: String,
    finished: String,
    restarts: i64,
    message: Option<String>,
}

impl Exit {
    fn state(&self) -> Value {
        let mut t = json!({
            "exitCode": self.code,
            "reason": if self.code == 0 { "Completed" } else { "Error" },
            "startedAt": self.started,
            "finishedAt": self.finished,
            "containerID": "",
        });
        if let Some(m) = &self.message {
            t["message"] = json!(m);
        }
        json!({"terminated": t})
    }
}

/// Runs one container, restarting it as `policy` says, until it ends for good (Some) or the pod
/// is killed (None).
async fn run_container(
    objects: &Objects,
    pod: &Value,
    c: &Value,
    prepared: &Prepared,
    image: &str,
    policy: &str,
    killed: &mut watch::Receiver<bool>,
) -> Option<Exit> {
    if !is_lifeboat(c, image) {
        let t = now();
        return Some(Exit {
            code: 0,
            started: t.clone(),
            finished: t,
            restarts: 0,
            message: None,
        });
    }
    let mut restarts = 0;
    loop {
        let mut exit = run_once(objects, pod, c, prepared, killed).await?;
        exit.restarts = restarts;
        let again = match policy {
            "Always" => true,
            "OnFailure" => exit.code != 0,
            _ => false,
        };
        if !again {
            return Some(exit);
        }
        restarts += 1;
        let last = exit.state();
        let cname = c["name"].clone();
        let _ = objects
            .modify_status(Kind::Pod, pod, |p| {
                for s in p["status"]["containerStatuses"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    if s["name"] == cname {
                        s["restartCount"] = json!(restarts);
                        s["lastState"] = last.clone();
                    }
                }
            })
            .await;
        // The real kubelet backs off at least 10 s; a second keeps tests quick.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = killed.changed() => return None,
            _ = objects.shutdown().wait() => return None,
        }
    }
}

/// Starts the lifeboat process of a container once and waits for it.
async fn run_once(
    objects: &Objects,
    pod: &Value,
    c: &Value,
    prepared: &Prepared,
    killed: &mut watch::Receiver<bool>,
) -> Option<Exit> {
    let cfg = objects.config();
    let ns = namespace(pod).unwrap_or("default");
    let cname = c["name"].as_str().unwrap_or("");
    let started = now();
    let log = objects.log_path(ns, name(pod), cname);
    let fail = |message: String| {
        let t = now();
        tracing::warn!(pod = %format!("{ns}/{}", name(pod)), container = cname, "{message}");
        Some(Exit {
            code: 128,
            started: started.clone(),
            finished: t,
            restarts: 0,
            message: Some(message),
        })
    };
    let env = prepared.env.get(cname).cloned().unwrap_or_default();
    let mut argv: Vec<String> = Vec::new();
    let command: Vec<&str> = super::str_list(&c["command"]);
    if let Some((first, rest)) = command.split_first() {
        if *first != "lifeboat" && !first.ends_with("/lifeboat") {
            let message = format!(
                "exec: {first:?}: executable file not found in $PATH (the simulated kubelet runs only lifeboat)"
            );
            let _ = write_log(&log, &message);
            let mut exit = fail(message)?;
            exit.code = 127;
            return Some(exit);
        }
        argv.extend(rest.iter().map(|a| expand(a, &env)));
    }
    argv.extend(
        super::str_list(&c["args"])
            .into_iter()
            .map(|a| expand(a, &env)),
    );

    let mut mounts = SimMounts::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let Some(dir) = prepared.volumes.get(m["name"].as_str().unwrap_or("")) else {
            return fail(format!(
                "volume mount {} names no volume of the pod",
                m["name"]
            ));
        };
        let path = match m["subPath"].as_str().filter(|s| !s.is_empty()) {
            Some(sub) => dir.join(sub),
            None => dir.clone(),
        };
        let mount_path = m["mountPath"].as_str().unwrap_or("").to_owned();
        mounts.insert(
            mount_path,
            SimMount {
                path,
                read_only: m["readOnly"] == true,
            },
        );
    }
    let file = match open_log(&log) {
        Ok(f) => f,
        Err(e) => return fail(format!("open log file {}: {e}", log.display())),
    };
    let (out, err) = match (file.try_clone(), file.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return fail(format!("open log file {}: {e}", log.display())),
    };
    let mut cmd = tokio::process::Command::new(&cfg.lifeboat_bin);
    if objects.is_real() {
        // As a container runtime does: the process sees each volume at its mount path (the
        // config at /etc/lifeboat, in-cluster credentials at their fixed path), in a mount
        // namespace of its own. Parents sort before their children, so they mount first.
        let binds: Vec<mountns::Bind> = mounts
            .iter()
            .map(|(path, m)| mountns::Bind {
                target: PathBuf::from(path),
                source: m.path.clone(),
                read_only: m.read_only,
            })
            .collect();
        if let Err(e) = mountns::bind_in_own_namespace(cmd.as_std_mut(), &binds) {
            return fail(format!("mount the pod's volumes: {e}"));
        }
    }
    cmd.args(&argv)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &prepared.home)
        .env("HOSTNAME", name(pod))
        .envs(objects.in_cluster_env())
        .envs(env)
        .env(
            MOUNTS_ENV,
            serde_json::to_string(&mounts).unwrap_or_default(),
        )
        .current_dir(&prepared.home)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = format!("start {}: {e}", cfg.lifeboat_bin.display());
            let _ = write_log(&log, &message);
            return fail(message);
        }
    };
    tracing::debug!(pod = %format!("{ns}/{}", name(pod)), container = cname, ?argv, "started lifeboat");
    let status = tokio::select! {
        s = child.wait() => s,
        _ = killed.changed() => {
            let _ = child.kill().await;
            return None;
        }
        _ = objects.shutdown().wait() => {
            let _ = child.kill().await;
            return None;
        }
    };
    let finished = now();
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            // A signal-killed process reports 128 + signal, as a container runtime does.
            let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9));
            Some(Exit {
                code,
                started,
                finished,
                restarts: 0,
                message: None,
            })
        }
        Err(e) => fail(format!("wait for lifeboat: {e}")),
    }
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::File::create(path)
}

fn write_log(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = open_log(path)?;
    writeln!(f, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_pod_paths_translate_through_the_longest_mount() {
        let mut mounts = SimMounts::new();
        mounts.insert(
            "/data".into(),
            SimMount {
                path: "/host/vol".into(),
                read_only: true,
            },
        );
        mounts.insert(
            "/data/cache".into(),
            SimMount {
                path: "/host/cache".into(),
                read_only: false,
            },
        );
        assert_eq!(
            translate(&mounts, Path::new("/data/db/file")),
            Some(("/host/vol/db/file".into(), true))
        );
        assert_eq!(
            translate(&mounts, Path::new("/data/cache/x")),
            Some(("/host/cache/x".into(), false))
        );
        assert_eq!(translate(&mounts, Path::new("/database")), None);
        let wire = serde_json::to_value(&mounts).unwrap();
        assert_eq!(
            wire["/data"],
            json!({"path": "/host/vol", "readOnly": true})
        );
        assert_eq!(serde_json::from_value::<SimMounts>(wire).unwrap(), mounts);
    }

    #[test]
    fn lifeboat_images_are_the_configured_one_or_any_lifeboat_repository() {
        let c = |i: &str| json!({"image": i});
        assert!(is_lifeboat(&c("lifeboat:dev"), "lifeboat:dev"));
        assert!(is_lifeboat(
            &c("ghcr.io/lifeboat/lifeboat:0.1.0"),
            "lifeboat:dev"
        ));
        assert!(is_lifeboat(
            &c("registry:5000/ops/lifeboat@sha256:00"),
            "lifeboat:dev"
        ));
        assert!(!is_lifeboat(&c("postgres:17"), "lifeboat:dev"));
        assert!(!is_lifeboat(
            &c("ghcr.io/lifeboat/lifeboat-ui:1"),
            "lifeboat:dev"
        ));
    }

    #[test]
    fn references_expand_like_the_kubelet() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "two".to_owned()),
        ];
        assert_eq!(expand("--x=$(A)/$(B)", &env), "--x=1/two");
        assert_eq!(expand("$$(A) $(C) $", &env), "$(A) $(C) $");
    }

    #[test]
    fn downward_api_fields_resolve() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"app": "db"}}, "spec": {"nodeName": "node-0"}});
        assert_eq!(field_ref(&pod, "metadata.name", "10.0.0.1"), "p");
        assert_eq!(field_ref(&pod, "spec.nodeName", "10.0.0.1"), "node-0");
        assert_eq!(field_ref(&pod, "metadata.labels['app']", "10.0.0.1"), "db");
        assert_eq!(field_ref(&pod, "status.podIP", "10.0.0.1"), "10.0.0.1");
    }
}
