//! `lifeboat backup` against a simulated cluster (issue 4).

mod commit;
mod faults;
mod kill;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::seed::{SECRET_VALUE, seed_app};
use crate::sim::{Sim, start_with};
use crate::support::{lifeboat, require_tool, stderr, stdout};

/// A seeded primary cluster, a local location and a config naming both.
pub struct Env {
    pub sim: Sim,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn new() -> Env {
        let sim = start_with(|c| {
            c.name = "primary".into();
            c.zones = (1..=3).map(|i| format!("eastus2-{i}")).collect();
        })
        .await;
        seed_app(&sim.client, "eastus2-1").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lifeboat.yaml"),
            format!(
                "clusters:\n  primary: {{ context: primary, kubeconfig: {:?} }}\nlocations:\n  local: {{ local: {{ path: repo }} }}\n",
                sim.cluster.kubeconfig_path()
            ),
        )
        .unwrap();
        Env { sim, dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `lifeboat backup --no-volumes -o json --name NAME <extra>`; returns the JSON summary.
    pub fn backup(&self, name: &str, extra: &[&str]) -> Value {
        let mut args = vec!["backup", "--no-volumes", "-o", "json", "--name", name];
        args.extend_from_slice(extra);
        let out = lifeboat(self.path(), &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "backup failed:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON document")
    }

    /// The backup's archive extracted with plain `zstd` and `tar`: the set of object keys.
    pub fn archive_keys(&self, name: &str) -> BTreeSet<ObjectKey> {
        let archive = self
            .path()
            .join(format!("repo/backups/{name}/resources.tar.zst"));
        let out = self.path().join(format!("extract-{name}"));
        std::fs::create_dir_all(&out).unwrap();
        let tarball = out.join("resources.tar");
        let st = Command::new("zstd")
            .arg("-q")
            .arg("-d")
            .arg(&archive)
            .arg("-o")
            .arg(&tarball)
            .status()
            .unwrap();
        assert!(st.success(), "zstd -d {}", archive.display());
        let st = Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "tar -xf");
        std::fs::remove_file(&tarball).unwrap();
        let mut keys = BTreeSet::new();
        walk(&out, &out, &mut keys);
        keys
    }
}

/// (group, resource, namespace, name)
pub type ObjectKey = (String, String, String, String);

fn walk(root: &Path, dir: &Path, keys: &mut BTreeSet<ObjectKey>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p: PathBuf = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, keys);
            continue;
        }
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = rel.split('/').collect();
        let name = parts
            .last()
            .unwrap()
            .strip_suffix(".json")
            .expect("every entry is a .json file")
            .to_owned();
        let group = if parts[0] == "core" {
            String::new()
        } else {
            parts[0].to_owned()
        };
        let (resource, ns) = match parts.len() {
            4 => (parts[2].to_owned(), String::new()),
            5 => (parts[2].to_owned(), parts[3].to_owned()),
            _ => panic!("unexpected archive path {rel}"),
        };
        // The object inside names itself the same way.
        let obj: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(obj["metadata"]["name"], name.as_str(), "{rel}");
        assert!(
            obj["metadata"].get("managedFields").is_none(),
            "{rel} keeps managedFields"
        );
        assert!(
            obj["apiVersion"].is_string() && obj["kind"].is_string(),
            "{rel} is not self-describing"
        );
        keys.insert((group, resource, ns, name));
    }
}

