//! The node agent and `disk.csi.sim` driver against a real control plane (`lifeboat sim agent`).
//!
//! No kubelet and no CSI driver can run on these machines, so lifeboat supplies them as clients
//! of the real API server, over its API only: it registers Nodes (zone and region labels,
//! capacity, `Ready`) and keeps them alive as a kubelet does (a Lease in `kube-node-lease`
//! renewed every [`HEARTBEAT`], the `Ready` condition's heartbeat), and runs the simulator's
//! kubelet and CSI controllers through [`Objects::api`]: pods bound to its nodes are marked
//! Running (lifeboat's own pods are run, with in-cluster credentials), claims the PV controller
//! hands to `disk.csi.sim` get a directory and a PV, VolumeSnapshotContents of the driver get a
//! copy. The real controller manager, scheduler and snapshot-controller do everything else.

mod endpoint;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::controllers::{self, CSI_DRIVER, Kind, Objects};
use super::store::{Shutdown, SimConfig};

/// How often the agent renews its nodes' Leases and `Ready` heartbeats (a kubelet's default).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// What the agent serves.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Prefix of the node names (`<prefix>-<zone>`), usually the cluster's name.
    pub node_prefix: String,
    /// One node per zone, labelled `topology.kubernetes.io/zone`.
    pub zones: Vec<String>,
    /// The region label of every node.
    pub region: String,
    /// Where volumes, snapshots, pod directories and container logs live.
    pub state_dir: PathBuf,
    /// Pods with this image (or any `…/lifeboat` image) are run with `lifeboat_bin`.
    pub lifeboat_image: String,
    /// The lifeboat binary run for such pods.
    pub lifeboat_bin: PathBuf,
    /// The kubelet endpoint's serving certificate and key (PEM files): with them the agent
    /// serves container logs, so `kubectl logs` and lifeboat's reading of mover reports work
    /// through the real API server. None: no endpoint.
    pub serving: Option<(PathBuf, PathBuf)>,
    /// The endpoint's port on 127.0.0.1 (0: any free port).
    pub kubelet_port: u16,
}

/// Why the agent could not start or keep its nodes.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The kubeconfig does not give a client.
    #[error("connecting to the API server")]
    Connect(#[source] kube::Error),
    /// The kubeconfig or its context could not be read.
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(String),
    /// Registering a Node, the CSIDriver or a Lease failed.
    #[error("registering {what}")]
    Register {
        /// The object.
        what: String,
        /// The API's refusal.
        #[source]
        source: controllers::Error,
    },
    /// The signal handlers could not be installed.
    #[error("installing the SIGINT/SIGTERM handlers")]
    Signal(#[source] std::io::Error),
    /// The kubelet endpoint could not start.
    #[error("starting the kubelet endpoint: {0}")]
    Endpoint(String),
    /// The state directory could not be created.
    #[error("creating the state directory {path}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

/// The node names the agent registers for `opts`.
pub fn node_names(opts: &AgentOptions) -> Vec<String> {
    opts.zones
        .iter()
        .map(|z| format!("{}-{z}", opts.node_prefix))
        .collect()
}

/// `lifeboat sim agent`: connects with the kubeconfig (and context) and runs the agent until
/// SIGINT or SIGTERM.
pub async fn serve(
    kubeconfig: &std::path::Path,
    context: Option<String>,
    opts: AgentOptions,
) -> Result<(), AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| AgentError::Kubeconfig(format!("{}: {e}", kubeconfig.display())))?;
    let options = kube::config::KubeConfigOptions {
        context,
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|e| AgentError::Kubeconfig(format!("{}: {e}", kubeconfig.display())))?;
    let host = config.cluster_url.host().unwrap_or("127.0.0.1").to_owned();
    let port = config.cluster_url.port_u16().unwrap_or(443);
    let client = kube::Client::try_from(config).map_err(AgentError::Connect)?;
    let shutdown = Shutdown::default();
    let stop = shutdown.clone();
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping the agent"),
            _ = int.recv() => tracing::info!("SIGINT: stopping the agent"),
        }
        stop.trigger();
    });
    run(client, (host, port), opts, shutdown).await
}

