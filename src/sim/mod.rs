//! The simulated Kubernetes cluster (test and demo infrastructure; see DESIGN.md).
//!
//! [`SimCluster::start`] runs an API server on 127.0.0.1 that `kube::Client` and real `kubectl`
//! talk to, backed by the in-process [`store::Store`] that the controllers and kubelet use.

pub mod agent;
pub mod catalogue;
pub mod controllers;
pub mod exec;
pub mod lifecycle;
pub mod patch;
pub mod persist;
mod protobuf;
pub mod select;
mod server;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use catalogue::{Catalogue, ResourceType};
pub use store::{ApiError, DeleteOptions, Shutdown, SimConfig, SimContext, Store, Throttle};

/// Why a simulated cluster could not start, run or stop.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The state directory could not be created.
    #[error("creating the state directory {path}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The service CIDR is not an IPv4 CIDR with a prefix of at most /30.
    #[error("invalid service CIDR {cidr:?} (want an IPv4 CIDR such as 10.0.0.0/16)")]
    ServiceCidr {
        /// The rejected value.
        cidr: String,
    },
    /// Loading the saved state failed.
    #[error("loading the saved state")]
    LoadState(#[source] persist::PersistError),
    /// Saving the state failed.
    #[error("saving the state")]
    SaveState(#[source] persist::PersistError),
    /// Creating a built-in object (namespace, node, CRD) failed.
    #[error("bootstrapping {what}")]
    Bootstrap {
        /// The object.
        what: String,
        /// The API's refusal.
        #[source]
        source: Box<ApiError>,
    },
    /// The listening socket could not be bound.
    #[error("binding the API server to 127.0.0.1:{port}")]
    Bind {
        /// The requested port.
        port: u16,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig could not be written.
    #[error("writing the kubeconfig {path}")]
    WriteKubeconfig {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A `kube::Client` for the server could not be built.
    #[error("building a client for {url}")]
    Client {
        /// The server URL.
        url: String,
        /// The client failure.
        #[source]
        source: kube::Error,
    },
    /// The server URL does not parse as a URI (it is built by the server, so this is a bug).
    #[error("parsing the server URL {url}")]
    Url {
        /// The URL.
        url: String,
        /// The parse failure.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// Installing the signal handlers failed.
    #[error("installing the SIGINT/SIGTERM handlers")]
    Signal(#[source] std::io::Error),
}

/// A running simulated cluster.
#[derive(Debug)]
pub struct SimCluster {
    ctx: SimContext,
    url: String,
    kubeconfig: PathBuf,
    tasks: Vec<JoinHandle<()>>,
    server: Option<JoinHandle<()>>,
}

impl SimCluster {
    /// Starts the API server, the built-in machinery and the controllers.
    pub async fn start(config: SimConfig) -> Result<SimCluster, SimError> {
        if store_cidr_invalid(&config.service_cidr) {
            return Err(SimError::ServiceCidr {
                cidr: config.service_cidr.clone(),
            });
        }
        let state_dir = config.state_dir.clone();
        for dir in [
            state_dir.clone(),
            state_dir.join("logs"),
            state_dir.join("volumes"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| SimError::StateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let config = Arc::new(config);
        let catalogue = Catalogue::builtin();
        let store = Store::new(catalogue.clone(), config.clone());
        let ctx = SimContext {
            store,
            catalogue,
            config: config.clone(),
            shutdown: Shutdown::default(),
        };
        if config.persist {
            persist::load(&ctx.store, &ctx.catalogue, &persist::state_file(&state_dir))
                .map_err(SimError::LoadState)?;
        }
        bootstrap(&ctx)?;

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|source| SimError::Bind {
                port: config.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            port: config.port,
            source,
        })?;
        let url = format!("http://{addr}");
        let kubeconfig = config
            .kubeconfig_out
            .clone()
            .unwrap_or_else(|| state_dir.join("kubeconfig"));
        write_kubeconfig(&kubeconfig, &config.name, &url)?;

        let app = server::App {
            ctx: ctx.clone(),
            requests: Arc::new(AtomicU64::new(0)),
            address: addr.to_string(),
        };
        let shutdown = ctx.shutdown.clone();
        let server = tokio::spawn(async move {
            let router = server::router(app);
            let r = axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.wait().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "sim API server stopped");
            }
        });
        let mut tasks = vec![
            tokio::spawn(lifecycle::run_crd_controller(ctx.clone())),
            tokio::spawn(lifecycle::run_collectors(ctx.clone())),
        ];
        if config.persist {
            tasks.push(tokio::spawn(run_saver(ctx.clone())));
        }
        controllers::spawn_all(&ctx);
        tracing::info!(name = %config.name, %url, kubeconfig = %kubeconfig.display(), "sim cluster started");
        Ok(SimCluster {
            ctx,
            url,
            kubeconfig,
            tasks,
            server: Some(server),
        })
    }

    /// The API server's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kubeconfig written for this cluster (context named after the cluster).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The store, catalogue, configuration and shutdown signal.
    pub fn context(&self) -> &SimContext {
        &self.ctx
    }

    /// A `kube::Client` talking to this cluster over HTTP (default namespace `default`).
    pub fn client(&self) -> Result<kube::Client, SimError> {
        let err = |source| SimError::Client {
            url: self.url.clone(),
            source,
        };
        let uri: http::Uri = self.url.parse().map_err(|source| SimError::Url {
            url: self.url.clone(),
            source,
        })?;
        install_crypto_provider();
        let mut cfg = kube::Config::new(uri);
        cfg.read_timeout = Some(Duration::from_secs(295));
        kube::Client::try_from(cfg).map_err(err)
    }

    /// Stops the server and the background tasks, saving the state if persistence is on.
    pub async fn shutdown(mut self) -> Result<(), SimError> {
        self.ctx.shutdown.trigger();
        if let Some(server) = self.server.take() {
            // Watches end on the shutdown signal, so graceful shutdown is quick; bound it anyway.
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        if self.ctx.config.persist {
            persist::save(
                &self.ctx.store,
                &persist::state_file(&self.ctx.config.state_dir),
            )
            .map_err(SimError::SaveState)?;
        }
        Ok(())
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        // A cluster dropped without `shutdown` must not leave tasks serving forever.
        self.ctx.shutdown.trigger();
    }
}

/// Selects rustls' process-wide crypto provider (aws-lc-rs, the one kube and the Azure SDK
/// are built with), so building a client never depends on rustls guessing. Idempotent.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn store_cidr_invalid(cidr: &str) -> bool {
    let Some((ip, bits)) = cidr.split_once('/') else {
        return true;
    };
    ip.parse::<std::net::Ipv4Addr>().is_err() || bits.parse::<u32>().map_or(true, |b| b > 30)
}

async fn run_saver(ctx: SimContext) {
    let path = persist::state_file(&ctx.config.state_dir);
    let mut saved_rv = ctx.store.resource_version();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.shutdown.wait() => return,
        }
        let rv = ctx.store.resource_version();
        if rv == saved_rv {
            continue;
        }
        let store = ctx.store.clone();
        let p = path.clone();
        match tokio::task::spawn_blocking(move || persist::save(&store, &p)).await {
            Ok(Ok(())) => saved_rv = rv,
            Ok(Err(e)) => tracing::warn!(error = %e, "sim could not save its state"),
            Err(e) => tracing::warn!(error = %e, "sim state saver panicked"),
        }
    }
}

fn write_kubeconfig(path: &Path, name: &str, url: &str) -> Result<(), SimError> {
    write_kubeconfig_doc(path, &[(name, url)])
}

/// Writes one kubeconfig holding a context per cluster (named after each cluster), the first
/// one current: e.g. `primary` and `secondary` for a restore across regions.
pub fn write_merged_kubeconfig(path: &Path, clusters: &[&SimCluster]) -> Result<(), SimError> {
    let entries: Vec<(&str, &str)> = clusters
        .iter()
        .map(|c| (c.ctx.config.name.as_str(), c.url()))
        .collect();
    write_kubeconfig_doc(path, &entries)
}

fn write_kubeconfig_doc(path: &Path, clusters: &[(&str, &str)]) -> Result<(), SimError> {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters.iter().map(|(n, u)| json!({"name": n, "cluster": {"server": u}})).collect::<Vec<_>>(),
        "users": clusters.iter().map(|(n, _)| json!({"name": n, "user": {}})).collect::<Vec<_>>(),
        "contexts": clusters.iter().map(|(n, _)| json!({"name": n,
            "context": {"cluster": n, "user": n, "namespace": "default"}})).collect::<Vec<_>>(),
        "current-context": clusters.first().map(|(n, _)| *n).unwrap_or_default(),
        "preferences": {},
    });
    let err = |source| SimError::WriteKubeconfig {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let text = serde_yaml_ng::to_string(&doc).unwrap_or_default();
    std::fs::write(path, text).map_err(err)
}

fn snapshot_crd(kind: &str, plural: &str, namespaced: bool, status: bool) -> Value {
    let mut version = json!({
        "name": "v1", "served": true, "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
    });
    if status {
        version["subresources"] = json!({"status": {}});
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.snapshot.storage.k8s.io")},
        "spec": {
            "group": "snapshot.storage.k8s.io",
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural,
                "singular": kind.to_ascii_lowercase()},
            "scope": if namespaced { "Namespaced" } else { "Cluster" },
            "versions": [version],
        },
    })
}

