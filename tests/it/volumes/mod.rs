//! Volume data end to end (issue 6): snapshots and mover Jobs in a simulated primary, restore
//! into a simulated secondary from a read-only replica, hostile indexes, corrupted chunks, and
//! no temporary object left behind.

mod damage;
mod kill;

use std::path::PathBuf;

use serde_json::Value;

include!("../../../fixtures/volume/dataset.rs");

use crate::restore::{Regions, get};
use crate::sim::eventually;
use crate::support::{lifeboat, stderr, stdout};

/// The directory of a claim's volume once it is bound (`disk.csi.sim` volumes are directories).
pub async fn claim_dir(client: &kube::Client, ns: &str, pvc: &str) -> PathBuf {
    let path = format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{pvc}");
    let volume = eventually(&format!("claim {ns}/{pvc} bound"), || async {
        let c = get(client, &path).await?;
        (c["status"]["phase"] == "Bound")
            .then(|| c["spec"]["volumeName"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    let pv = get(client, &format!("/api/v1/persistentvolumes/{volume}"))
        .await
        .expect("the bound volume exists");
    PathBuf::from(pv["spec"]["csi"]["volumeHandle"].as_str().expect("a CSI volume"))
}

/// Temporary objects of lifeboat's left in a cluster: snapshots, claims, Jobs.
pub async fn leftovers(client: &kube::Client) -> Vec<String> {
    let mut out = Vec::new();
    for path in [
        "/apis/snapshot.storage.k8s.io/v1/volumesnapshots",
        "/api/v1/persistentvolumeclaims",
        "/apis/batch/v1/jobs",
    ] {
        let list = get(client, &format!("{path}?labelSelector=lifeboat.io%2Ftemporary%3Dtrue"))
            .await
            .unwrap_or_default();
        for o in list["items"].as_array().into_iter().flatten() {
            out.push(format!(
                "{path} {}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("one JSON document:\n{}\n{}", stdout(out), stderr(out)))
}

fn manifest(dir: &std::path::Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("repo/backups/{name}/manifest.json"))).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn statefulset_data_is_backed_up_incrementally_and_restored_identically_in_the_secondary() {
    let regions = Regions::new().await;
    let primary = &regions.primary.client;
    // The seeded StatefulSet db/postgres has two replicas with a claim each.
    let vol0 = claim_dir(primary, "db", "data-postgres-0").await;
    let vol1 = claim_dir(primary, "db", "data-postgres-1").await;
    let spec = dataset::Spec::small();
    dataset::generate(&vol0, &spec).unwrap();
    std::fs::write(vol1.join("PG_VERSION"), "17\n").unwrap();

    let out = lifeboat(regions.path(), &["backup", "--name", "v1", "-o", "json"]);
    let doc = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{doc}\n{}", stderr(&out));
    let m1 = manifest(regions.path(), "v1");
    let vols = m1["details"]["volumes"].as_array().unwrap();
    let records: Vec<(&str, &str)> = vols
        .iter()
        .map(|v| (v["pvc"].as_str().unwrap(), v["status"].as_str().unwrap()))
        .collect();
    assert!(records.contains(&("data-postgres-0", "completed")), "{vols:?}");
    assert!(records.contains(&("data-postgres-1", "completed")), "{vols:?}");
    assert!(!m1["packs"].as_array().unwrap().is_empty());
    assert_eq!(leftovers(primary).await, Vec::<String>::new());

    // Incremental: ~1 % of the database pages and of the small files change.
    let changed = dataset::touch_db_pages(&vol0, spec.db_pages, 1, 99).unwrap()
        + dataset::touch_small_files(&vol0, spec.small_files, 1, 98).unwrap();
    let out = lifeboat(regions.path(), &["backup", "--name", "v2", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    let m2 = manifest(regions.path(), "v2");
    let v0 = m2["details"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pvc"] == "data-postgres-0")
        .unwrap()
        .clone();
    assert_eq!(v0["parent"], "v1", "{v0}");
    assert!(v0["reusedChunks"].as_u64().unwrap() > 0, "{v0}");
    // Each changed page or file costs at most a chunk or two (64 KiB average, 256 KiB max).
    let units = (spec.db_pages.div_ceil(100) + spec.small_files.div_ceil(100)) as u64;
    let (new_chunks, new_bytes) = (v0["newChunks"].as_u64().unwrap(), v0["newBytes"].as_u64().unwrap());
    assert!(new_chunks <= 2 * units + 2, "{new_chunks} new chunks for {units} changes: {v0}");
    assert!(
        new_bytes <= units * (256 << 10) && new_bytes < v0["bytes"].as_u64().unwrap() / 10,
        "{new_bytes} new bytes for {changed} bytes changed: {v0}"
    );
    assert_eq!(leftovers(primary).await, Vec::<String>::new());

    // The secondary reads a read-only replica; v2 is the newest complete backup there.
    regions.replicate_all(11).await;
    let (code, doc, err) = regions.restore(&[]);
    assert_eq!(code, Some(0), "{doc}\n{err}");
    let volumes = doc["report"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    assert!(volumes.iter().all(|v| v["status"] == "restored"), "{volumes:?}");
    let secondary = &regions.secondary.client;
    let restored0 = claim_dir(secondary, "db", "data-postgres-0").await;
    let restored1 = claim_dir(secondary, "db", "data-postgres-1").await;
    let (want, got) = (dataset::tree(&vol0).unwrap(), dataset::tree(&restored0).unwrap());
    assert!(want.len() > spec.small_files, "{}", want.len());
    for (path, node) in &want {
        assert_eq!(got.get(path), Some(node), "{path} differs after restore");
    }
    assert_eq!(want.len(), got.len(), "extra entries restored");
    assert_eq!(std::fs::read(restored1.join("PG_VERSION")).unwrap(), b"17\n");
    // The workload was created after its data, and the restore left no mover Job behind.
    assert!(get(secondary, "/apis/apps/v1/namespaces/db/statefulsets/postgres").await.is_some());
    assert_eq!(leftovers(secondary).await, Vec::<String>::new());
}
