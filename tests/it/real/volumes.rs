//! Volume data through real control planes: the real snapshot-controller cuts CSI
//! VolumeSnapshots (the agent plays the csi-snapshotter sidecar), the real PV controller binds
//! the claims the agent provisions, the real Job controller runs lifeboat's mover Jobs on the
//! agent's nodes; a StatefulSet's data is backed up, changed, backed up incrementally and
//! restored byte-identical into the real secondary.

use std::path::PathBuf;

use serde_json::Value;

use super::{Cluster, get, real, replicate, restore, wait_until, write_config};
use crate::support::{lifeboat, lifeboat_cmd, stderr, stdout};
use crate::volumes::{dataset, leases_lapsed, leftovers};

/// The directory behind a claim once it is bound (`disk.csi.sim` volumes are directories).
async fn claim_dir(c: &Cluster, ns: &str, pvc: &str) -> PathBuf {
    crate::volumes::claim_dir_within(&c.client, ns, pvc, super::WAIT).await
}

fn summary(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("one JSON document:\n{}\n{}", stdout(out), stderr(out)))
}

#[tokio::test(flavor = "multi_thread")]
async fn statefulset_data_round_trips_byte_identical_through_real_control_planes() {
    let Some(r) = real().await else { return };
    // The application the simulator tests use, created through the real API server (its
    // validation and admission included): namespaces shop, shop-test, db and other, a CRD and
    // its resources, classes, and StatefulSet db/postgres with a claim per replica.
    crate::seed::seed_app(&r.primary.client, "eastus2-1").await;
    let vol0 = claim_dir(&r.primary, "db", "data-postgres-0").await;
    let vol1 = claim_dir(&r.primary, "db", "data-postgres-1").await;
    let spec = dataset::Spec::small();
    dataset::generate(&vol0, &spec).unwrap();
    std::fs::write(vol1.join("PG_VERSION"), "17\n").unwrap();

    let dir = super::workdir();
    write_config(
        dir.path(),
        &r,
        "volumes: { moverImage: \"lifeboat:dev\", leaseSeconds: 5, timeoutSeconds: 300 }\n",
    );
    let scope = ["--include-namespaces", "db,shop"];
    let backup = |name: &str| {
        let mut args = vec!["backup", "--name", name, "-o", "json"];
        args.extend_from_slice(&scope);
        lifeboat(dir.path(), &args)
    };
    let out = backup("v1");
    let s1 = summary(&out);
    assert_eq!(out.status.code(), Some(0), "{s1}\n{}", stderr(&out));

    // About 1 % of the database pages and of the small files change, then an incremental.
    dataset::touch_db_pages(&vol0, spec.db_pages, 1, 99).unwrap();
    dataset::touch_small_files(&vol0, spec.small_files, 1, 98).unwrap();
    let out = backup("v2");
    let s2 = summary(&out);
    assert_eq!(out.status.code(), Some(0), "{s2}\n{}", stderr(&out));
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("repo/backups/v2/manifest.json")).unwrap(),
    )
    .unwrap();
    let v0 = manifest["details"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pvc"] == "data-postgres-0")
        .unwrap()
        .clone();
    assert_eq!(v0["parent"], "v1", "{v0}");
    assert!(v0["reusedChunks"].as_u64().unwrap() > 0, "{v0}");
    assert!(
        v0["newBytes"].as_u64().unwrap() < v0["bytes"].as_u64().unwrap() / 10,
        "{v0}"
    );

    // No snapshot, temporary claim or mover Job is left in the primary.
    for kind in ["volumesnapshots", "pvc", "jobs"] {
        let left = super::kubectl(
            &r.primary,
            &[
                "get",
                kind,
                "-A",
                "-l",
                "lifeboat.io/temporary=true",
                "-o",
                "name",
            ],
        );
        assert_eq!(left.trim(), "", "{kind} left behind");
    }

    replicate(dir.path(), 17).await;
    let (code, doc, err) = restore(dir.path(), &["--include-namespaces", "db,shop"]);
    assert_eq!(code, Some(0), "{doc}\n{err}");
    assert_eq!(doc["plan"]["restorePoint"]["name"], "v2", "{doc}");
    let volumes = doc["report"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    assert!(
        volumes.iter().all(|v| v["status"] == "restored"),
        "{volumes:?}"
    );

    let restored0 = claim_dir(&r.secondary, "db", "data-postgres-0").await;
    let restored1 = claim_dir(&r.secondary, "db", "data-postgres-1").await;
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
    // The real StatefulSet controller adopts the filled claims and brings up both replicas.
    super::kubectl(
        &r.secondary,
        &[
            "rollout",
            "status",
            "statefulset/postgres",
            "-n",
            "db",
            "--timeout=120s",
        ],
    );
    for kind in ["pvc", "jobs"] {
        let left = super::kubectl(
            &r.secondary,
            &[
                "get",
                kind,
                "-A",
                "-l",
                "lifeboat.io/temporary=true",
                "-o",
                "name",
            ],
        );
        assert_eq!(left.trim(), "", "{kind} left behind in the secondary");
    }

    // A run killed while a mover works leaves its snapshot, claim and Job; once their lease has
    // lapsed, the next run deletes them.
    let mut child = lifeboat_cmd(
        dir.path(),
        &["backup", "--name", "killed", scope[0], scope[1]],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    wait_until("a mover Job of the killed run", || async {
        let jobs = get(
            &r.primary,
            "/apis/batch/v1/jobs?labelSelector=lifeboat.io%2Frole%3Dmover",
        )
        .await?;
        (!jobs["items"].as_array()?.is_empty()).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let left = leftovers(&r.primary.client).await;
    assert!(
        left.iter().any(|l| l.contains("volumesnapshots")),
        "the killed run left its snapshot: {left:?}"
    );
    wait_until("the killed run's leases to lapse", || async {
        leases_lapsed(&r.primary.client).await.then_some(())
    })
    .await;
    let out = backup("after");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Deleting a claim or snapshot waits for its controllers' finalizers: poll until gone.
    wait_until("no temporary object left", || async {
        leftovers(&r.primary.client).await.is_empty().then_some(())
    })
    .await;
}
