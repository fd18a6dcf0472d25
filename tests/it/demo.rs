//! `lifeboat demo`: the region-loss drill a newcomer runs first, end to end, as a user runs it.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::{lifeboat_cmd, stderr};

/// Whether `lifeboat backup`/`restore` move volume data in this build (issue 6). Until they
/// do, the drill's `volume-data` check must fail — and be the only failing check, so the demo
/// exits 1. Flip this when volume data lands: then every check must pass and the demo exit 0.
const VOLUME_DATA_LANDED: bool = false;

fn checks(report: &Value) -> BTreeMap<String, (bool, String)> {
    report["checks"]
        .as_array()
        .expect("the report lists its checks")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                (c["passed"].as_bool().unwrap(), c["detail"].as_str().unwrap_or_default().to_owned()),
            )
        })
        .collect()
}

#[test]
fn demo_drill_restores_the_newest_complete_backup_and_reports_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = lifeboat_cmd(dir.path(), &["demo", "--output", "json"])
        .output()
        .unwrap();
    let err = stderr(&out);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); exit {:?}; stderr:\n{err}", out.status.code()));
    let checks = checks(&report);
    eprintln!("demo took {:.0}s: {report:#}", started.elapsed().as_secs_f64());

    // Every check the demo promises is there, with its outcome.
    for id in [
        "restore-point",
        "incomplete-skipped",
        "restore-succeeded",
        "objects",
        "configmap",
        "secret",
        "service-addresses",
        "storage-class",
        "pods-running",
        "zones",
        "volume-data",
    ] {
        assert!(checks.contains_key(id), "check {id} missing: {checks:?}");
    }
    for (id, (passed, detail)) in &checks {
        if id == "volume-data" {
            assert_eq!(
                *passed, VOLUME_DATA_LANDED,
                "volume-data: {detail} (flip VOLUME_DATA_LANDED once volume data lands)"
            );
        } else {
            assert!(passed, "check {id} failed: {detail}\nstderr:\n{err}");
        }
    }
    assert_eq!(report["ok"], VOLUME_DATA_LANDED);
    assert_eq!(
        out.status.code(),
        Some(if VOLUME_DATA_LANDED { 0 } else { 1 }),
        "exit code; stderr:\n{err}"
    );

    // The drill restored the complete backup and said why it passed over the newer one.
    assert_eq!(report["restore"]["backup"], "shop-1");
    assert!(
        report["restore"]["passedOver"][0]
            .as_str()
            .unwrap()
            .starts_with("shop-2: "),
        "{}",
        report["restore"]
    );
    assert_eq!(report["replication"]["completeOnSecondary"][0], serde_json::json!(["shop-1", true]));
    assert_eq!(report["replication"]["completeOnSecondary"][1], serde_json::json!(["shop-2", false]));
    // Measured, not invented: the RPO spans the second backup, the RTO the restore.
    let (rpo, rto) = (report["rpoSeconds"].as_f64().unwrap(), report["rtoSeconds"].as_f64().unwrap());
    assert!(rpo > 0.0 && rpo < report["durationSeconds"].as_f64().unwrap(), "RPO {rpo}");
    assert!(rto > 0.0 && rto >= report["restore"]["seconds"].as_f64().unwrap(), "RTO {rto}");
    assert!(report["objectsRestored"].as_u64().unwrap() >= 8, "{report}");

    // It teaches the commands: each one it ran was printed, and they are the real CLI's.
    let commands: Vec<&str> = report["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for want in ["lifeboat backup ", "lifeboat list ", "lifeboat verify ", "lifeboat restore --config lifeboat.yaml --to secondary"] {
        assert!(commands.iter().any(|c| c.starts_with(want)), "{want} not in {commands:?}");
        assert!(err.contains(&format!("$ {want}")), "{want} not printed:\n{err}");
    }
    // A temporary workdir is removed.
    let workdir = std::path::Path::new(report["workdir"].as_str().unwrap());
    assert!(!workdir.exists(), "{} left behind", workdir.display());
}
