//! Issue 14: reruns finish the job. A claim whose fill failed is filled by the next run of the
//! same command, its workload created only then; a killed restore whose mover Jobs were lost is
//! finished by a rerun, with every file as backed up and nothing temporary left behind.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{claim_dir, dataset, leftovers};
use crate::restore::{Regions, get};
use crate::sim::eventually;
use crate::support::{lifeboat, stderr, stdout};

/// sha256 of every regular file under `dir`, by relative path.
pub fn digests(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(root, &e.path(), out);
            } else if t.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                let bytes = std::fs::read(e.path()).unwrap();
                out.insert(rel, hex::encode(Sha256::digest(&bytes)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn backup(regions: &Regions, name: &str) {
    let out = lifeboat(regions.path(), &["backup", "--name", name, "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

async fn claim(client: &kube::Client, ns: &str, pvc: &str) -> Value {
    get(
        client,
        &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{pvc}"),
    )
    .await
    .unwrap_or_else(|| panic!("claim {ns}/{pvc} missing"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_after_a_failed_fill_fills_the_claim_then_creates_its_workload_and_a_third_changes_nothing()
 {
    let regions = Regions::new().await;
    let primary = &regions.primary.client;
    let vol0 = claim_dir(primary, "db", "data-postgres-0").await;
    let vol1 = claim_dir(primary, "db", "data-postgres-1").await;
    std::fs::write(vol0.join("PG_VERSION"), "17\n").unwrap();
    dataset::generate(&vol1, &dataset::Spec::small()).unwrap();
    backup(&regions, "b");
    regions.replicate_all(5).await;

    // Damage the replica's copy of a chunk of data-postgres-1 (a later one: the mover has
    // written files before it meets it).
    let (pack, good) =
        crate::support::damage_last_chunk(regions.path(), "b", "db", "data-postgres-1");

    let secondary = &regions.secondary.client;
    let sts = "/apis/apps/v1/namespaces/db/statefulsets/postgres";
    let (code, doc, err) = regions.restore(&[]);
    assert_eq!(code, Some(3), "{err}\n{}", doc["report"]);
    assert!(get(secondary, sts).await.is_none(), "held back");
    let c1 = claim(secondary, "db", "data-postgres-1").await;
    assert_eq!(
        c1["metadata"]["annotations"]["lifeboat.io/filled-from"],
        "b"
    );
    assert_eq!(c1["metadata"]["annotations"]["lifeboat.io/fill"], "pending");
    let c0 = claim(secondary, "db", "data-postgres-0").await;
    assert_eq!(
        c0["metadata"]["annotations"]["lifeboat.io/fill"],
        "complete"
    );

    // The cause fixed, the same command: the claim is filled again, then the StatefulSet.
    std::fs::write(&pack, &good).unwrap();
    let (code, doc, err) = regions.restore(&[]);
    assert_eq!(code, Some(0), "{err}\n{}", doc["report"]);
    let volumes = doc["report"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "only the unfinished claim: {volumes:?}");
    assert_eq!(volumes[0]["pvc"], "data-postgres-1");
    assert_eq!(volumes[0]["status"], "restored");
    assert!(
        doc["plan"]["volumeNotes"]
            .to_string()
            .contains("filled again"),
        "{}",
        doc["plan"]["volumeNotes"]
    );
    let live_sts = get(secondary, sts)
        .await
        .expect("the StatefulSet is created");
    let c1 = claim(secondary, "db", "data-postgres-1").await;
    assert_eq!(
        c1["metadata"]["annotations"]["lifeboat.io/fill"],
        "complete"
    );
    // Created after the fill was recorded complete (the claim's last write).
    let filled_rv: u64 = c1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let sts_rv: u64 = live_sts["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        filled_rv < sts_rv,
        "claim rv {filled_rv} after StatefulSet rv {sts_rv}"
    );
    let restored1 = claim_dir(secondary, "db", "data-postgres-1").await;
    assert_eq!(digests(&restored1), digests(&vol1));

    // A third run changes nothing.
    let (code, doc, err) = regions.restore(&[]);
    assert_eq!(code, Some(0), "{err}\n{}", doc["report"]);
    assert_eq!(doc["report"]["created"], 0, "{}", doc["report"]);
    assert_eq!(doc["report"]["updated"], 0, "{}", doc["report"]);
    assert!(
        doc["report"]["volumes"].as_array().unwrap().is_empty(),
        "{}",
        doc["report"]
    );
    assert_eq!(digests(&restored1), digests(&vol1));
    assert_eq!(leftovers(secondary).await, Vec::<String>::new());
}

/// lifeboat's temporary Jobs in the secondary's `db` namespace.
const TEMPORARY_JOBS: &str =
    "/apis/batch/v1/namespaces/db/jobs?labelSelector=lifeboat.io%2Ftemporary%3Dtrue";

/// Starts `restore --to secondary` and SIGKILLs it once a mover Job exists in the secondary:
/// the fills are under way.
async fn kill_restore_during_fills(regions: &Regions) {
    let secondary = &regions.secondary.client;
    let mut child = crate::support::lifeboat_cmd(regions.path(), &["restore", "--to", "secondary"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("a mover Job", || async {
        get(secondary, TEMPORARY_JOBS)
            .await
            .filter(|l| !l["items"].as_array().unwrap().is_empty())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_killed_during_fills_with_its_jobs_deleted_is_finished_by_a_rerun() {
    let regions = Regions::new().await;
    let primary = &regions.primary.client;
    let vol0 = claim_dir(primary, "db", "data-postgres-0").await;
    let vol1 = claim_dir(primary, "db", "data-postgres-1").await;
    dataset::generate(&vol0, &dataset::Spec::small()).unwrap();
    dataset::generate(&vol1, &dataset::Spec::small()).unwrap();
    backup(&regions, "b");
    regions.replicate_all(9).await;

    let secondary = &regions.secondary.client;
    kill_restore_during_fills(&regions).await;
    // Killed before its data was in: the claims are marked unfinished, no workload exists.
    let mut pending = 0;
    for pvc in ["data-postgres-0", "data-postgres-1"] {
        let c = claim(secondary, "db", pvc).await;
        assert_eq!(c["metadata"]["annotations"]["lifeboat.io/filled-from"], "b");
        if c["metadata"]["annotations"]["lifeboat.io/fill"] == "pending" {
            pending += 1;
        }
    }
    assert!(pending > 0, "every fill completed before the kill");
    assert!(
        get(
            secondary,
            "/apis/apps/v1/namespaces/db/statefulsets/postgres"
        )
        .await
        .is_none()
    );
    // Its Jobs lost (deleted, as a node drain or an operator might).
    let list = get(secondary, TEMPORARY_JOBS).await.unwrap();
    for j in list["items"].as_array().unwrap() {
        let name = j["metadata"]["name"].as_str().unwrap();
        let req = http::Request::delete(format!(
            "/apis/batch/v1/namespaces/db/jobs/{name}?propagationPolicy=Background"
        ))
        .body(Vec::new())
        .unwrap();
        secondary.request::<Value>(req).await.unwrap();
    }

    let (code, doc, err) = regions.restore(&[]);
    assert_eq!(code, Some(0), "{err}\n{}", doc["report"]);
    for (pvc, source) in [("data-postgres-0", &vol0), ("data-postgres-1", &vol1)] {
        let restored = claim_dir(secondary, "db", pvc).await;
        assert_eq!(digests(&restored), digests(source), "{pvc}");
        let c = claim(secondary, "db", pvc).await;
        assert_eq!(c["metadata"]["annotations"]["lifeboat.io/fill"], "complete");
    }
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

#[tokio::test(flavor = "multi_thread")]
async fn a_run_with_no_claims_to_fill_sweeps_the_lapsed_mover_jobs_of_a_killed_one() {
    let regions = Regions::new().await;
    let primary = &regions.primary.client;
    let vol0 = claim_dir(primary, "db", "data-postgres-0").await;
    dataset::generate(&vol0, &dataset::Spec::small()).unwrap();
    backup(&regions, "b");
    regions.replicate_all(3).await;

    let secondary = &regions.secondary.client;
    kill_restore_during_fills(&regions).await;
    assert!(!leftovers(secondary).await.is_empty());
    // Nobody renews the killed run's leases (3 s).
    eventually("the killed run's leases to lapse", || async {
        super::leases_lapsed(secondary).await.then_some(())
    })
    .await;

    // A restore of another namespace, with no claim to fill, deletes them first.
    let (code, doc, err) = regions.restore(&["--include-namespaces", "shop"]);
    assert_eq!(code, Some(0), "{err}\n{}", doc["report"]);
    assert!(
        doc["report"]["volumes"].as_array().unwrap().is_empty(),
        "{}",
        doc["report"]
    );
    let swept = doc["report"]["swept"].to_string();
    assert!(swept.contains("jobs db/lifeboat-restore-"), "{swept}");
    assert_eq!(leftovers(secondary).await, Vec::<String>::new());
}
