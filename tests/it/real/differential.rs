//! The simulator's fidelity, measured (issue 13): the same requests to the simulator and to a
//! real kube-apiserver, comparing status codes, reasons and the fields lifeboat relies on.
//! Every difference must be listed in [`KNOWN`] with its reason, as `docs/SIMULATOR.md` lists
//! them; a new one fails the test, and so does a listed one that is gone.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{kubectl_at, real, unique};

/// Differences the simulator keeps on purpose: case → why (docs/SIMULATOR.md).
const KNOWN: &[(&str, &str)] = &[];

/// What a request's answer says, in the terms lifeboat relies on.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    code: u16,
    /// `Status.reason` of a refusal; for a success, the server-set fields it carries.
    detail: String,
}

async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (Answer, Value) {
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(bytes)
        .unwrap();
    match client.request::<Value>(req).await {
        Ok(v) => {
            let meta = &v["metadata"];
            let mut set: Vec<&str> = [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
            ]
            .into_iter()
            .filter(|f| !meta[*f].is_null())
            .collect();
            set.sort_unstable();
            let code = if method == "POST" { 201 } else { 200 };
            (
                Answer {
                    code,
                    detail: set.join(","),
                },
                v,
            )
        }
        Err(kube::Error::Api(s)) => (
            Answer {
                code: s.code,
                detail: s.reason.clone(),
            },
            Value::Null,
        ),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// Runs every case against one server; `ns` is a fresh namespace name for it.
async fn cases(client: &kube::Client, ns: &str) -> BTreeMap<&'static str, Answer> {
    let mut out = BTreeMap::new();
    let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
    let nsp = format!("/api/v1/namespaces/{ns}/configmaps");
    out.insert(
        "create namespace",
        send(
            client,
            "POST",
            "/api/v1/namespaces",
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
        )
        .await
        .0,
    );
    out.insert(
        "create with server-set fields",
        send(client, "POST", &nsp, Some(cm("a"))).await.0,
    );
    out.insert(
        "create again",
        send(client, "POST", &nsp, Some(cm("a"))).await.0,
    );
    out.insert(
        "create in a missing namespace",
        send(
            client,
            "POST",
            &format!("/api/v1/namespaces/{ns}-missing/configmaps"),
            Some(cm("a")),
        )
        .await
        .0,
    );
    out.insert(
        "get a missing object",
        send(client, "GET", &format!("{nsp}/nope"), None).await.0,
    );
    let (_, a) = send(client, "GET", &format!("{nsp}/a"), None).await;
    let mut stale = a.clone();
    stale["data"]["k"] = json!("w");
    send(client, "PUT", &format!("{nsp}/a"), Some(stale.clone())).await;
    out.insert(
        "update with a stale resourceVersion",
        send(client, "PUT", &format!("{nsp}/a"), Some(stale))
            .await
            .0,
    );
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    out.insert(
        "create a Deployment (generation)",
        send(
            client,
            "POST",
            &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            Some(deploy),
        )
        .await
        .0,
    );
    let mut immutable = cm("frozen");
    immutable["immutable"] = json!(true);
    let (_, frozen) = send(client, "POST", &nsp, Some(immutable)).await;
    let mut changed = frozen.clone();
    changed["data"]["k"] = json!("changed");
    out.insert(
        "change an immutable ConfigMap",
        send(client, "PUT", &format!("{nsp}/frozen"), Some(changed))
            .await
            .0,
    );
    let mut generated = cm("");
    generated["metadata"] = json!({"generateName": "gen-"});
    let (answer, g) = send(client, "POST", &nsp, Some(generated)).await;
    assert!(
        g["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("gen-") && n.len() > 4),
        "{g}"
    );
    out.insert("generateName", answer);
    let mut orphan = cm("orphan");
    orphan["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone",
        "uid": "00000000-0000-0000-0000-000000000001"}]);
    out.insert(
        "ownerReference to a missing owner",
        send(client, "POST", &nsp, Some(orphan)).await.0,
    );
    let mut held = cm("held");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    send(client, "POST", &nsp, Some(held)).await;
    out.insert(
        "delete an object with a finalizer",
        send(client, "DELETE", &format!("{nsp}/held"), None).await.0,
    );
    out.insert(
        "get it while it is being deleted",
        send(client, "GET", &format!("{nsp}/held"), None).await.0,
    );
    for i in 0..3 {
        send(client, "POST", &nsp, Some(cm(&format!("page-{i}")))).await;
    }
    let (answer, page) = send(client, "GET", &format!("{nsp}?limit=2"), None).await;
    assert!(
        page["metadata"]["continue"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{page}"
    );
    out.insert(
        "list a page",
        Answer {
            code: answer.code,
            detail: "continue".into(),
        },
    );
    out.insert(
        "list with a malformed continue token",
        send(
            client,
            "GET",
            &format!("{nsp}?limit=2&continue=bogus"),
            None,
        )
        .await
        .0,
    );
    // The namespace holds `held` (finalizer): deleting it leaves it Terminating.
    send(client, "DELETE", &format!("/api/v1/namespaces/{ns}"), None).await;
    out.insert(
        "create in a terminating namespace",
        send(client, "POST", &nsp, Some(cm("late"))).await.0,
    );
    // Let the namespace go.
    let (_, h) = send(client, "GET", &format!("{nsp}/held"), None).await;
    if !h.is_null() {
        let mut released = h;
        released["metadata"]["finalizers"] = json!([]);
        send(client, "PUT", &format!("{nsp}/held"), Some(released)).await;
    }

    // A CRD serving two versions; a custom resource created through each.
    let group = format!("{ns}.example.com");
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Cluster", "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {"name": "v1alpha1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    out.insert(
        "create a CRD with two served versions",
        send(
            client,
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(crd),
        )
        .await
        .0,
    );
    for v in ["v1alpha1", "v1"] {
        let path = format!("/apis/{group}/{v}/widgets");
        let body = json!({"apiVersion": format!("{group}/{v}"), "kind": "Widget", "metadata": {"name": format!("w-{v}")}, "spec": {"size": 1}});
        // Established takes a moment on both servers.
        let mut answer = send(client, "POST", &path, Some(body.clone())).await.0;
        for _ in 0..100 {
            if answer.code != 404 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            answer = send(client, "POST", &path, Some(body.clone())).await.0;
        }
        out.insert(
            if v == "v1" {
                "create a CR at the storage version"
            } else {
                "create a CR at a non-storage version"
            },
            answer,
        );
    }
    let (answer, read) = send(
        client,
        "GET",
        &format!("/apis/{group}/v1/widgets/w-v1alpha1"),
        None,
    )
    .await;
    out.insert("read a CR at the other served version", answer);
    // Shown at the version asked for, with what it was created with (None conversion).
    out.insert(
        "a CR read at another version carries that version and its fields",
        Answer {
            code: 200,
            detail: format!("{} size={}", read["apiVersion"], read["spec"]["size"]),
        },
    );
    // Discovery lists both versions, the GA one preferred.
    let (_, g) = send(client, "GET", &format!("/apis/{group}"), None).await;
    out.insert(
        "discovery of a group with two served versions",
        Answer {
            code: 200,
            detail: format!(
                "{} preferred {}",
                g["versions"], g["preferredVersion"]["version"]
            ),
        },
    );
    send(
        client,
        "DELETE",
        &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{group}"),
        None,
    )
    .await;

    // Another group than the CRD's: a CRD registers a local APIService for its own group.
    let group = format!("agg-{ns}.example.com");
    let apiservice = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": format!("v1.{group}")},
        "spec": {"group": group, "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                 "service": {"namespace": ns, "name": "api", "port": 443}, "insecureSkipTLSVerify": true}});
    out.insert(
        "create an APIService",
        send(
            client,
            "POST",
            "/apis/apiregistration.k8s.io/v1/apiservices",
            Some(apiservice),
        )
        .await
        .0,
    );
    send(
        client,
        "DELETE",
        &format!("/apis/apiregistration.k8s.io/v1/apiservices/v1.{group}"),
        None,
    )
    .await;
    out
}

/// kubectl's imperative commands (protobuf request bodies): their exit codes.
fn imperative(kubeconfig: &std::path::Path, ns: &str) -> BTreeMap<&'static str, Answer> {
    let run = |args: &[&str]| {
        let out = kubectl_at(kubeconfig, args, None);
        Answer {
            code: out.status.code().unwrap_or(-1) as u16,
            detail: if out.status.success() {
                String::new()
            } else {
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            },
        }
    };
    let mut out = BTreeMap::new();
    out.insert(
        "kubectl create namespace",
        run(&["create", "namespace", ns]),
    );
    out.insert(
        "kubectl create secret generic",
        run(&[
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=k=v",
            "-n",
            ns,
        ]),
    );
    out.insert(
        "kubectl create configmap",
        run(&["create", "configmap", "c", "--from-literal=k=v", "-n", ns]),
    );
    out.insert(
        "kubectl delete namespace",
        run(&["delete", "namespace", ns, "--wait=false"]),
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_answers_as_a_real_api_server_or_the_difference_is_documented() {
    let Some(r) = real().await else { return };
    let sim = crate::sim::start().await;
    let ns = unique("diff");
    let mut real_answers = cases(&r.primary.client, &ns).await;
    let mut sim_answers = cases(&sim.client, &ns).await;
    let kns = unique("diff-kubectl");
    real_answers.extend(imperative(&r.primary.kubeconfig, &kns));
    sim_answers.extend(imperative(sim.cluster.kubeconfig_path(), &kns));

    let mut differences = Vec::new();
    for (case, want) in &real_answers {
        let got = &sim_answers[case];
        if got != want {
            differences.push(format!("{case}: real {want:?}, simulator {got:?}"));
        }
    }
    let known: Vec<&str> = KNOWN.iter().map(|(k, _)| *k).collect();
    let unexplained: Vec<&String> = differences
        .iter()
        .filter(|d| !known.iter().any(|k| d.starts_with(&format!("{k}:"))))
        .collect();
    let gone: Vec<&&str> = known
        .iter()
        .filter(|k| !differences.iter().any(|d| d.starts_with(&format!("{k}:"))))
        .collect();
    eprintln!(
        "{} cases; differences:\n  {}",
        real_answers.len(),
        differences.join("\n  ")
    );
    assert!(
        unexplained.is_empty(),
        "differences not in KNOWN (fix the simulator or document them):\n{unexplained:#?}"
    );
    assert!(
        gone.is_empty(),
        "listed in KNOWN but no longer different: {gone:?}"
    );
}
