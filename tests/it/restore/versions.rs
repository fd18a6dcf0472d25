//! Custom resources of a CRD serving several versions (issue 16 item 1): one created through
//! the non-storage version comes back, with its fields, readable at every served version.

use serde_json::json;

use super::{Regions, get};
use crate::seed::post;

#[tokio::test(flavor = "multi_thread")]
async fn custom_resources_created_through_any_served_version_are_restored() {
    let r = Regions::new().await;
    let p = &r.primary.client;
    let schema = json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}});
    post(
        p,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "gadgets.multi.example.com"},
            "spec": {"group": "multi.example.com", "scope": "Namespaced",
                "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                "versions": [
                    {"name": "v1alpha1", "served": true, "storage": false, "schema": schema},
                    {"name": "v1", "served": true, "storage": true, "schema": schema}]}
        }),
    )
    .await;
    crate::sim::eventually("the CRD's versions to be served", || async {
        get(p, "/apis/multi.example.com/v1alpha1/gadgets")
            .await
            .map(|_| ())
    })
    .await;
    for (v, name) in [("v1alpha1", "old-style"), ("v1", "new-style")] {
        post(
            p,
            &format!("/apis/multi.example.com/{v}/namespaces/shop/gadgets"),
            json!({
                "apiVersion": format!("multi.example.com/{v}"), "kind": "Gadget",
                "metadata": {"name": name}, "spec": {"made": v, "parts": [1, 2, 3]}
            }),
        )
        .await;
    }
    r.backup("versions");
    r.replicate_all(3).await;
    let (code, doc, err) = r.restore(&["--no-volumes"]);
    assert_eq!(code, Some(0), "{err}\n{doc}");

    let s = &r.secondary.client;
    for (name, made) in [("old-style", "v1alpha1"), ("new-style", "v1")] {
        for v in ["v1", "v1alpha1"] {
            let g = get(
                s,
                &format!("/apis/multi.example.com/{v}/namespaces/shop/gadgets/{name}"),
            )
            .await
            .unwrap_or_else(|| panic!("{name} at {v} in the secondary"));
            assert_eq!(g["apiVersion"], format!("multi.example.com/{v}"));
            assert_eq!(g["spec"]["made"], made, "{g}");
            assert_eq!(g["spec"]["parts"], json!([1, 2, 3]), "{g}");
        }
    }
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}
