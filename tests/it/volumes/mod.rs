//! Volume data end to end (issue 6): snapshots and mover Jobs in a simulated primary, restore
//! into a simulated secondary from a read-only replica, hostile indexes, corrupted chunks, and
//! no temporary object left behind.

mod damage;
mod interrupt;
mod kill;
pub mod rerun;

use std::path::PathBuf;

use serde_json::Value;

include!("../../../fixtures/volume/dataset.rs");

use crate::restore::{Regions, get};
use crate::sim::{eventually, eventually_within};
use crate::support::{lifeboat, stderr, stdout};

/// The directory of a claim's volume once it is bound (`disk.csi.sim` volumes are directories).
pub async fn claim_dir(client: &kube::Client, ns: &str, pvc: &str) -> PathBuf {
    claim_dir_within(client, ns, pvc, crate::sim::WAIT).await
}

/// [`claim_dir`], waiting at most `wait` for the binding.
pub async fn claim_dir_within(
    client: &kube::Client,
    ns: &str,
    pvc: &str,
    wait: std::time::Duration,
) -> PathBuf {
    let path = format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{pvc}");
    let volume = eventually_within(&format!("claim {ns}/{pvc} bound"), wait, || async {
        let c = get(client, &path).await?;
        (c["status"]["phase"] == "Bound")
            .then(|| c["spec"]["volumeName"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    let pv = get(client, &format!("/api/v1/persistentvolumes/{volume}"))
        .await
        .expect("the bound volume exists");
    PathBuf::from(
        pv["spec"]["csi"]["volumeHandle"]
            .as_str()
            .expect("a CSI volume"),
    )
}

/// lifeboat's temporary objects in a cluster: snapshots, claims, Jobs, Secrets (with their
/// kind's path).
pub async fn temporary_objects(client: &kube::Client) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for path in [
        "/apis/snapshot.storage.k8s.io/v1/volumesnapshots",
        "/api/v1/persistentvolumeclaims",
        "/apis/batch/v1/jobs",
        // A restore's just-in-time credentials for its movers (issue 14).
        "/api/v1/secrets",
    ] {
        let list = get(
            client,
            &format!("{path}?labelSelector=lifeboat.io%2Ftemporary%3Dtrue"),
        )
        .await
        .unwrap_or_default();
        for o in list["items"].as_array().into_iter().flatten() {
            out.push((path, o.clone()));
        }
    }
    out
}

/// Returns true if and only if every temporary object's `lifeboat.io/alive-until` lease has
/// passed.
pub async fn leases_lapsed(client: &kube::Client) -> bool {
    let now = jiff::Timestamp::now();
    temporary_objects(client).await.iter().all(|(_, o)| {
        o["metadata"]["annotations"]["lifeboat.io/alive-until"]
            .as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .is_none_or(|until| until < now)
    })
}

/// Temporary objects of lifeboat's left in a cluster, as `path namespace/name`.
pub async fn leftovers(client: &kube::Client) -> Vec<String> {
    temporary_objects(client)
        .await
        .into_iter()
        .map(|(path, o)| {
            format!(
                "{path} {}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("one JSON document:\n{}\n{}", stdout(out), stderr(out)))
}

fn manifest(dir: &std::path::Path, name: &str) -> Value {
    serde_json::from_slice(
        &std::fs::read(dir.join(format!("repo/backups/{name}/manifest.json"))).unwrap(),
    )
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
    assert!(
        records.contains(&("data-postgres-0", "completed")),
        "{vols:?}"
    );
    assert!(
        records.contains(&("data-postgres-1", "completed")),
        "{vols:?}"
    );
    assert!(!m1["packs"].as_array().unwrap().is_empty());
    assert_eq!(leftovers(primary).await, Vec::<String>::new());

    // Incremental: ~1 % of the database pages and of the small files change.
    let changed = dataset::touch_db_pages(&vol0, spec.db_pages, 1, 99).unwrap()
        + dataset::touch_small_files(&vol0, spec.small_files, 1, 98).unwrap();
    let out = lifeboat(regions.path(), &["backup", "--name", "v2", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
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
    let (new_chunks, new_bytes) = (
        v0["newChunks"].as_u64().unwrap(),
        v0["newBytes"].as_u64().unwrap(),
    );
    assert!(
        new_chunks <= 2 * units + 2,
        "{new_chunks} new chunks for {units} changes: {v0}"
    );
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
    assert!(
        volumes.iter().all(|v| v["status"] == "restored"),
        "{volumes:?}"
    );
    let secondary = &regions.secondary.client;
    let restored0 = claim_dir(secondary, "db", "data-postgres-0").await;
    let restored1 = claim_dir(secondary, "db", "data-postgres-1").await;
    let (want, got) = (
        dataset::tree(&vol0).unwrap(),
        dataset::tree(&restored0).unwrap(),
    );
    assert!(want.len() > spec.small_files, "{}", want.len());
    for (path, node) in &want {
        assert_eq!(got.get(path), Some(node), "{path} differs after restore");
    }
    assert_eq!(want.len(), got.len(), "extra entries restored");
    assert_eq!(
        std::fs::read(restored1.join("PG_VERSION")).unwrap(),
        b"17\n"
    );
    // The workload was created after its data, and the restore left no mover Job behind.
    assert!(
        get(
            secondary,
            "/apis/apps/v1/namespaces/db/statefulsets/postgres"
        )
        .await
        .is_some()
    );
    assert_eq!(leftovers(secondary).await, Vec::<String>::new());
}

/// Merge-patches an object's annotations.
pub async fn annotate(client: &kube::Client, path: &str, annotations: Value) {
    let req = http::Request::patch(path)
        .header("content-type", "application/merge-patch+json")
        .body(
            serde_json::to_vec(&serde_json::json!({"metadata": {"annotations": annotations}}))
                .unwrap(),
        )
        .unwrap();
    client.request::<Value>(req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_run_around_the_snapshot_and_a_failing_pre_hook_fails_only_its_volume() {
    let regions = Regions::new().await;
    let primary = &regions.primary.client;
    claim_dir(primary, "db", "data-postgres-0").await;
    claim_dir(primary, "db", "data-postgres-1").await;
    let pods = "/api/v1/namespaces/db/pods";
    eventually("postgres pods running", || async {
        let p0 = get(primary, &format!("{pods}/postgres-0")).await?;
        let p1 = get(primary, &format!("{pods}/postgres-1")).await?;
        (p0["status"]["phase"] == "Running" && p1["status"]["phase"] == "Running").then_some(())
    })
    .await;
    annotate(
        primary,
        &format!("{pods}/postgres-0"),
        serde_json::json!({
            "pre.hook.backup.lifeboat.io/command": "[\"psql\", \"-c\", \"CHECKPOINT\"]",
            "pre.hook.backup.lifeboat.io/container": "pg",
            "post.hook.backup.lifeboat.io/command": "echo thawed",
        }),
    )
    .await;
    // The simulator fails execs whose command contains the pod's `sim.lifeboat.io/exec-fail`.
    annotate(
        primary,
        &format!("{pods}/postgres-1"),
        serde_json::json!({
            "pre.hook.backup.lifeboat.io/command": "fsfreeze --freeze /var/lib/postgresql",
            "sim.lifeboat.io/exec-fail": "fsfreeze --freeze",
        }),
    )
    .await;

    let out = lifeboat(
        regions.path(),
        &["backup", "--name", "hooked", "-o", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let doc = json_of(&out);
    let warnings = doc["warnings"].to_string();
    assert!(
        warnings.contains("db/data-postgres-1 failed") && warnings.contains("pre-hook"),
        "{warnings}"
    );
    let m = manifest(regions.path(), "hooked");
    let vols = m["details"]["volumes"].as_array().unwrap();
    let v0 = vols.iter().find(|v| v["pvc"] == "data-postgres-0").unwrap();
    let v1 = vols.iter().find(|v| v["pvc"] == "data-postgres-1").unwrap();
    assert_eq!(v0["status"], "completed", "{v0}");
    assert_eq!(v0["hooks"].as_array().unwrap().len(), 2, "{v0}");
    assert!(
        v0["hooks"][0]
            .as_str()
            .unwrap()
            .starts_with("pre postgres-0[pg]: psql -c CHECKPOINT: ok"),
        "{v0}"
    );
    assert!(
        v0["hooks"][1]
            .as_str()
            .unwrap()
            .starts_with("post postgres-0[pg]: /bin/sh -c echo thawed: ok"),
        "{v0}"
    );
    assert_eq!(v1["status"], "failed", "{v1}");
    assert!(v1["error"].as_str().unwrap().contains("pre-hook"), "{v1}");

    // The simulator recorded each exec as an Event on the pod: pre before the snapshot was
    // cut, post after.
    let events = get(primary, "/api/v1/namespaces/db/events").await.unwrap();
    let at = |needle: &str| -> jiff::Timestamp {
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == "Exec" && e["message"].as_str().unwrap_or("").contains(needle))
            .unwrap_or_else(|| panic!("no Exec event for {needle}: {events}"))["firstTimestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let cut: jiff::Timestamp = v0["snapshotTime"].as_str().unwrap().parse().unwrap();
    assert!(at("CHECKPOINT") <= cut && cut <= at("echo thawed"));
    assert_eq!(leftovers(primary).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_that_fails_to_restore_holds_back_only_the_workloads_mounting_it() {
    let regions = Regions::new().await;
    let primary = &regions.primary.client;
    let vol0 = claim_dir(primary, "db", "data-postgres-0").await;
    let vol1 = claim_dir(primary, "db", "data-postgres-1").await;
    std::fs::write(vol0.join("PG_VERSION"), "17\n").unwrap();
    std::fs::write(vol1.join("replica-state"), "streaming from postgres-0\n").unwrap();
    let out = lifeboat(regions.path(), &["backup", "--name", "b", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    regions.replicate_all(5).await;

    // Damage the replica's copy of data-postgres-1's only chunk.
    let index_path = regions
        .path()
        .join("replica/backups/b/volumes/db/data-postgres-1.json");
    let index =
        lifeboat::repo::index::VolumeIndex::from_json(&std::fs::read(index_path).unwrap()).unwrap();
    let chunk = index.files().next().unwrap().chunks[0];
    let pack = regions
        .path()
        .join("replica")
        .join(index.packs[chunk.pack as usize].key());
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[(chunk.offset + chunk.length / 2) as usize] ^= 0xff;
    std::fs::write(&pack, bytes).unwrap();

    let (code, doc, err) = regions.restore(&[]);
    assert_eq!(code, Some(3), "{doc}\n{err}");
    let volumes = doc["report"]["volumes"].as_array().unwrap();
    let status = |pvc: &str| {
        volumes
            .iter()
            .find(|v| v["pvc"] == pvc)
            .unwrap_or_else(|| panic!("{pvc}: {volumes:?}"))
            .clone()
    };
    assert_eq!(status("data-postgres-0")["status"], "restored");
    let failed = status("data-postgres-1");
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("replica-state"),
        "{failed}"
    );
    let failures = doc["report"]["failed"].to_string();
    assert!(
        failures.contains("StatefulSet db/postgres") && failures.contains("held back"),
        "{failures}"
    );
    let secondary = &regions.secondary.client;
    assert!(
        get(
            secondary,
            "/apis/apps/v1/namespaces/db/statefulsets/postgres"
        )
        .await
        .is_none()
    );
    // Workloads that mount nothing that failed are restored.
    let deployments = get(secondary, "/apis/apps/v1/deployments").await.unwrap();
    assert!(
        !deployments["items"].as_array().unwrap().is_empty(),
        "{deployments}"
    );
    let restored0 = claim_dir(secondary, "db", "data-postgres-0").await;
    assert_eq!(
        std::fs::read(restored0.join("PG_VERSION")).unwrap(),
        b"17\n"
    );
}
