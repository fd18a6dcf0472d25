//! Tests against real control planes (issue 13): etcd, kube-apiserver (RBAC authorizer, default
//! admission plugins), kube-controller-manager, kube-scheduler and snapshot-controller built from
//! pinned Go modules and started by `.ci/test` through `.ci/controlplane`, a primary (eastus2)
//! and a secondary (centralus), each with lifeboat's node agent and `disk.csi.sim` driver.
//!
//! `.ci/test` passes their kubeconfigs in `LIFEBOAT_TEST_K8S_PRIMARY` and
//! `LIFEBOAT_TEST_K8S_SECONDARY`. Without them the tests say so and skip, except under
//! `CI=true`, where they fail. The clusters are shared by the tests of this tier, so each test
//! works in namespaces of its own (see [`unique`]) and they take turns ([`real`] holds a lock):
//! an aggregated API that is down or a CRD deleted by one test would otherwise show in the
//! backups of another.

mod apps;
mod cluster;
mod differential;
mod owners;
mod rerun;
mod schedule;
mod static_volumes;
mod volumes;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

/// Upper bound for what the real controllers and the agent do in the background (rollouts,
/// provisioning, snapshots, Jobs); the machine has 2 cores for everything.
pub const WAIT: Duration = Duration::from_secs(120);

/// One real cluster.
pub struct Cluster {
    /// Its admin kubeconfig (context named after the cluster).
    pub kubeconfig: PathBuf,
    /// A client with that kubeconfig.
    pub client: kube::Client,
}

/// The two regions, this test's for as long as it holds them.
pub struct Real {
    pub primary: Cluster,
    pub secondary: Cluster,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// One test of this tier at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The real control planes `.ci/test` started, or None (with a message) when there are none
/// outside CI.
pub async fn real() -> Option<Real> {
    let (Some(p), Some(s)) = (
        std::env::var_os("LIFEBOAT_TEST_K8S_PRIMARY"),
        std::env::var_os("LIFEBOAT_TEST_K8S_SECONDARY"),
    ) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no real control plane under CI=true: .ci/test must start them \
             (LIFEBOAT_TEST_K8S_PRIMARY/SECONDARY are not set)"
        );
        eprintln!("skipping: no real control plane (run the suite through .ci/test)");
        return None;
    };
    let turn = TURN.lock().await;
    Some(Real {
        primary: cluster(PathBuf::from(p)).await,
        secondary: cluster(PathBuf::from(s)).await,
        _turn: turn,
    })
}

async fn cluster(kubeconfig: PathBuf) -> Cluster {
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("the kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("the kubeconfig is usable");
    let client = kube::Client::try_from(config).expect("a client");
    Cluster { kubeconfig, client }
}

/// A name no other test (or earlier run against the same clusters) uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the pinned kubectl against `c` with `stdin`.
pub fn kubectl_in(c: &Cluster, args: &[&str], stdin: Option<&[u8]>) -> Output {
    kubectl_at(&c.kubeconfig, args, stdin)
}

/// Runs the pinned kubectl with `kubeconfig` and `stdin`.
pub fn kubectl_at(kubeconfig: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(crate::support::kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=60s")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write kubectl's stdin");
    }
    drop(input);
    child.wait_with_output().expect("kubectl runs")
}

/// Runs kubectl and returns its stdout; panics with its output when it fails.
pub fn kubectl(c: &Cluster, args: &[&str]) -> String {
    let out = kubectl_in(c, args, None);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GETs a path; None on 404.
pub async fn get(c: &Cluster, path: &str) -> Option<Value> {
    crate::restore::get(&c.client, path).await
}

/// Polls `probe` until it returns Some, or panics after [`WAIT`] naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::sim::eventually_within(what, WAIT, probe).await
}

/// A scratch directory for a test's config and locations. Not under /tmp: pods the agent runs
/// get their own `emptyDir` there, so a local location under /tmp would be another directory
/// for the mover than for the test.
pub fn workdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Writes `dir/lifeboat.yaml`: both clusters by kubeconfig, the writable `primary` location and
/// its read-only replica `dr`, and the `secondary` restore profile with the region's zone map.
pub fn write_config(dir: &Path, r: &Real, extra: &str) {
    write_config_for(dir, &r.primary, &r.secondary, extra);
}

/// [`write_config`] for any two clusters (simulated ones too).
pub fn write_config_for(dir: &Path, primary: &Cluster, secondary: &Cluster, extra: &str) {
    let cfg = format!(
        "clusters:\n  primary: {{ context: primary, kubeconfig: {:?} }}\n  secondary: {{ context: secondary, kubeconfig: {:?} }}\n\
         locations:\n  primary: {{ local: {{ path: repo }} }}\n  dr: {{ readOnly: true, local: {{ path: replica }} }}\n\
         defaults: {{ cluster: primary, location: primary }}\n\
         restore:\n  secondary:\n    cluster: secondary\n    from: dr\n    \
         zoneMap: {{ eastus2-1: centralus-1, eastus2-2: centralus-2, eastus2-3: centralus-3 }}\n{extra}",
        primary.kubeconfig, secondary.kubeconfig,
    );
    std::fs::write(dir.join("lifeboat.yaml"), cfg).unwrap();
}

/// Copies everything of `dir/repo` to `dir/replica` in a shuffled order, as replication would.
pub async fn replicate(dir: &Path, seed: u64) {
    use std::sync::Arc;

    use lifeboat::storage::local::LocalBackend;
    use lifeboat::storage::{Reader, Writer};
    let from: Reader = Writer::new(Arc::new(LocalBackend::new(dir.join("repo")))).reader();
    let to = Writer::new(Arc::new(LocalBackend::new(dir.join("replica"))));
    lifeboat::demo::replicate::copy_shuffled(&from, &to, seed, |_| true)
        .await
        .unwrap_or_else(|(key, e)| panic!("replicating {key}: {e}"));
}

/// Runs `lifeboat restore --to secondary -o json ARGS` in `dir`: exit code, JSON, stderr.
pub fn restore(dir: &Path, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["restore", "--to", "secondary", "-o", "json"];
    all.extend_from_slice(args);
    let out = crate::support::lifeboat(dir, &all);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), doc, crate::support::stderr(&out))
}
