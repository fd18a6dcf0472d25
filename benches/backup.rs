//! Benchmark of `lifeboat backup` (issue 4): N objects (default 100,000; mixed kinds, ~2 KiB
//! each) in a simulated cluster. Prints, from one run on this machine:
//! - the floor: a plain parallel paginated list of the same resources with the same client,
//!   objects parsed and discarded;
//! - `lifeboat backup` (the release binary, a separate process): wall time, objects/s, its
//!   peak RSS (VmHWM);
//! - the ratio of the two. Targets: >= 80 % of the floor, peak RSS <= 300 MB.
//!
//! Run: `cargo bench --bench backup` (LIFEBOAT_BENCH_OBJECTS=20000 for a quicker run).
// A panic is how a test or benchmark fails: unwrapping is its error handling.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lifeboat::backup::{Filters, select};
use lifeboat::cluster::{self, ListOptions};
use lifeboat::sim::{SimCluster, SimConfig};
use serde_json::json;

const NAMESPACES: usize = 20;
const LIST_CONCURRENCY: usize = 8;

fn padding(i: usize) -> String {
    // ~1.8 KiB of varied text so compression sees realistic, not constant, data.
    (0..72)
        .map(|j| {
            format!(
                "{:08x}-{j:02}-value-{i};",
                (i * 2654435761 + j * 40503) as u32
            )
        })
        .collect()
}

async fn seed(sim: &SimCluster, n: usize) {
    let ctx = sim.context();
    let store = &ctx.store;
    let cat = &ctx.catalogue;
    let ns_rt = cat.find("", "namespaces").unwrap();
    for i in 0..NAMESPACES {
        store.create(&ns_rt, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("team-{i:02}")}})).unwrap();
    }
    let crd_rt = cat
        .find("apiextensions.k8s.io", "customresourcedefinitions")
        .unwrap();
    store
        .create(&crd_rt, None, json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.bench.example.com"},
            "spec": {"group": "bench.example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .unwrap();
    let widgets = loop {
        if let Some(rt) = ctx.catalogue.find("bench.example.com", "widgets") {
            break rt;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kinds = [
        (cat.find("", "configmaps").unwrap(), "v1", "ConfigMap"),
        (cat.find("", "secrets").unwrap(), "v1", "Secret"),
        (
            cat.find("", "serviceaccounts").unwrap(),
            "v1",
            "ServiceAccount",
        ),
        (
            cat.find("rbac.authorization.k8s.io", "roles").unwrap(),
            "rbac.authorization.k8s.io/v1",
            "Role",
        ),
        (widgets, "bench.example.com/v1", "Widget"),
    ];
    for i in 0..n {
        let (rt, api_version, kind) = &kinds[i % kinds.len()];
        let ns = format!("team-{:02}", i % NAMESPACES);
        // The bulk of an object is in its body (data, spec, rules), as in real clusters.
        let meta = json!({"name": format!("obj-{i:06}"), "labels": {"app": format!("app-{}", i % 50)},
            "annotations": {"owner": "team", "revision": format!("{i}")}});
        let pad = padding(i);
        let obj = match *kind {
            "ConfigMap" => {
                json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "data": {"config.ini": pad}})
            }
            "Secret" => {
                json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "type": "Opaque", "data": {"k": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pad.as_bytes()[..pad.len().min(1350)])}})
            }
            "ServiceAccount" => json!({"apiVersion": api_version, "kind": kind, "metadata": meta,
                "imagePullSecrets": (0..20).map(|j| json!({"name": format!("{}-{j}", &pad[..60])})).collect::<Vec<_>>()}),
            "Role" => json!({"apiVersion": api_version, "kind": kind, "metadata": meta,
                "rules": (0..12).map(|j| json!({"apiGroups": [""], "resources": [format!("r{j}-{}", &pad[..100])], "verbs": ["get", "list"]})).collect::<Vec<_>>()}),
            _ => {
                json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": {"size": i, "blob": pad}})
            }
        };
        store.create(rt, Some(&ns), obj).unwrap();
    }
}