/// Creates what a fresh cluster has: system namespaces, the `kubernetes` Service, the nodes and
/// the snapshot CRDs (established at once). Idempotent, so a loaded state is completed.
fn bootstrap(ctx: &SimContext) -> Result<(), SimError> {
    let cat = &ctx.catalogue;
    let store = &ctx.store;
    let get = |g: &str, p: &str| cat.find(g, p).expect("built-in type");
    let ensure = |rt: &ResourceType, ns: Option<&str>, obj: Value| -> Result<(), SimError> {
        match store.create(rt, ns, obj) {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => Ok(()),
            Err(source) => Err(SimError::Bootstrap {
                what: rt.kind.clone(),
                source: Box::new(source),
            }),
        }
    };
    let ns_rt = get("", "namespaces");
    for ns in store::SYSTEM_NAMESPACES {
        ensure(&ns_rt, None, json!({"metadata": {"name": ns}}))?;
    }
    ensure(
        &get("", "services"),
        Some("default"),
        json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
    )?;
    let node_rt = get("", "nodes");
    for (i, node) in ctx.config.nodes.iter().enumerate() {
        let zone = ctx
            .config
            .zones
            .get(i % ctx.config.zones.len().max(1))
            .cloned()
            .unwrap_or_default();
        let region = zone
            .rsplit_once('-')
            .map(|(r, _)| r.to_string())
            .unwrap_or_else(|| zone.clone());
        ensure(
            &node_rt,
            None,
            json!({"metadata": {"name": node, "labels": {
                "kubernetes.io/hostname": node, "kubernetes.io/os": "linux",
                "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": region,
                "topology.disk.csi.sim/zone": zone}},
                "spec": {}}),
        )?;
        // Nodes report Ready, as a kubelet would.
        let _ = store.modify_status(&node_rt, None, node, |n| {
            n["status"] = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "nodeInfo": {"kubeletVersion": "v1.33.0-lifeboat-sim", "operatingSystem": "linux", "architecture": "amd64"}});
            Ok(())
        });
    }
    let crd_rt = get("apiextensions.k8s.io", "customresourcedefinitions");
    for (kind, plural, namespaced) in [
        ("VolumeSnapshot", "volumesnapshots", true),
        ("VolumeSnapshotContent", "volumesnapshotcontents", false),
        ("VolumeSnapshotClass", "volumesnapshotclasses", false),
    ] {
        ensure(
            &crd_rt,
            None,
            snapshot_crd(kind, plural, namespaced, kind != "VolumeSnapshotClass"),
        )?;
        lifecycle::establish(ctx, &format!("{plural}.snapshot.storage.k8s.io")).map_err(
            |source| SimError::Bootstrap {
                what: format!("CRD {plural}"),
                source: Box::new(source),
            },
        )?;
    }
    Ok(())
}

