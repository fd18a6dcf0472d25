//! Issue 14 through real control planes: a restore whose mover fails for a claim (a damaged
//! chunk in the replica) exits 3 with the workload held back; with the cause fixed the same
//! command fills the claim (the real Job controller runs the mover again), the real API server
//! records the fill on the claim, the workload is created only then, exit 0; a third run
//! changes nothing. A restore killed (SIGKILL) while its movers run, its Jobs deleted, is
//! finished by the next run with every file as backed up and nothing temporary left.

use serde_json::{Value, json};

use super::{Cluster, get, real, replicate, restore, unique, write_config};
use crate::support::{lifeboat, stderr, stdout};
use crate::volumes::dataset;
use crate::volumes::rerun::digests;

/// POSTs unless it exists (cluster-wide objects other tests or runs may have made).
async fn ensure(c: &Cluster, path: &str, body: Value) {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    match c.client.request::<Value>(req).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("POST {path}: {e}"),
    }
}

async fn annotations(c: &Cluster, ns: &str, pvc: &str) -> Value {
    get(
        c,
        &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{pvc}"),
    )
    .await
    .unwrap_or_else(|| panic!("claim {ns}/{pvc} missing"))["metadata"]["annotations"]
        .clone()
}

/// A namespace of its own with StatefulSet `pg` (one claim, `data-pg-0`, filled with the small
/// data set), backed up as `b` and replicated: the namespace, the claim's directory, the workdir.
async fn backed_up(
    r: &super::Real,
    prefix: &str,
) -> (String, std::path::PathBuf, tempfile::TempDir) {
    let ns = unique(prefix);
    for c in [&r.primary, &r.secondary] {
        ensure(c, "/apis/storage.k8s.io/v1/storageclasses", json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "rerun-sc"},
            "provisioner": "disk.csi.sim", "volumeBindingMode": "Immediate", "reclaimPolicy": "Delete"
        })).await;
    }
    ensure(
        &r.primary,
        "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses",
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "rerun-snap"}, "driver": "disk.csi.sim", "deletionPolicy": "Delete"
        }),
    )
    .await;
    ensure(
        &r.primary,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await;
    ensure(&r.primary, &format!("/apis/apps/v1/namespaces/{ns}/statefulsets"), json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "pg"},
        "spec": {"serviceName": "pg", "replicas": 1, "selector": {"matchLabels": {"app": "pg"}},
            "template": {"metadata": {"labels": {"app": "pg"}},
                "spec": {"containers": [{"name": "pg", "image": "postgres:17", "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "rerun-sc", "resources": {"requests": {"storage": "1Gi"}}}}]}
    })).await;
    let vol =
        crate::volumes::claim_dir_within(&r.primary.client, &ns, "data-pg-0", super::WAIT).await;
    dataset::generate(&vol, &dataset::Spec::small()).unwrap();

    let dir = super::workdir();
    write_config(
        dir.path(),
        r,
        "volumes: { moverImage: \"lifeboat:dev\", leaseSeconds: 5, timeoutSeconds: 300, snapshotClasses: { disk.csi.sim: rerun-snap } }\n",
    );
    let out = lifeboat(
        dir.path(),
        &[
            "backup",
            "--name",
            "b",
            "--include-namespaces",
            &ns,
            "-o",
            "json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    replicate(dir.path(), 23).await;
    (ns, vol, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_after_a_failed_fill_finishes_the_job_through_real_control_planes() {
    let Some(r) = real().await else { return };
    let (ns, vol, dir) = backed_up(&r, "rerun").await;

    // Damage the replica's copy of the last chunk of the claim's last file with data.
    let (pack, good) = crate::support::damage_last_chunk(dir.path(), "b", &ns, "data-pg-0");

    let scope = ["--include-namespaces", ns.as_str()];
    let sts = format!("/apis/apps/v1/namespaces/{ns}/statefulsets/pg");
    let (code, doc, err) = restore(dir.path(), &scope);
    assert_eq!(code, Some(3), "{err}\n{}", doc["report"]);
    assert!(get(&r.secondary, &sts).await.is_none(), "held back");
    let a = annotations(&r.secondary, &ns, "data-pg-0").await;
    assert_eq!(
        (
            a["lifeboat.io/filled-from"].as_str(),
            a["lifeboat.io/fill"].as_str()
        ),
        (Some("b"), Some("pending")),
        "{a}"
    );

    std::fs::write(&pack, &good).unwrap();
    let (code, doc, err) = restore(dir.path(), &scope);
    assert_eq!(code, Some(0), "{err}\n{}", doc["report"]);
    let volumes = doc["report"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0]["status"], "restored", "{volumes:?}");
    assert_eq!(
        annotations(&r.secondary, &ns, "data-pg-0").await["lifeboat.io/fill"],
        "complete"
    );
    assert!(
        get(&r.secondary, &sts).await.is_some(),
        "the StatefulSet is created"
    );
    let restored =
        crate::volumes::claim_dir_within(&r.secondary.client, &ns, "data-pg-0", super::WAIT).await;
    assert_eq!(digests(&restored), digests(&vol));

    let (code, doc, err) = restore(dir.path(), &scope);
    assert_eq!(code, Some(0), "{err}\n{}", doc["report"]);
    assert_eq!(doc["report"]["created"], 0, "{}", doc["report"]);
    assert!(doc["report"]["volumes"].as_array().unwrap().is_empty());
    assert_eq!(digests(&restored), digests(&vol));
    for kind in ["jobs", "secrets"] {
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
        assert_eq!(left.trim(), "", "{kind} left behind");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_killed_during_fills_is_finished_by_a_rerun_through_real_control_planes() {
    let Some(r) = real().await else { return };
    let (ns, vol, dir) = backed_up(&r, "killed").await;
    let jobs =
        format!("/apis/batch/v1/namespaces/{ns}/jobs?labelSelector=lifeboat.io%2Ftemporary%3Dtrue");
    let mut child = crate::support::lifeboat_cmd(
        dir.path(),
        &["restore", "--to", "secondary", "--include-namespaces", &ns],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    super::wait_until("a mover Job", || async {
        get(&r.secondary, &jobs)
            .await
            .filter(|l| !l["items"].as_array().unwrap().is_empty())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let a = annotations(&r.secondary, &ns, "data-pg-0").await;
    assert_eq!(a["lifeboat.io/fill"], "pending", "{a}");
    super::kubectl(
        &r.secondary,
        &[
            "delete",
            "jobs",
            "-n",
            &ns,
            "-l",
            "lifeboat.io/temporary=true",
            "--wait=true",
        ],
    );

    let (code, doc, err) = restore(dir.path(), &["--include-namespaces", &ns]);
    assert_eq!(code, Some(0), "{err}\n{}", doc["report"]);
    let restored =
        crate::volumes::claim_dir_within(&r.secondary.client, &ns, "data-pg-0", super::WAIT).await;
    assert_eq!(digests(&restored), digests(&vol));
    assert_eq!(
        annotations(&r.secondary, &ns, "data-pg-0").await["lifeboat.io/fill"],
        "complete"
    );
    assert!(
        get(
            &r.secondary,
            &format!("/apis/apps/v1/namespaces/{ns}/statefulsets/pg")
        )
        .await
        .is_some()
    );
    for kind in ["jobs", "secrets"] {
        let left = super::kubectl(
            &r.secondary,
            &[
                "get",
                kind,
                "-n",
                &ns,
                "-l",
                "lifeboat.io/temporary=true",
                "-o",
                "name",
            ],
        );
        assert_eq!(left.trim(), "", "{kind} left behind");
    }
}