/// What `kubectl get -A -o json` returns for the resources the backup says it listed.
fn kubectl_keys(env: &Env, manifest: &Value) -> BTreeSet<ObjectKey> {
    let resources = manifest["details"]["resources"]["resources"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = resources
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    let out = Command::new(crate::support::kubectl_path())
        .arg("--kubeconfig")
        .arg(env.sim.cluster.kubeconfig_path())
        .args(["get", &names.join(","), "-A", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys = BTreeSet::new();
    for item in list["items"].as_array().unwrap() {
        let api_version = item["apiVersion"].as_str().unwrap();
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let kind = item["kind"].as_str().unwrap();
        let r = resources
            .iter()
            .find(|r| r["group"] == group && r["kind"] == kind)
            .unwrap_or_else(|| panic!("{group}/{kind}"));
        keys.insert((
            group.to_owned(),
            r["resource"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .to_owned(),
            item["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            item["metadata"]["name"].as_str().unwrap().to_owned(),
        ));
    }
    keys
}

fn describe_json(env: &Env, name: &str) -> Value {
    let out = lifeboat(env.path(), &["describe", name, "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn has(keys: &BTreeSet<ObjectKey>, group: &str, resource: &str, ns: &str, name: &str) -> bool {
    keys.contains(&(group.into(), resource.into(), ns.into(), name.into()))
}

#[tokio::test(flavor = "multi_thread")]
async fn full_backup_holds_exactly_what_kubectl_lists_and_no_skipped_kinds() {
    if !crate::support::kubectl_present() || !require_tool("zstd") {
        return;
    }
    let env = Env::new().await;
    let summary = env.backup("full", &["--label", "release=abc"]);
    assert_eq!(summary["status"], "Completed");
    assert_eq!(summary["labels"]["release"], "abc");

    let manifest = describe_json(&env, "full");
    let archived = env.archive_keys("full");
    assert_eq!(
        archived.len() as u64,
        manifest["details"]["resources"]["objects"]
            .as_u64()
            .unwrap()
    );
    let listed = kubectl_keys(&env, &manifest);
    let only_archive: Vec<_> = archived.difference(&listed).collect();
    let only_kubectl: Vec<_> = listed.difference(&archived).collect();
    assert!(
        only_archive.is_empty() && only_kubectl.is_empty(),
        "archive-only {only_archive:?}\nkubectl-only {only_kubectl:?}"
    );

    // The seeded app is all there.
    assert_eq!(archived.iter().filter(|k| k.1 == "carts").count(), 50);
    for (g, r, ns, n) in [
        (
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            "carts.shop.example.com",
        ),
        ("apps", "statefulsets", "db", "postgres"),
        ("apps", "deployments", "shop", "web"),
        ("", "secrets", "shop", "creds"),
        ("", "services", "db", "postgres"),
        ("storage.k8s.io", "storageclasses", "", "zoned"),
        (
            "snapshot.storage.k8s.io",
            "volumesnapshotclasses",
            "",
            "csi-snap",
        ),
        (
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
            "shop-admin",
        ),
        ("", "namespaces", "", "shop"),
    ] {
        assert!(has(&archived, g, r, ns, n), "{g}/{r} {ns}/{n} missing");
    }
    // No skipped kind made it in, and each skip is recorded with its reason.
    let skipped: Vec<&str> = manifest["details"]["resources"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["resource"].as_str().unwrap())
        .collect();
    for kind in [
        "events",
        "nodes",
        "leases.coordination.k8s.io",
        "endpoints",
        "controllerrevisions.apps",
    ] {
        let (plural, group) = kind.split_once('.').unwrap_or((kind, ""));
        assert!(
            !archived.iter().any(|k| k.0 == group && k.1 == plural),
            "{kind} was archived"
        );
        if matches!(kind, "events" | "nodes") {
            assert!(
                skipped.contains(&kind),
                "{kind} not recorded as skipped: {skipped:?}"
            );
        }
    }
    // Delta-ready: each resource records the list resourceVersion.
    for r in manifest["details"]["resources"]["resources"]
        .as_array()
        .unwrap()
    {
        assert!(r["listResourceVersion"].is_string(), "{r}");
    }
    // describe shows counts per resource and namespace.
    let text = stdout(&lifeboat(env.path(), &["describe", "full"]));
    assert!(
        text.contains("carts.shop.example.com") && text.contains("50"),
        "{text}"
    );
    assert!(text.contains("shop-test"), "{text}");
    // verify --deep: present, intact, and the archive untars.
    let out = lifeboat(env.path(), &["verify", "full", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let list = stdout(&lifeboat(env.path(), &["list"]));
    assert!(
        list.contains("full") && list.contains("release=abc"),
        "{list}"
    );
    env.sim.cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_narrow_the_backup_but_keep_the_classes_a_restore_needs() {
    if !require_tool("zstd") {
        return;
    }
    let env = Env::new().await;

    // Namespace globs: shop* minus shop-test.
    env.backup(
        "ns",
        &[
            "--include-namespaces",
            "shop*",
            "--exclude-namespaces",
            "shop-test",
        ],
    );
    let keys = env.archive_keys("ns");
    assert!(
        keys.iter()
            .filter(|k| !k.2.is_empty())
            .all(|k| k.2 == "shop"),
        "only namespace shop: {keys:?}"
    );
    assert!(has(&keys, "", "configmaps", "shop", "settings"));
    assert!(!has(&keys, "", "configmaps", "shop-test", "settings"));
    assert!(has(&keys, "", "namespaces", "", "shop") && !has(&keys, "", "namespaces", "", "db"));
    // Always captured with a namespace filter: classes, and the CRD of the CRs taken.
    for (g, r, n) in [
        ("storage.k8s.io", "storageclasses", "zoned"),
        ("storage.k8s.io", "storageclasses", "standard"),
        (
            "snapshot.storage.k8s.io",
            "volumesnapshotclasses",
            "csi-snap",
        ),
        ("scheduling.k8s.io", "priorityclasses", "high"),
        (
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "carts.shop.example.com",
        ),
    ] {
        assert!(
            has(&keys, g, r, "", n),
            "{r}/{n} missing with --include-namespaces"
        );
    }
    assert!(
        !keys.iter().any(|k| k.1 == "clusterroles"),
        "cluster resources are not taken under auto with a namespace filter"
    );

    // Resource include / exclude.
    env.backup(
        "res",
        &["--include-resources", "deployments.apps,configmaps"],
    );
    let keys = env.archive_keys("res");
    let kinds: BTreeSet<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    for k in [
        "deployments",
        "configmaps",
        "storageclasses",
        "volumesnapshotclasses",
        "namespaces",
    ] {
        assert!(kinds.contains(k), "{k} missing: {kinds:?}");
    }
    assert!(
        !kinds.contains("secrets") && !kinds.contains("carts") && !kinds.contains("statefulsets"),
        "{kinds:?}"
    );
    env.backup("nosecrets", &["--exclude-resources", "secrets"]);
    assert!(
        !env.archive_keys("nosecrets")
            .iter()
            .any(|k| k.1 == "secrets")
    );

    // Label selector: app=shop objects only, classes still there.
    env.backup("sel", &["--selector", "app=shop"]);
    let keys = env.archive_keys("sel");
    assert!(
        has(&keys, "", "configmaps", "shop", "settings")
            && has(&keys, "", "configmaps", "shop-test", "settings")
    );
    assert!(!has(&keys, "", "configmaps", "db", "settings"));
    assert_eq!(keys.iter().filter(|k| k.1 == "carts").count(), 50);
    assert!(has(&keys, "storage.k8s.io", "storageclasses", "", "zoned"));
    env.sim.cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_values_never_reach_the_logs_at_any_verbosity() {
    let env = Env::new().await;
    for (i, v) in ["-v", "-vv", "-vvv"].iter().enumerate() {
        let name = format!("log{i}");
        let out = lifeboat(env.path(), &["backup", "--no-volumes", "--name", &name, v]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(all.len() > 100, "{v} printed logs");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE);
        assert!(
            !all.contains(SECRET_VALUE) && !all.contains(&b64),
            "the secret leaked at {v}"
        );
    }
    env.sim.cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_with_volumes_has_their_data_backed_up_by_default() {
    // No `volumes:` in the config: the default mover image, which the simulator runs too.
    let env = Env::new().await;
    let out = lifeboat(env.path(), &["backup", "--name", "vols", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "Completed");
    let volumes = doc["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    assert!(
        volumes.iter().all(|v| v["status"] == "completed"),
        "{volumes:?}"
    );
    env.sim.cluster.shutdown().await.unwrap();
}
