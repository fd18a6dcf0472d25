//! Objects an operator owns, on real control planes (issue 16 item 4): restored with their
//! data and references to the restored owner's uid, so the real garbage collector removes them
//! with it.

use serde_json::Value;

use super::{get, kubectl, kubectl_in, real, replicate, restore, unique, wait_until, write_config};
use crate::support::{lifeboat, stderr, stdout};

const CRD: &str = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
 "metadata": {"name": "databases.owners.lifeboat.test"},
 "spec": {"group": "owners.lifeboat.test", "scope": "Namespaced",
  "names": {"plural": "databases", "singular": "database", "kind": "Database", "listKind": "DatabaseList"},
  "versions": [{"name": "v1", "served": true, "storage": true,
   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_operators_secret_is_restored_owned_by_the_restored_owner_and_collected_with_it() {
    let Some(r) = real().await else { return };
    let ns = unique("owners");
    let apply = |json: String| {
        let out = kubectl_in(&r.primary, &["apply", "-f", "-"], Some(json.as_bytes()));
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    };
    apply(CRD.into());
    kubectl(
        &r.primary,
        &[
            "wait",
            "--for=condition=Established",
            "crd/databases.owners.lifeboat.test",
            "--timeout=60s",
        ],
    );
    kubectl(&r.primary, &["create", "namespace", &ns]);
    apply(format!(
        r#"{{"apiVersion": "owners.lifeboat.test/v1", "kind": "Database",
            "metadata": {{"name": "orders", "namespace": "{ns}"}}, "spec": {{"size": 1}}}}"#
    ));
    let uid = kubectl(
        &r.primary,
        &[
            "get",
            "database",
            "orders",
            "-n",
            &ns,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    let owner = format!(
        r#"[{{"apiVersion": "owners.lifeboat.test/v1", "kind": "Database", "name": "orders",
            "uid": "{uid}", "controller": true, "blockOwnerDeletion": true}}]"#
    );
    apply(format!(
        r#"{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "orders-password",
            "namespace": "{ns}", "ownerReferences": {owner}}}, "stringData": {{"password": "old-password"}}}}"#
    ));
    apply(format!(
        r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "orders-settings",
            "namespace": "{ns}", "ownerReferences": {owner}}}, "data": {{"tier": "gold"}}}}"#
    ));

    let dir = super::workdir();
    write_config(dir.path(), &r, "");
    let out = lifeboat(
        dir.path(),
        &[
            "backup",
            "--no-volumes",
            "--name",
            "owned",
            "--include-namespaces",
            &ns,
            "--include-cluster-resources",
            "true",
            "--include-resources",
            "databases.owners.lifeboat.test,customresourcedefinitions.apiextensions.k8s.io,secrets,configmaps,namespaces",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    replicate(dir.path(), 17).await;
    let (code, doc, err) = restore(dir.path(), &[]);
    assert_eq!(code, Some(0), "{err}\n{doc}");

    let db = format!("/apis/owners.lifeboat.test/v1/namespaces/{ns}/databases/orders");
    let restored = get(&r.secondary, &db)
        .await
        .expect("the Database is restored");
    let new_uid = restored["metadata"]["uid"].as_str().unwrap().to_owned();
    assert_ne!(new_uid, uid);
    let secret = format!("/api/v1/namespaces/{ns}/secrets/orders-password");
    let config = format!("/api/v1/namespaces/{ns}/configmaps/orders-settings");
    for path in [&secret, &config] {
        let live = get(&r.secondary, path)
            .await
            .unwrap_or_else(|| panic!("{path} is not restored"));
        let refs = live["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 1, "{live}");
        assert_eq!(refs[0]["uid"], Value::from(new_uid.as_str()), "{live}");
    }
    let password = kubectl(
        &r.secondary,
        &[
            "get",
            "secret",
            "orders-password",
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.password}",
        ],
    );
    let primary_password = kubectl(
        &r.primary,
        &[
            "get",
            "secret",
            "orders-password",
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.password}",
        ],
    );
    assert_eq!(password, primary_password, "the backed-up password");

    // The real garbage collector takes them with their owner.
    kubectl(
        &r.secondary,
        &["delete", "database", "orders", "-n", &ns, "--wait=true"],
    );
    for path in [&secret, &config] {
        wait_until(&format!("{path} to be garbage-collected"), || async {
            get(&r.secondary, path).await.is_none().then_some(())
        })
        .await;
    }
    for c in [&r.primary, &r.secondary] {
        kubectl(
            c,
            &[
                "delete",
                "crd",
                "databases.owners.lifeboat.test",
                "--wait=false",
            ],
        );
    }
}
