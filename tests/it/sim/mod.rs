//! The simulated cluster (issue 3): its API server over HTTP through `kube::Client` and real
//! `kubectl`, its persistence, and (in `controllers`) its controllers and kubelet.

mod api;
mod controllers;
mod kubectl;
mod persist;
mod serve;
mod watch;

use std::time::Duration;

use lifeboat::sim::{SimCluster, SimConfig};

/// Upper bound for anything the simulator does in the background (GC, CRD establishment); the
/// test binary shares 2 cores, so be generous.
pub const WAIT: Duration = Duration::from_secs(30);

/// A started cluster with its client; the tempdir lives as long as it.
pub struct Sim {
    pub cluster: SimCluster,
    pub client: kube::Client,
    pub _dir: tempfile::TempDir,
}

/// Starts a cluster in a fresh state dir, after `tweak` adjusts the configuration.
pub async fn start_with(tweak: impl FnOnce(&mut SimConfig)) -> Sim {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = SimConfig {
        name: "primary".into(),
        state_dir: dir.path().join("state"),
        // Mover pods run the lifeboat binary under test.
        lifeboat_bin: std::path::PathBuf::from(env!("CARGO_BIN_EXE_lifeboat")),
        ..SimConfig::default()
    };
    tweak(&mut config);
    let cluster = SimCluster::start(config).await.expect("sim starts");
    let client = cluster.client().expect("client");
    Sim {
        cluster,
        client,
        _dir: dir,
    }
}

/// Starts a cluster with the default configuration.
pub async fn start() -> Sim {
    start_with(|_| {}).await
}

/// The API status code of a kube error (panics on other errors).
pub fn code(e: &kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `probe` until it returns `Some`, or panics after [`WAIT`] naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, WAIT, probe).await
}

/// Polls `probe` until it returns `Some`, or panics after `wait` naming `what`.
pub async fn eventually_within<T, F, Fut>(what: &str, wait: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {wait:?} waiting for {what}"
        );
        // Polling an API is the condition check here; the interval only paces it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