/// Runs the agent against the cluster `client` reaches (whose API server pods reach at
/// `server`) until `shutdown` fires.
pub async fn run(
    client: kube::Client,
    server: (String, u16),
    opts: AgentOptions,
    shutdown: Shutdown,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(&opts.state_dir).map_err(|source| AgentError::StateDir {
        path: opts.state_dir.clone(),
        source,
    })?;
    let nodes = node_names(&opts);
    let config = SimConfig {
        name: opts.node_prefix.clone(),
        zones: opts.zones.clone(),
        nodes: nodes.clone(),
        state_dir: opts.state_dir.clone(),
        lifeboat_image: opts.lifeboat_image.clone(),
        lifeboat_bin: opts.lifeboat_bin.clone(),
        ..SimConfig::default()
    };
    let objects = Objects::api(client, server, Arc::new(config), shutdown.clone());
    let port = match &opts.serving {
        Some((cert, key)) => {
            let state = opts.state_dir.clone();
            let port =
                endpoint::serve(opts.kubelet_port, cert, key, state, shutdown.clone()).await?;
            tracing::info!(port, "kubelet endpoint serving container logs");
            port
        }
        None => 0,
    };
    register(&objects, &opts, &nodes, port).await?;
    controllers::spawn_agent(objects.clone());
    tracing::info!(nodes = ?nodes, "node agent and CSI driver running");
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = beat.tick() => {
                for (node, zone) in nodes.iter().zip(&opts.zones) {
                    if let Err(e) = heartbeat(&objects, node, zone, &opts.region, port).await {
                        tracing::warn!(node, error = %e, "heartbeat failed; next one in {HEARTBEAT:?}");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The CSIDriver object, and each Node with its status.
async fn register(
    objects: &Objects,
    opts: &AgentOptions,
    nodes: &[String],
    port: u16,
) -> Result<(), AgentError> {
    let driver = json!({
        "metadata": {"name": CSI_DRIVER},
        "spec": {"attachRequired": false, "podInfoOnMount": false,
                 "volumeLifecycleModes": ["Persistent"], "fsGroupPolicy": "File"},
    });
    objects
        .create(Kind::CsiDriver, driver)
        .await
        .map_err(|source| AgentError::Register {
            what: format!("CSIDriver {CSI_DRIVER}"),
            source,
        })?;
    for (node, zone) in nodes.iter().zip(&opts.zones) {
        heartbeat(objects, node, zone, &opts.region, port)
            .await
            .map_err(|source| AgentError::Register {
                what: format!("Node {node}"),
                source,
            })?;
    }
    Ok(())
}

/// Creates the Node if it is missing, writes its status as a kubelet does (Ready, capacity,
/// addresses), and renews its Lease.
async fn heartbeat(
    objects: &Objects,
    node: &str,
    zone: &str,
    region: &str,
    port: u16,
) -> Result<(), controllers::Error> {
    let labels = json!({
        "kubernetes.io/hostname": node,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": region,
        "topology.disk.csi.azure.com/zone": zone,
    });
    let existing = match objects.get(Kind::Node, None, node).await? {
        Some(n) => n,
        None => {
            let fresh = json!({"metadata": {"name": node, "labels": labels}, "spec": {}});
            match objects.create(Kind::Node, fresh).await? {
                Some(n) => n,
                None => objects
                    .get(Kind::Node, None, node)
                    .await?
                    .unwrap_or(Value::Null),
            }
        }
    };
    if existing.is_null() {
        return Ok(()); // deleted between the calls: the next beat registers it again
    }
    objects
        .modify_status(Kind::Node, &existing, |n| node_status(n, node, port))
        .await?;
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let lease_ns = "kube-node-lease";
    match objects.get(Kind::Lease, Some(lease_ns), node).await? {
        Some(mut lease) => {
            lease["spec"]["renewTime"] = json!(now);
            lease["spec"]["holderIdentity"] = json!(node);
            objects.update(Kind::Lease, lease).await?;
        }
        None => {
            let lease = json!({
                "metadata": {"name": node, "namespace": lease_ns, "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": node,
                    "uid": existing["metadata"]["uid"]}]},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now},
            });
            objects.create(Kind::Lease, lease).await?;
        }
    }
    Ok(())
}

/// A Ready node's status as a kubelet reports it.
fn node_status(n: &mut Value, node: &str, port: u16) {
    let t = controllers::now();
    let cond = |ty: &str, status: &str, reason: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": reason,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    let previous = n["status"]["conditions"].clone();
    let mut conditions = vec![
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID"),
        cond("Ready", "True", "KubeletReady"),
    ];
    // A transition time changes only with the status.
    for c in &mut conditions {
        if let Some(old) = previous
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["type"] == c["type"] && o["status"] == c["status"])
        {
            c["lastTransitionTime"] = old["lastTransitionTime"].clone();
        }
    }
    let resources =
        json!({"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    n["status"] = json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions,
        // Only the loopback address: nothing may ever resolve a node name on these machines.
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": node, "systemUUID": node, "bootID": node,
            "kernelVersion": "", "osImage": "lifeboat node agent", "containerRuntimeVersion": "lifeboat://sim",
            "kubeletVersion": "v1.34.4", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    });
}
