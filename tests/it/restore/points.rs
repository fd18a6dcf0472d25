//! Issue 14: a restore point covers what the restore needs. The scope a backup records, the
//! newer backups `latest` passes over (and why), the risks of naming one that lacks something,
//! and a manifest that does not parse beside good ones.

use serde_json::{Value, json};

use super::Regions;
use crate::seed::post;
use crate::support::{lifeboat, stderr, stdout};
use crate::volumes::claim_dir;

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("one JSON document:\n{}\n{}", stdout(out), stderr(out)))
}

fn risk_kinds(doc: &Value) -> Vec<String> {
    doc["plan"]["risks"]
        .as_array()
        .unwrap_or_else(|| panic!("no plan: {doc}"))
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_passes_over_a_no_volumes_and_a_partially_failed_backup_and_naming_either_exits_3() {
    let r = Regions::new().await;
    let p = &r.primary.client;
    std::fs::write(
        claim_dir(p, "db", "data-postgres-0")
            .await
            .join("PG_VERSION"),
        "17\n",
    )
    .unwrap();
    let backup = |name: &str, extra: &[&str]| {
        let mut args = vec!["backup", "--name", name, "-o", "json"];
        args.extend_from_slice(extra);
        let out = lifeboat(r.path(), &args);
        (out.status.code(), json_of(&out))
    };
    let (code, doc) = backup("full", &[]);
    assert_eq!(code, Some(0), "{doc}");
    let (code, doc) = backup("novol", &["--no-volumes"]);
    assert_eq!(code, Some(0), "{doc}");
    // A claim that never binds (no class "fast"): its data cannot be taken, the backup is
    // PartiallyFailed.
    post(p, "/api/v1/namespaces/shop/persistentvolumeclaims", json!({
        "metadata": {"name": "fast-data"},
        "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    })).await;
    let (code, doc) = backup("partial", &[]);
    assert_eq!(code, Some(3), "{doc}");
    assert_eq!(doc["status"], "PartiallyFailed");
    r.replicate_all(21).await;

    // The manifests record the scope; list and describe show it.
    let out = lifeboat(r.path(), &["list", "-l", "dr", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = json_of(&out);
    let row = |name: &str| {
        listed["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {listed}"))
            .clone()
    };
    assert_eq!(row("full")["volumeData"], true, "{listed}");
    assert_eq!(row("full")["claims"], row("full")["claimsWithData"]);
    assert_eq!(row("novol")["volumeData"], false, "{listed}");
    assert_eq!(row("novol")["claimsWithData"], 0, "{listed}");
    assert!(row("novol")["claims"].as_u64().unwrap() >= 2, "{listed}");
    assert_eq!(row("partial")["status"], "PartiallyFailed");
    let out = lifeboat(r.path(), &["list", "-l", "dr"]);
    assert!(stdout(&out).contains("none taken"), "{}", stdout(&out));
    let out = lifeboat(r.path(), &["describe", "novol", "-l", "dr", "-o", "json"]);
    let m = json_of(&out);
    assert_eq!(m["details"]["scope"]["volumeData"], false, "{m}");
    let claims = m["details"]["scope"]["claims"].as_array().unwrap();
    assert!(
        claims.iter().any(|c| c["pvc"] == "data-postgres-0"
            && c["data"] == false
            && c["reason"].as_str().unwrap().contains("no volume data")),
        "{claims:?}"
    );
    let out = lifeboat(r.path(), &["describe", "partial", "-l", "dr"]);
    let text = stdout(&out);
    assert!(
        text.contains("Volume data: taken") && text.contains("shop/fast-data"),
        "{text}"
    );
    assert!(text.contains("Status:      PartiallyFailed"), "{text}");

    // `latest` is the full backup; the two newer ones are passed over with their reason.
    let (code, doc, err) = r.restore(&["--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    let point = &doc["plan"]["restorePoint"];
    assert_eq!(point["name"], "full", "{point}");
    let passed: Vec<(&str, &str)> = point["passedOver"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        passed,
        [("partial", "partial-backup"), ("novol", "no-volume-data")]
    );
    assert!(risk_kinds(&doc).iter().all(|k| k != "no-volume-data"));
    let out = lifeboat(r.path(), &["restore", "--to", "secondary", "--dry-run"]);
    let text = stdout(&out);
    assert!(
        text.contains("passed over partial: PartiallyFailed (volume shop/fast-data"),
        "{text}"
    );
    assert!(
        text.contains("passed over novol: no volume data of db/data-postgres-0"),
        "{text}"
    );
    // --allow-partial takes the PartiallyFailed one, as a risk, when it holds the data of
    // every claim restored: here those of db (shop's fast-data has none).
    let (code, doc, err) = r.restore(&["--dry-run", "--allow-partial"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(doc["plan"]["restorePoint"]["name"], "full");
    assert_eq!(
        doc["plan"]["restorePoint"]["passedOver"][0]["reason"],
        "no-volume-data"
    );
    let (code, doc, err) =
        r.restore(&["--dry-run", "--allow-partial", "--include-namespaces", "db"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(doc["plan"]["restorePoint"]["name"], "partial");
    assert!(risk_kinds(&doc).contains(&"partial-backup".to_owned()));

    // Named, each is restored with its shortfall as a risk, and the run ends with exit 3.
    let (code, doc, err) = r.restore(&["--backup", "novol"]);
    assert_eq!(code, Some(3), "{err}\n{}", doc["report"]);
    assert!(
        doc["report"]["failed"].as_array().unwrap().is_empty(),
        "{doc}"
    );
    let risks = doc["plan"]["risks"].to_string();
    assert!(
        risk_kinds(&doc).contains(&"no-volume-data".to_owned())
            && risks.contains("db/data-postgres-0"),
        "{risks}"
    );
    let (code, doc, err) = r.restore(&["--backup", "partial"]);
    assert_eq!(code, Some(3), "{err}\n{}", doc["report"]);
    let kinds = risk_kinds(&doc);
    assert!(kinds.contains(&"partial-backup".to_owned()), "{kinds:?}");
    assert!(
        doc["plan"]["risks"].to_string().contains("shop/fast-data"),
        "the risk carries the backup's warnings: {}",
        doc["plan"]["risks"]
    );
    // The claims the named no-volumes restore created empty are not this restore's to fill.
    assert!(kinds.contains(&"claim-not-ours".to_owned()), "{kinds:?}");
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_manifest_is_named_and_skipped_by_list_and_latest_and_selectors_choose() {
    let r = Regions::new().await;
    r.backup("b1");
    let out = lifeboat(
        r.path(),
        &[
            "backup",
            "--no-volumes",
            "--name",
            "b2",
            "--label",
            "tier=gold",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    r.backup("b3");
    let path = r.path().join("repo/backups/b3/manifest.json");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    r.replicate_all(4).await;

    let out = lifeboat(r.path(), &["list", "-l", "dr", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = json_of(&out);
    let names: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b1", "b2"]);
    assert_eq!(listed["unreadable"][0]["name"], "b3", "{listed}");
    assert!(
        stderr(&out).contains("backup b3 is not listed")
            && stderr(&out).contains("backups/b3/manifest.json"),
        "{}",
        stderr(&out)
    );
    let out = lifeboat(r.path(), &["list", "-l", "dr", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("b3"), "{}", stderr(&out));

    let (code, doc, err) = r.restore(&["--dry-run", "--no-volumes"]);
    assert_eq!(code, Some(0), "{err}");
    let point = &doc["plan"]["restorePoint"];
    assert_eq!(point["name"], "b2", "{point}");
    assert_eq!(point["unreadable"][0]["name"], "b3", "{point}");
    let out = lifeboat(
        r.path(),
        &["restore", "--to", "secondary", "--dry-run", "--no-volumes"],
    );
    assert!(
        stdout(&out).contains("passed over b3: its manifest cannot be read"),
        "{}",
        stdout(&out)
    );
    // Selectors choose among backups: only b2 is gold; no schedule made any of them.
    let (code, doc, err) = r.restore(&["--dry-run", "--no-volumes", "--selector", "tier=gold"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(doc["plan"]["restorePoint"]["name"], "b2");
    let (code, _, err) = r.restore(&["--dry-run", "--no-volumes", "--from-schedule", "nightly"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no usable backup"), "{err}");

    // Deleting still refuses to run on a location with a manifest it cannot read.
    let out = lifeboat(r.path(), &["prune", "-l", "primary", "--keep-last", "1"]);
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stderr(&out).contains("b3"), "{}", stderr(&out));
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}
