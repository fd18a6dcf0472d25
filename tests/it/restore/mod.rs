//! `lifeboat restore --to secondary` end to end between two simulated regions (issue 5).

mod azurite;
mod classes;
mod credentials;
mod owners;
mod points;
mod replicate;
mod versions;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lifeboat::storage::local::LocalBackend;
use lifeboat::storage::{Reader, Writer};
use serde_json::{Value, json};

use crate::seed::{post, seed_app};
use crate::sim::{Sim, eventually, start_with};
use crate::support::{lifeboat, stderr, stdout};

/// Two regions: a seeded primary (eastus2, 10.0.0.0/16) and an empty secondary (centralus,
/// 10.1.0.0/16), a writable `primary` location and a read-only `dr` replica of it.
pub struct Regions {
    pub primary: Sim,
    pub secondary: Sim,
    pub dir: tempfile::TempDir,
}

const ZONE_MAP: &str = "{ eastus2-1: centralus-1, eastus2-2: centralus-2, eastus2-3: centralus-3 }";

pub async fn region(name: &str, zone_prefix: &str, cidr: &str) -> Sim {
    let (name, zone_prefix, cidr) = (name.to_owned(), zone_prefix.to_owned(), cidr.to_owned());
    start_with(move |c| {
        c.name = name;
        c.zones = (1..=3).map(|i| format!("{zone_prefix}-{i}")).collect();
        c.service_cidr = cidr;
    })
    .await
}

impl Regions {
    pub async fn new() -> Regions {
        let primary = region("primary", "eastus2", "10.0.0.0/16").await;
        let secondary = region("secondary", "centralus", "10.1.0.0/16").await;
        seed_app(&primary.client, "eastus2-1").await;
        let dir = tempfile::tempdir().unwrap();
        let r = Regions {
            primary,
            secondary,
            dir,
        };
        r.write_config(ZONE_MAP);
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Config with both clusters, the primary location, its read-only replica `dr`, and the
    /// `secondary` restore profile with this zone map.
    pub fn write_config(&self, zone_map: &str) {
        let cfg = format!(
            "clusters:\n  primary: {{ context: primary, kubeconfig: {:?} }}\n  secondary: {{ context: secondary, kubeconfig: {:?} }}\n\
             locations:\n  primary: {{ local: {{ path: repo }} }}\n  dr: {{ readOnly: true, local: {{ path: replica }} }}\n\
             defaults: {{ cluster: primary, location: primary }}\n\
             volumes: {{ moverImage: \"lifeboat:dev\", leaseSeconds: 3, timeoutSeconds: 120 }}\n\
             restore:\n  secondary:\n    cluster: secondary\n    from: dr\n    zoneMap: {zone_map}\n",
            self.primary.cluster.kubeconfig_path(),
            self.secondary.cluster.kubeconfig_path(),
        );
        std::fs::write(self.path().join("lifeboat.yaml"), cfg).unwrap();
    }

    pub fn backup(&self, name: &str) {
        let out = lifeboat(self.path(), &["backup", "--no-volumes", "--name", name]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    pub fn stores(&self) -> (Reader, Writer) {
        let from = Writer::new(Arc::new(LocalBackend::new(self.path().join("repo")))).reader();
        let to = Writer::new(Arc::new(LocalBackend::new(self.path().join("replica"))));
        (from, to)
    }

    /// Replicates everything written so far.
    pub async fn replicate_all(&self, seed: u64) {
        let (from, to) = self.stores();
        replicate::replicate(&from, &to, seed, |_| true).await;
    }

    pub fn restore(&self, args: &[&str]) -> (Option<i32>, Value, String) {
        let mut all = vec!["restore", "--to", "secondary", "-o", "json"];
        all.extend_from_slice(args);
        let out = lifeboat(self.path(), &all);
        let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), doc, stderr(&out))
    }
}

/// GET a path from a cluster; `None` on 404.
pub async fn get(client: &kube::Client, path: &str) -> Option<Value> {
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    match client.request::<Value>(req).await {
        Ok(v) => Some(v),
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => panic!("GET {path}: {e}"),
    }
}

pub fn item_path(item: &Value) -> String {
    let (g, v, r) = (
        item["group"].as_str().unwrap(),
        item["version"].as_str().unwrap(),
        item["resource"].as_str().unwrap(),
    );
    let base = if g.is_empty() {
        format!("/api/{v}")
    } else {
        format!("/apis/{g}/{v}")
    };
    let ns = item["namespace"].as_str().unwrap();
    let name = item["name"].as_str().unwrap();
    if ns.is_empty() {
        format!("{base}/{r}/{name}")
    } else {
        format!("{base}/namespaces/{ns}/{r}/{name}")
    }
}

/// Returns true if and only if every field of `want` is in `got` with the same value (the
/// server may add defaults).
fn contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| contains(gv, wv))),
        (Value::Array(g), Value::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        _ => got == want,
    }
}