/// Options of `lifeboat sim serve`.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Cluster and kubeconfig context name.
    pub name: String,
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// State directory (volumes, logs, saved store); `None`: a fresh temporary one, not persisted.
    pub state: Option<PathBuf>,
    /// Where to write the kubeconfig (default `<state>/kubeconfig`).
    pub kubeconfig_out: Option<PathBuf>,
    /// Zones of the region; empty keeps the default.
    pub zones: Vec<String>,
    /// Node names; empty means one node per zone, `<name>-node-<i>`.
    pub nodes: Vec<String>,
    /// Service cluster IP range.
    pub service_cidr: String,
    /// Image name whose pods the kubelet really runs.
    pub lifeboat_image: String,
    /// The lifeboat binary to run for them (default: this executable).
    pub lifeboat_bin: Option<PathBuf>,
    /// Delay before a new CRD is Established, milliseconds.
    pub crd_established_delay_ms: u64,
    /// Refuse every n-th request with 429 (0: never).
    pub throttle_every: u64,
    /// Retry-After seconds for throttled requests.
    pub retry_after_secs: u64,
    /// Latency added to each request, milliseconds.
    pub latency_ms: u64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        let d = SimConfig::default();
        ServeOptions {
            name: "sim".to_string(),
            port: 0,
            state: None,
            kubeconfig_out: None,
            zones: Vec::new(),
            nodes: Vec::new(),
            service_cidr: d.service_cidr,
            lifeboat_image: d.lifeboat_image,
            lifeboat_bin: None,
            crd_established_delay_ms: d.crd_established_delay.as_millis() as u64,
            throttle_every: 0,
            retry_after_secs: 1,
            latency_ms: 0,
        }
    }
}

