//! Real `kubectl` against the simulator (issue 3, "What it must show"): api-resources, a
//! multi-document create with a CRD and its CR, client-side and server-side apply, chunked
//! `get -A -o yaml` over 500 objects, delete, and logs of a pod the kubelet ran.
//!
//! Uses the pinned kubectl (`$LIFEBOAT_TEST_KUBECTL`, else PATH); skipped with a message when
//! there is none, unless `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Output;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};

use super::{WAIT, start_with};

struct Kubectl {
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> Output {
        let out = tokio::process::Command::new(crate::support::kubectl_path())
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .env("HOME", &self.home)
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(WAIT, out)
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("kubectl runs")
    }

    /// Runs kubectl and returns stdout, panicking with both streams if it fails.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.to_string_lossy().into_owned()
}

#[tokio::test]
async fn kubectl_works_against_the_simulator() {
    if !crate::support::kubectl_present() {
        return;
    }
    let sim = start_with(|c| {
        c.lifeboat_bin = PathBuf::from(env!("CARGO_BIN_EXE_lifeboat"));
    })
    .await;
    let dir = sim._dir.path().to_path_buf();
    let k = Kubectl {
        kubeconfig: sim.cluster.kubeconfig_path().to_path_buf(),
        home: dir.join("home"),
    };

    // Discovery.
    let resources = k.ok(&["api-resources"]).await;
    for want in [
        "configmaps",
        "statefulsets",
        "volumesnapshots",
        "customresourcedefinitions",
    ] {
        assert!(
            resources.contains(want),
            "api-resources lacks {want}:\n{resources}"
        );
    }

    // A CRD and its CR in one manifest: the CR is refused until the CRD is established, so
    // wait for that and create the CR (as a user scripting kubectl would).
    let manifest = write(
        &dir,
        "crd.yaml",
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: example.com/v1
kind: Gadget
metadata:
  name: g1
spec:
  color: blue
"#,
    );
    let first = k
        .run(&["create", "--validate=false", "-f", &manifest])
        .await;
    k.ok(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=30s",
        "crd/gadgets.example.com",
    ])
    .await;
    if !first.status.success() {
        // Only the CR may have failed; creating the whole manifest again reports the CRD as
        // existing, so create the CR document alone.
        let stderr = String::from_utf8_lossy(&first.stderr);
        assert!(
            !stderr.contains("customresourcedefinitions"),
            "CRD create failed: {stderr}"
        );
        let cr = write(&dir, "cr.yaml", manifest_cr());
        k.ok(&["create", "--validate=false", "-f", &cr]).await;
    }
    let got = k.ok(&["get", "gadgets", "g1", "-o", "json"]).await;
    let got: Value = serde_json::from_str(&got).expect("json");
    assert_eq!(got["spec"]["color"], "blue");

    // Client-side apply, create then update.
    let cm = |v: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  key: {v}\n")
    };
    let f = write(&dir, "cm.yaml", &cm("one"));
    k.ok(&["apply", "--validate=false", "-f", &f]).await;
    let f = write(&dir, "cm.yaml", &cm("two"));
    k.ok(&["apply", "--validate=false", "-f", &f]).await;
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let applied = cms.get("applied").await.expect("applied");
    assert_eq!(applied.data.as_ref().expect("data")["key"], "two");
    assert!(
        applied
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubectl.kubernetes.io/last-applied-configuration"))
    );

    // Server-side apply, create then update.
    let ssa = |v: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  key: {v}\n")
    };
    let f = write(&dir, "ssa.yaml", &ssa("one"));
    k.ok(&["apply", "--server-side", "--validate=false", "-f", &f])
        .await;
    let f = write(&dir, "ssa.yaml", &ssa("two"));
    k.ok(&["apply", "--server-side", "--validate=false", "-f", &f])
        .await;
    let ssa_obj = cms.get("ssa").await.expect("ssa");
    assert_eq!(ssa_obj.data.as_ref().expect("data")["key"], "two");

    // 500 ConfigMaps listed in chunks of 50 across namespaces.
    let nss: Api<Namespace> = Api::all(sim.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "bulk"}})).expect("ns"),
    )
    .await
    .expect("bulk ns");
    let bulk: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "bulk");
    let creates = (0..500).map(|i| {
        let bulk = bulk.clone();
        async move {
            let c: ConfigMap = serde_json::from_value(
                json!({"metadata": {"name": format!("c-{i:03}")}, "data": {"i": i.to_string()}}),
            )
            .expect("cm");
            bulk.create(&PostParams::default(), &c)
                .await
                .expect("bulk create");
        }
    });
    futures::future::join_all(creates).await;
    let all = cms_total(&sim.client).await;
    let yaml = k
        .ok(&[
            "get",
            "configmaps",
            "-A",
            "-o",
            "yaml",
            "--chunk-size",
            "50",
        ])
        .await;
    let list: Value = serde_yaml_ng::from_str(&yaml).expect("yaml list");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), all);
    let bulk_items = items.iter().filter(|i| {
        i["metadata"]["namespace"] == "bulk"
            && i["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("c-"))
    });
    assert_eq!(bulk_items.count(), 500);

    // Scale through the scale subresource.
    let dep = write(
        &dir,
        "dep.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: nginx}]}\n",
    );
    k.ok(&["apply", "--validate=false", "-f", &dep]).await;
    k.ok(&["scale", "deployment/web", "--replicas=3"]).await;
    let replicas = k
        .ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await;
    assert_eq!(replicas, "3");

    // Delete.
    k.ok(&["delete", "configmap", "applied"]).await;
    assert!(cms.get_opt("applied").await.expect("get").is_none());
    k.ok(&["delete", "-f", &f]).await;
    assert!(cms.get_opt("ssa").await.expect("get").is_none());

    // Logs of a pod the kubelet ran with lifeboat's own image.
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "version"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": sim.cluster.context().config.lifeboat_image, "args": ["--version"]}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let done = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
    };
    tokio::time::timeout(WAIT, await_condition(pods.clone(), "version", done))
        .await
        .expect("pod finished in time")
        .expect("watch");
    let logs = k.ok(&["logs", "version"]).await;
    assert!(logs.contains(env!("CARGO_PKG_VERSION")), "logs: {logs}");
    // Following the log of a finished pod prints it and ends.
    let followed = k.ok(&["logs", "-f", "version"]).await;
    assert_eq!(followed, logs);
}

fn manifest_cr() -> &'static str {
    "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g1\nspec:\n  color: blue\n"
}

async fn cms_total(client: &kube::Client) -> usize {
    let all: Api<ConfigMap> = Api::all(client.clone());
    all.list(&Default::default())
        .await
        .expect("list")
        .items
        .len()
}