/// Reads an object of the primary's backup as the planner saw it (the plan item's expected
/// content) from the archive in the replica.
fn backed_up_objects(r: &Regions, backup: &str) -> BTreeMap<String, Value> {
    let archive = r
        .path()
        .join(format!("replica/backups/{backup}/resources.tar.zst"));
    let bytes = std::fs::read(archive).unwrap();
    let mut ar = tar::Archive::new(zstd::Decoder::new(bytes.as_slice()).unwrap());
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        out.insert(p, serde_json::from_str(&s).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_to_secondary_recreates_the_app_with_transforms_and_new_addresses() {
    let r = Regions::new().await;
    r.backup("b1");
    r.replicate_all(7).await;
    // The backup took no volume data: restoring it without is the operator's explicit choice.
    let (code, doc, err) = r.restore(&["--no-volumes"]);
    assert_eq!(code, Some(0), "{err}\n{doc}");
    let report = &doc["report"];
    assert!(report["failed"].as_array().unwrap().is_empty(), "{report}");
    assert!(report["created"].as_u64().unwrap() > 60, "{report}");
    assert_eq!(doc["plan"]["restorePoint"]["name"], "b1");

    // Every created object exists in the secondary with the backed-up content modulo the
    // named transforms: the transformed object (what was sent) is contained in what is live.
    let backed = backed_up_objects(&r, "b1");
    let s = &r.secondary.client;
    let mut compared = 0;
    for item in doc["plan"]["items"].as_array().unwrap() {
        if item["action"] != "create" {
            continue;
        }
        let live = get(s, &item_path(item))
            .await
            .unwrap_or_else(|| panic!("{} missing in the secondary", item_path(item)));
        let g = item["group"].as_str().unwrap();
        let key = format!(
            "{}/{}/{}/{}{}.json",
            if g.is_empty() { "core" } else { g },
            item["version"].as_str().unwrap(),
            item["resource"].as_str().unwrap(),
            item["namespace"]
                .as_str()
                .map(|n| if n.is_empty() {
                    String::new()
                } else {
                    format!("{n}/")
                })
                .unwrap(),
            item["name"].as_str().unwrap()
        );
        let Some(orig) = backed.get(&key) else {
            continue;
        }; // renamed objects are checked below
        for field in [
            "spec",
            "data",
            "stringData",
            "rules",
            "roleRef",
            "provisioner",
            "parameters",
        ] {
            let (Some(want), Some(got)) = (orig.get(field), live.get(field)) else {
                continue;
            };
            let mut want = want.clone();
            let applied = |rule: &str| {
                item["transforms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t == rule)
            };
            if applied("pvc-unbind") {
                let spec = want.as_object_mut().unwrap();
                for f in ["volumeName", "dataSource", "dataSourceRef"] {
                    spec.remove(f);
                }
            }
            if item["kind"] == "Service" {
                let spec = want.as_object_mut().unwrap();
                if spec.get("clusterIP") != Some(&json!("None")) {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
            }
            assert!(
                contains(got, &want),
                "{key}: {field} differs\nbacked up {want}\nlive {got}"
            );
        }
        assert_eq!(
            live["metadata"]["labels"]["lifeboat.io/restored-from"], "b1",
            "{key}"
        );
        compared += 1;
    }
    assert!(compared > 60, "compared {compared}");

    // Services got addresses from the secondary's CIDR; headless stayed headless.
    let web = get(s, "/api/v1/namespaces/shop/services/web")
        .await
        .unwrap();
    let ip = web["spec"]["clusterIP"].as_str().unwrap();
    assert!(
        ip.starts_with("10.1."),
        "clusterIP {ip} not from 10.1.0.0/16"
    );
    let pg = get(s, "/api/v1/namespaces/db/services/postgres")
        .await
        .unwrap();
    assert_eq!(pg["spec"]["clusterIP"], "None");
    // The zone-pinned StorageClass now names a secondary zone.
    let sc = get(s, "/apis/storage.k8s.io/v1/storageclasses/zoned")
        .await
        .unwrap();
    assert_eq!(
        sc["allowedTopologies"][0]["matchLabelExpressions"][0]["values"],
        json!(["centralus-1"])
    );
    // The StatefulSet's claims bind and its pods run; no controller-owned duplicates.
    for i in 0..2 {
        let pvc = format!("/api/v1/namespaces/db/persistentvolumeclaims/data-postgres-{i}");
        eventually("claims to bind", || async {
            get(s, &pvc)
                .await
                .filter(|p| p["status"]["phase"] == "Bound")
        })
        .await;
        let pod = format!("/api/v1/namespaces/db/pods/postgres-{i}");
        eventually("StatefulSet pods to run", || async {
            get(s, &pod)
                .await
                .filter(|p| p["status"]["phase"] == "Running")
        })
        .await;
    }
    let rs = get(s, "/apis/apps/v1/namespaces/shop/replicasets")
        .await
        .unwrap();
    let owners: Vec<&Value> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["metadata"]["ownerReferences"][0]["name"])
        .collect();
    assert_eq!(
        owners,
        [&json!("web")],
        "one ReplicaSet for shop/web, made by the secondary's controller"
    );
    assert!(
        rs["items"][0]["metadata"]["labels"]
            .get("lifeboat.io/restored-from")
            .is_none(),
        "the ReplicaSet was not restored, but recreated"
    );
    let skipped = doc["plan"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "skip-rule" && i["kind"] == "ReplicaSet")
        .count();
    assert!(
        skipped >= 3,
        "ReplicaSets owned by Deployments are skipped ({skipped})"
    );
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_skips_a_partly_replicated_backup_and_naming_it_is_refused() {
    let r = Regions::new().await;
    r.backup("b1");
    post(
        &r.primary.client,
        "/api/v1/namespaces/shop/configmaps",
        json!({"metadata": {"name": "newer"}, "data": {}}),
    )
    .await;
    r.backup("b2");
    let (from, to) = r.stores();
    // Everything of b1 and the repository config; of b2 the manifest only.
    replicate::replicate(&from, &to, 3, |k| {
        !k.starts_with("backups/b2/") || k.ends_with("manifest.json")
    })
    .await;

    let (code, doc, err) = r.restore(&["--dry-run", "--no-volumes"]);
    assert_eq!(code, Some(0), "{err}");
    let point = &doc["plan"]["restorePoint"];
    assert_eq!(point["name"], "b1");
    assert_eq!(point["passedOver"][0]["name"], "b2");
    assert_eq!(point["passedOver"][0]["missing"], 1);
    // `list --check` on the replica says which backups are restore points there.
    let out = lifeboat(r.path(), &["list", "-l", "dr", "--check", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let here: Vec<(&str, bool, u64)> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap(),
                b["complete"].as_bool().unwrap(),
                b["missing"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(here, [("b1", true, 0), ("b2", false, 1)]);
    let out = lifeboat(r.path(), &["list", "-l", "dr", "--check"]);
    assert!(stdout(&out).contains("1 missing"), "{}", stdout(&out));
    let out = lifeboat(
        r.path(),
        &["restore", "--to", "secondary", "--dry-run", "--no-volumes"],
    );
    assert!(
        stdout(&out).contains("b2: 1 of 1 objects not yet replicated"),
        "{}",
        stdout(&out)
    );

    let (code, _, err) = r.restore(&["--backup", "b2"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("b2: 1 of 1 objects not yet replicated"),
        "{err}"
    );
    assert!(err.contains("--allow-incomplete"), "{err}");

    // On the writable primary, which is no replica, an absent object is missing, not "not yet
    // replicated" (issue 15).
    std::fs::remove_file(r.path().join("repo/backups/b2/resources.tar.zst")).unwrap();
    let (code, _, err) = r.restore(&["--from", "primary", "--backup", "b2"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("b2: 1 of 1 objects missing from this location (it is no replica"),
        "{err}"
    );
    assert!(!err.contains("replicated"), "{err}");
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}

/// Every object of the cluster, by API path, without server-set fields.
async fn snapshot_objects(client: &kube::Client) -> BTreeSet<String> {
    let d = lifeboat::cluster::discover(client).await.unwrap();
    let mut out = BTreeSet::new();
    for rt in d.resources.iter().filter(|r| r.supports("list")) {
        for o in lifeboat::cluster::list_all(client, rt, 500).await.unwrap() {
            out.insert(format!(
                "{}/{}/{}",
                rt.group_resource(),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_writes_nothing_and_reports_every_risk() {
    let r = Regions::new().await;
    let p = &r.primary.client;
    // Risk material: a webhook, a claim of a class nobody restores or maps.
    post(p, "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", json!({
        "metadata": {"name": "shop-policy"},
        "webhooks": [{"name": "policy.shop.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"namespace": "shop", "name": "policy"}}}]
    })).await;
    post(p, "/api/v1/namespaces/shop/persistentvolumeclaims", json!({
        "metadata": {"name": "fast-data"},
        "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    })).await;
    r.backup("b1");
    r.replicate_all(11).await;
    // In the secondary, an object that exists and differs.
    let s = &r.secondary.client;
    post(
        s,
        "/api/v1/namespaces",
        json!({"metadata": {"name": "shop"}}),
    )
    .await;
    post(
        s,
        "/api/v1/namespaces/shop/configmaps",
        json!({"metadata": {"name": "settings"}, "data": {"mode": "local"}}),
    )
    .await;
    // No zone map: the zone-pinned class keeps a primary zone.
    r.write_config("{}");

    let before = snapshot_objects(s).await;
    let (code, doc, err) = r.restore(&["--dry-run", "--no-volumes"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        snapshot_objects(s).await,
        before,
        "a dry run created or deleted objects"
    );
    let kinds: BTreeSet<&str> = doc["plan"]["risks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    for k in [
        "crd-created",
        "zone-missing",
        "webhook-restored",
        "exists-differs",
        "storage-class-missing",
    ] {
        assert!(
            kinds.contains(k),
            "risk {k} not reported: {}",
            doc["plan"]["risks"]
        );
    }
    // Without the CRDs, the custom resources' API is not served by the target.
    let (code, doc, err) = r.restore(&[
        "--dry-run",
        "--no-volumes",
        "--exclude-resources",
        "customresourcedefinitions.apiextensions.k8s.io",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let risks = doc["plan"]["risks"].to_string();
    assert!(
        risks.contains("api-not-served") && risks.contains("shop.example.com/v1"),
        "{risks}"
    );
    assert_eq!(snapshot_objects(s).await, before);
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}

/// Restored objects of a cluster with their content (no server-set fields, no addresses).
async fn restored_state(client: &kube::Client) -> BTreeMap<String, Value> {
    let d = lifeboat::cluster::discover(client).await.unwrap();
    let mut out = BTreeMap::new();
    for rt in d.resources.iter().filter(|r| r.supports("list")) {
        for mut o in lifeboat::cluster::list_all(client, rt, 500).await.unwrap() {
            if o.pointer("/metadata/labels/lifeboat.io~1restored-from")
                .is_none()
            {
                continue;
            }
            let key = format!(
                "{}/{}/{}",
                rt.group_resource(),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            );
            let m = o["metadata"].as_object_mut().unwrap();
            for f in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                m.remove(f);
            }
            let o = o.as_object_mut().unwrap();
            o.remove("status");
            if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                for f in ["clusterIP", "clusterIPs", "volumeName"] {
                    spec.remove(f);
                }
            }
            out.insert(key, Value::Object(o.clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_restore_run_again_ends_in_the_same_state_as_an_uninterrupted_one() {
    use std::io::{BufRead, BufReader};
    let r = Regions::new().await;
    r.backup("b1");
    r.replicate_all(5).await;
    // Interrupted: SIGKILL once the identity tier (secrets, config, RBAC) starts.
    let mut child =
        crate::support::lifeboat_cmd(r.path(), &["restore", "--to", "secondary", "--no-volumes"])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
    let mut reached = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        if line.unwrap().contains("restoring identity") {
            reached = true;
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(reached, "the restore never reached the identity tier");
    let (code, doc, err) = r.restore(&["--no-volumes"]);
    assert_eq!(code, Some(0), "{err}\n{}", doc["report"]);
    assert!(
        doc["report"]["skipped"]["restored earlier from this backup"]
            .as_u64()
            .unwrap()
            > 0,
        "{}",
        doc["report"]
    );

    // Reference: the same restore, uninterrupted, into a fresh secondary.
    let reference = region("secondary", "centralus", "10.1.0.0/16").await;
    let cfg = std::fs::read_to_string(r.path().join("lifeboat.yaml"))
        .unwrap()
        .replace(
            &format!("{:?}", r.secondary.cluster.kubeconfig_path()),
            &format!("{:?}", reference.cluster.kubeconfig_path()),
        );
    let refdir = tempfile::tempdir().unwrap();
    std::fs::write(
        refdir.path().join("lifeboat.yaml"),
        cfg.replace(
            "path: replica",
            &format!("path: {:?}", r.path().join("replica")),
        ),
    )
    .unwrap();
    let out = lifeboat(
        refdir.path(),
        &["restore", "--to", "secondary", "--no-volumes"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let (a, b) = (
        restored_state(&r.secondary.client).await,
        restored_state(&reference.client).await,
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(
            v, &b[k],
            "{k} differs between the resumed and the uninterrupted restore"
        );
    }
    assert!(a.len() > 60);
    tokio::time::timeout(Duration::from_secs(30), reference.cluster.shutdown())
        .await
        .unwrap()
        .unwrap();
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}

/// Issue 12: a manifest whose volume records do not parse is an error naming the backup and
/// the field. Before, `Manifest::volumes()` read it as "no volumes" and the restore planned no
/// volume data at all.
#[tokio::test(flavor = "multi_thread")]
async fn issue12_a_malformed_volume_record_fails_the_dry_run_naming_the_field() {
    let r = Regions::new().await;
    r.backup("b1");
    let path = r.path().join("repo/backups/b1/manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["details"]["volumes"] = json!([
        {"namespace": "shop", "pvc": "data-db-0", "status": "Completed",
         "index": "backups/b1/volumes/shop/data-db-0.json"}
    ]);
    // As a writer would have committed it: without the digest of its own content (an older
    // lifeboat's manifest), else the edit reads as damage to the manifest (issue 15).
    manifest.as_object_mut().unwrap().remove("manifestSha256");
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    r.replicate_all(12).await;

    for args in [&["--dry-run"][..], &["--dry-run", "--backup", "b1"]] {
        let (code, doc, err) = r.restore(args);
        assert_eq!(code, Some(1), "{args:?}: {doc} {err}");
        assert!(
            err.contains("details.volumes[0].status") && err.contains("\"b1\""),
            "{args:?}: {err}"
        );
        assert_eq!(doc, Value::Null, "{args:?}: a plan was printed");
    }
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}
