//! Simulator throughput (issue 3): 100k ConfigMaps created over HTTP by 16 concurrent
//! `kube::Client`s, then listed in pages of 500; prints creates/s, listed objects/s and the
//! process's peak RSS. Client and server share this process (and its cores), as they do in the
//! test suite. `cargo bench --bench sim` (`SIM_BENCH_OBJECTS=N` to change the count).
// A panic is how a test or benchmark fails: unwrapping is its error handling.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams};
use lifeboat::sim::{SimCluster, SimConfig};
use serde_json::json;

const CLIENTS: usize = 16;
const PAGE: u32 = 500;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let objects: usize = std::env::var("SIM_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(objects))
}

async fn run(objects: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cluster = SimCluster::start(SimConfig {
        name: "bench".into(),
        state_dir: dir.path().to_path_buf(),
        ..SimConfig::default()
    })
    .await?;
    let client = cluster.client()?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "bench"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;

    let started = Instant::now();
    let workers = (0..CLIENTS).map(|w| {
        let client = cluster.client();
        async move {
            let api: Api<ConfigMap> = Api::namespaced(client?, "bench");
            let pp = PostParams::default();
            for i in (w..objects).step_by(CLIENTS) {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("cm-{i:06}"), "labels": {"app": "bench", "shard": (i % 16).to_string()}},
                    "data": {"index": i.to_string(), "payload": "x".repeat(64)},
                }))?;
                api.create(&pp, &cm).await?;
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    });
    try_join_all(workers).await?;
    let create_secs = started.elapsed().as_secs_f64();

    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "bench");
    let started = Instant::now();
    let mut listed = 0usize;
    let mut lp = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&lp).await?;
        listed += page.items.len();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    let list_secs = started.elapsed().as_secs_f64();
    // 100k objects plus the namespace's kube-root-ca.crt.
    assert!(listed > objects, "listed {listed} of {objects}");

    println!("objects: {objects}, clients: {CLIENTS}, page: {PAGE}");
    println!(
        "create: {:.2} s, {:.0} creates/s",
        create_secs,
        objects as f64 / create_secs
    );
    println!(
        "list:   {:.2} s, {:.0} listed objects/s",
        list_secs,
        listed as f64 / list_secs
    );
    println!("peak RSS: {:.0} MiB", peak_rss_mib());
    cluster.shutdown().await?;
    Ok(())
}
