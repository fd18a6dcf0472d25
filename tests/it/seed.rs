//! A multi-namespace application seeded into a simulated cluster, shared by the backup and
//! restore tests: a CRD and 50 of its CRs, Deployments, a StatefulSet with a volume claim
//! template, Services (one headless), Secrets, ConfigMaps, RBAC, a zone-pinned StorageClass
//! and a VolumeSnapshotClass.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};

/// The value of the seeded Secret: it must never appear in logs.
pub const SECRET_VALUE: &str = "s3cr3t-Value-never-logged-7f3a";

/// POSTs `body` to `path`; panics with the server's answer on failure.
pub async fn post(client: &kube::Client, path: &str, body: Value) -> Value {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    match client.request::<Value>(req).await {
        Ok(v) => v,
        Err(e) => panic!("POST {path} failed: {e}"),
    }
}

fn labels(app: &str) -> Value {
    json!({ "app": app })
}

/// Seeds the application into a cluster whose zones are `zones` (the StorageClass is pinned to
/// the first one).
pub async fn seed_app(client: &kube::Client, zone: &str) {
    for ns in ["shop", "shop-test", "db", "other"] {
        post(client, "/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"team": "t"}}})).await;
    }
    post(client, "/apis/storage.k8s.io/v1/storageclasses", json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "zoned"}, "provisioner": "disk.csi.sim", "volumeBindingMode": "WaitForFirstConsumer",
        "allowedTopologies": [{"matchLabelExpressions": [{"key": "topology.kubernetes.io/zone", "values": [zone]}]}]
    })).await;
    post(client, "/apis/storage.k8s.io/v1/storageclasses", json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "disk.csi.sim", "volumeBindingMode": "Immediate", "reclaimPolicy": "Delete"
    })).await;
    post(client, "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses", json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "csi-snap", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
        "driver": "disk.csi.sim", "deletionPolicy": "Delete"
    })).await;
    post(client, "/apis/scheduling.k8s.io/v1/priorityclasses", json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000
    })).await;

    post(client, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "carts.shop.example.com"},
        "spec": {
            "group": "shop.example.com", "scope": "Namespaced",
            "names": {"plural": "carts", "singular": "cart", "kind": "Cart", "listKind": "CartList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            crds,
            "carts.shop.example.com",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD established in time")
    .expect("watching the CRD");
    for i in 0..50 {
        post(client, "/apis/shop.example.com/v1/namespaces/shop/carts", json!({
            "apiVersion": "shop.example.com/v1", "kind": "Cart",
            "metadata": {"name": format!("cart-{i:02}"), "labels": labels("shop")}, "spec": {"items": i}
        })).await;
    }

    for (ns, name, app) in [
        ("shop", "web", "shop"),
        ("db", "api", "db"),
        ("other", "tool", "other"),
    ] {
        post(client, &format!("/apis/apps/v1/namespaces/{ns}/deployments"), json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels(app)},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": app, "component": name}},
                "template": {"metadata": {"labels": {"app": app, "component": name}},
                    "spec": {"containers": [{"name": name, "image": "nginx:1.27"}]}}}
        })).await;
    }
    post(client, "/apis/apps/v1/namespaces/db/statefulsets", json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "postgres", "labels": labels("db")},
        "spec": {"serviceName": "postgres", "replicas": 2, "selector": {"matchLabels": {"app": "db", "component": "postgres"}},
            "template": {"metadata": {"labels": {"app": "db", "component": "postgres"}},
                "spec": {"containers": [{"name": "pg", "image": "postgres:17", "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard", "resources": {"requests": {"storage": "1Gi"}}}}]}
    })).await;
    post(client, "/api/v1/namespaces/shop/services", json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": labels("shop")},
        "spec": {"selector": {"app": "shop"}, "ports": [{"port": 80, "targetPort": 8080}]}
    })).await;
    post(client, "/api/v1/namespaces/db/services", json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "postgres", "labels": labels("db")},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}
    })).await;
    post(client, "/api/v1/namespaces/shop/secrets", json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "labels": labels("shop")},
        "type": "Opaque", "stringData": {"password": SECRET_VALUE}
    })).await;
    for (ns, app) in [("shop", "shop"), ("db", "db"), ("shop-test", "shop")] {
        post(client, &format!("/api/v1/namespaces/{ns}/configmaps"), json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "labels": labels(app)},
            "data": {"mode": ns}
        })).await;
    }
    post(client, "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles", json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    })).await;
    post(client, "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings", json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "shop"}]
    })).await;
    post(client, "/apis/rbac.authorization.k8s.io/v1/clusterroles", json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "shop-admin"},
        "rules": [{"apiGroups": ["shop.example.com"], "resources": ["carts"], "verbs": ["*"]}]
    })).await;
    post(client, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "shop-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "shop-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "shop"}]
    })).await;
}
