//! Benchmark of `lifeboat restore` (issue 5): N objects (default 10,000) restored into a fresh
//! simulated secondary, beside, in the same run:
//! - the floor: the same (already transformed) objects created with the same client at the
//!   same concurrency (16), without lifeboat's restore point choice, reading and planning;
//! - a sequential restore: the same creates one at a time.
//!
//! Targets: >= 70 % of the floor's objects/s and >= 10x sequential.
//! Run: `cargo bench --bench restore` (LIFEBOAT_BENCH_OBJECTS=2000 for a quicker run;
//! LIFEBOAT_BENCH_LATENCY_MS=2 to give the target API server a realistic per-request latency).
// A panic is how a test or benchmark fails: unwrapping is its error handling.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use http::Method;
use lifeboat::backup::{self, BackupRequest, Filters, NoProgress};
use lifeboat::cluster::{self, Connected};
use lifeboat::repo::{BackupName, RepoWriter};
use lifeboat::restore::{self, Action, PlanOptions};
use lifeboat::sim::{SimCluster, SimConfig};
use lifeboat::storage::Writer;
use lifeboat::storage::local::LocalBackend;
use serde_json::json;

const NAMESPACES: usize = 10;

/// API latency of the target clusters: LIFEBOAT_BENCH_LATENCY_MS (default 0). Loopback to an
/// in-process simulator answers in microseconds; a real API server takes milliseconds per
/// create, which is what parallelism hides.
fn latency() -> Duration {
    Duration::from_millis(
        std::env::var("LIFEBOAT_BENCH_LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

async fn sim(dir: &std::path::Path, name: &str, cidr: &str) -> SimCluster {
    SimCluster::start(SimConfig {
        name: name.into(),
        state_dir: dir.join(name),
        service_cidr: cidr.into(),
        latency: if name == "primary" {
            Duration::ZERO
        } else {
            latency()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn seed(sim: &SimCluster, n: usize) {
    let ctx = sim.context();
    let cat = &ctx.catalogue;
    let ns_rt = cat.find("", "namespaces").unwrap();
    for i in 0..NAMESPACES {
        ctx.store.create(&ns_rt, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("app-{i}")}})).unwrap();
    }
    let cm = cat.find("", "configmaps").unwrap();
    let secret = cat.find("", "secrets").unwrap();
    for i in 0..n {
        let ns = format!("app-{}", i % NAMESPACES);
        let meta = json!({"name": format!("obj-{i:05}"), "labels": {"app": "bench"}});
        if i % 2 == 0 {
            ctx.store.create(&cm, Some(&ns), json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v".repeat(512)}})).unwrap();
        } else {
            ctx.store.create(&secret, Some(&ns), json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": {"k": "dmFsdWU="}})).unwrap();
        }
    }
}

/// Creates the plan's objects directly, `concurrency` at a time; returns (objects, wall).
async fn create_directly(
    client: &kube::Client,
    items: &[(String, Vec<u8>)],
    concurrency: usize,
) -> (usize, Duration) {
    let t = Instant::now();
    let n = futures::stream::iter(items)
        .map(|(uri, body)| async move {
            cluster::send(
                client,
                "create",
                Method::POST,
                uri,
                Some(("application/json", body.clone())),
            )
            .await
            .unwrap();
        })
        .buffer_unordered(concurrency)
        .count()
        .await;
    (n, t.elapsed())
}

fn main() {
    let n: usize = std::env::var("LIFEBOAT_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let primary = sim(dir.path(), "primary", "10.0.0.0/16").await;
        seed(&primary, n);
        let repo = RepoWriter::open_or_init(Writer::new(Arc::new(LocalBackend::new(dir.path().join("repo"))))).await.unwrap();
        let connected = Connected { client: primary.client().unwrap(), api_host: None };
        let req = BackupRequest {
            name: BackupName::new("bench").unwrap(),
            cluster_name: "primary".into(),
            filters: Filters::default(),
            labels: Default::default(),
            ttl: None,
            volumes: None,
            started_at: None,
            spool_dir: dir.path().to_owned(),
        };
        backup::run(&connected, &repo, req, &NoProgress).await.unwrap();
        primary.shutdown().await.unwrap();

        // The objects a restore writes, as the planner makes them, for the floor and sequential runs.
        let empty = sim(dir.path(), "empty", "10.1.0.0/16").await;
        let plan = restore::prepare(repo.reader(), &empty.client().unwrap(), None, restore::PointOptions { no_volumes: true, ..Default::default() }, PlanOptions::default()).await.unwrap();
        let items: Vec<(String, Vec<u8>)> = plan
            .items
            .iter()
            .filter(|i| i.action == Action::Create)
            .map(|i| {
                let uri = cluster::collection_path(&i.group, &i.version, &i.resource, &i.namespace);
                (uri, serde_json::to_vec(&i.object).unwrap())
            })
            .collect();
        empty.shutdown().await.unwrap();
        // Namespaces first, as any restore must.
        let (ns_items, rest): (Vec<_>, Vec<_>) = items.into_iter().partition(|(u, _)| u == "/api/v1/namespaces");

        println!(
            "lifeboat restore benchmark: {n} seeded objects ({} written per run), 2 cores, target API latency {} ms",
            ns_items.len() + rest.len(),
            latency().as_millis()
        );
        println!("{:<12} {:>9} {:>9} {:>12}", "run", "objects", "wall s", "objects/s");
        let floor = sim(dir.path(), "floor", "10.1.0.0/16").await;
        let fc = floor.client().unwrap();
        let (a, ta) = create_directly(&fc, &ns_items, 16).await;
        let (b, tb) = create_directly(&fc, &rest, 16).await;
        let floor_rate = (a + b) as f64 / (ta + tb).as_secs_f64();
        println!("{:<12} {:>9} {:>9.2} {floor_rate:>12.0}", "floor", a + b, (ta + tb).as_secs_f64());
        floor.shutdown().await.unwrap();

        let seq = sim(dir.path(), "sequential", "10.1.0.0/16").await;
        let sc = seq.client().unwrap();
        let (a, ta) = create_directly(&sc, &ns_items, 1).await;
        let (b, tb) = create_directly(&sc, &rest, 1).await;
        let seq_rate = (a + b) as f64 / (ta + tb).as_secs_f64();
        println!("{:<12} {:>9} {:>9.2} {seq_rate:>12.0}", "sequential", a + b, (ta + tb).as_secs_f64());
        seq.shutdown().await.unwrap();

        let target = sim(dir.path(), "secondary", "10.1.0.0/16").await;
        std::fs::write(
            dir.path().join("lifeboat.yaml"),
            format!(
                "clusters:\n  secondary: {{ context: secondary, kubeconfig: {:?} }}\nlocations:\n  dr: {{ readOnly: true, local: {{ path: repo }} }}\n\
                 restore:\n  secondary: {{ cluster: secondary, from: dr }}\n",
                target.kubeconfig_path()
            ),
        )
        .unwrap();
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["restore", "--to", "secondary", "-o", "json", "--concurrency", "16"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let wall = t.elapsed();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let created = doc["report"]["created"].as_u64().unwrap() as f64;
        let exec = doc["report"]["durationSeconds"].as_f64().unwrap();
        let rate = created / wall.as_secs_f64();
        println!("{:<12} {:>9} {:>9.2} {rate:>12.0}   (execution alone {exec:.2}s, {:.0}/s)", "lifeboat", created, wall.as_secs_f64(), created / exec);
        println!("lifeboat / floor: {:.0} %   lifeboat / sequential: {:.1}x", 100.0 * rate / floor_rate, rate / seq_rate);
        target.shutdown().await.unwrap();
    });
}