impl ServeOptions {
    /// The cluster configuration these options describe.
    pub fn to_config(&self) -> SimConfig {
        let mut c = SimConfig {
            name: self.name.clone(),
            port: self.port,
            service_cidr: self.service_cidr.clone(),
            kubeconfig_out: self.kubeconfig_out.clone(),
            lifeboat_image: self.lifeboat_image.clone(),
            crd_established_delay: Duration::from_millis(self.crd_established_delay_ms),
            latency: Duration::from_millis(self.latency_ms),
            throttle: (self.throttle_every > 0).then_some(Throttle {
                every: self.throttle_every,
                retry_after_secs: self.retry_after_secs,
            }),
            ..SimConfig::default()
        };
        if let Some(dir) = &self.state {
            c.state_dir = dir.clone();
            c.persist = true;
        }
        if let Some(bin) = &self.lifeboat_bin {
            c.lifeboat_bin = bin.clone();
        }
        if !self.zones.is_empty() {
            c.zones = self.zones.clone();
        }
        c.nodes = if self.nodes.is_empty() {
            (0..c.zones.len())
                .map(|i| format!("{}-node-{i}", self.name))
                .collect()
        } else {
            self.nodes.clone()
        };
        c
    }
}

/// `lifeboat sim serve`: starts a cluster, prints its kubeconfig path and URL, and runs until
/// SIGINT or SIGTERM, then shuts down cleanly (saving the state).
pub async fn serve(opts: ServeOptions) -> Result<(), SimError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(SimError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(SimError::Signal)?;
    let cluster = SimCluster::start(opts.to_config()).await?;
    // These two lines are the command's output (scripts read them).
    println!("kubeconfig: {}", cluster.kubeconfig_path().display());
    println!("url: {}", cluster.url());
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    cluster.shutdown().await
}