/// The floor: list every resource the backup would, same client, same page size and
/// concurrency, objects parsed and dropped.
async fn floor(client: &kube::Client, raw: bool) -> (u64, Duration) {
    let t = Instant::now();
    let discovered = cluster::discover(client).await.unwrap();
    let sel = select::select(&discovered.resources, &Filters::default());
    let opts = ListOptions {
        limit: 500,
        label_selector: None,
    };
    let counts: Vec<u64> = futures::stream::iter(sel.take.iter())
        .map(|take| {
            let opts = &opts;
            async move {
                let mut n = 0;
                let mut token: Option<String> = None;
                loop {
                    let next = if raw {
                        let page = cluster::fetch_page_of::<Box<serde_json::value::RawValue>>(
                            client,
                            &take.resource,
                            opts,
                            token.as_deref(),
                        )
                        .await
                        .unwrap();
                        n += page.items.len() as u64;
                        page.continue_token
                    } else {
                        let page =
                            cluster::fetch_page(client, &take.resource, opts, token.as_deref())
                                .await
                                .unwrap();
                        n += page.items.len() as u64;
                        page.continue_token
                    };
                    match next {
                        Some(c) => token = Some(c),
                        None => break n,
                    }
                }
            }
        })
        .buffer_unordered(LIST_CONCURRENCY)
        .collect()
        .await;
    (counts.iter().sum(), t.elapsed())
}

/// Peak RSS of a running process: its VmHWM, polled until it exits. (wait4's ru_maxrss would
/// count the pages the child shared with this process between fork and exec: the simulator's.)
fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb * 1024);
            }
            if status.contains("State:\tZ") {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        peak
    })
}

/// Runs the release binary; returns (objects, wall, peak RSS bytes).
fn backup(dir: &std::path::Path, name: &str) -> (u64, Duration, u64) {
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["backup", "--no-volumes", "-o", "json", "--name", name])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let peak = watch_peak_rss(child.id());
    let out = child.wait_with_output().unwrap();
    let wall = t.elapsed();
    assert!(out.status.success(), "backup failed: {:?}", out.status);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (doc["objects"].as_u64().unwrap(), wall, peak.join().unwrap())
}

fn main() {
    let n: usize = std::env::var("LIFEBOAT_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimCluster::start(SimConfig {
            name: "bench".into(),
            state_dir: dir.path().join("state"),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let t = Instant::now();
        seed(&sim, n).await;
        eprintln!("seeded {n} objects in {:.1}s", t.elapsed().as_secs_f64());
        std::fs::write(
            dir.path().join("lifeboat.yaml"),
            format!(
                "clusters:\n  bench: {{ context: bench, kubeconfig: {:?} }}\nlocations:\n  local: {{ local: {{ path: repo }} }}\n",
                sim.kubeconfig_path()
            ),
        )
        .unwrap();
        let client = Arc::new(sim.client().unwrap());
        println!("lifeboat backup benchmark: {n} seeded objects, 2 cores");
        println!("{:<10} {:>10} {:>9} {:>12} {:>10}", "run", "objects", "wall s", "objects/s", "peak RSS");
        // Best of 2 each: floor with objects parsed into JSON values (what kube's Api::list
        // does), floor with objects left as raw JSON (transport only), and lifeboat backup.
        let mut best = [0f64; 3];
        for round in 0..2 {
            for (i, raw) in [(0, false), (1, true)] {
                let (objs, wall) = floor(&client, raw).await;
                let rate = objs as f64 / wall.as_secs_f64();
                let name = if raw { "floor-raw" } else { "floor" };
                println!("{name:<10} {objs:>10} {:>9.2} {rate:>12.0} {:>10}", wall.as_secs_f64(), "-");
                best[i] = best[i].max(rate);
            }
            let (objs, wall, rss) = backup(dir.path(), &format!("bench-{round}"));
            let rate = objs as f64 / wall.as_secs_f64();
            println!("{:<10} {objs:>10} {:>9.2} {rate:>12.0} {:>7.0} MB", "backup", wall.as_secs_f64(), rss as f64 / 1e6);
            best[2] = best[2].max(rate);
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("repo/backups/bench-0/manifest.json")).unwrap()).unwrap();
        let res = &manifest["details"]["resources"];
        let avg = res["rawBytes"].as_f64().unwrap() / res["objects"].as_f64().unwrap();
        let stored = manifest["objects"][0]["size"].as_f64().unwrap();
        println!("average object {avg:.0} B of JSON; archive {:.1} MB ({:.1}x compression)", stored / 1e6, res["rawBytes"].as_f64().unwrap() / stored);
        println!(
            "backup / floor: {:.0} %   backup / floor-raw: {:.0} %",
            100.0 * best[2] / best[0],
            100.0 * best[2] / best[1]
        );
        sim.shutdown().await.unwrap();
    });
}
