//! The control planes themselves: the pinned version, the RBAC authorizer, per-cluster
//! service-account keys, and the node agent's nodes.

use super::{kubectl, kubectl_in, real, unique};

#[tokio::test(flavor = "multi_thread")]
async fn control_planes_are_kubernetes_1_34_and_refuse_each_others_tokens() {
    let Some(r) = real().await else { return };
    let version: serde_json::Value =
        serde_json::from_str(&kubectl(&r.primary, &["version", "-o", "json"])).unwrap();
    assert_eq!(
        version["clientVersion"]["gitVersion"], "v1.34.4",
        "{version}"
    );
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.34.4",
        "{version}"
    );

    // A fresh service account of the primary: authenticated there, allowed nothing by RBAC;
    // unknown to the secondary, whose API server checks tokens with its own key.
    let ns = unique("tokens");
    kubectl(&r.primary, &["create", "namespace", &ns]);
    kubectl(
        &r.primary,
        &["create", "serviceaccount", "probe", "-n", &ns],
    );
    let token = kubectl(&r.primary, &["create", "token", "probe", "-n", &ns]);
    let token = format!("--token={}", token.trim());

    let denied = kubectl_in(&r.primary, &["get", "namespaces", &token], None);
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "User \"system:serviceaccount:{ns}:probe\" cannot list resource \"namespaces\""
        )),
        "the RBAC authorizer's refusal: {err}"
    );
    let unknown = kubectl_in(&r.secondary, &["get", "namespaces", &token], None);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success(), "{err}");
    assert!(
        err.contains("Unauthorized"),
        "the secondary refuses the token: {err}"
    );

    // The node agent's nodes: one per zone, Ready, labelled with zone and region.
    for (c, region) in [(&r.primary, "eastus2"), (&r.secondary, "centralus")] {
        let nodes: serde_json::Value =
            serde_json::from_str(&kubectl(c, &["get", "nodes", "-o", "json"])).unwrap();
        let items = nodes["items"].as_array().unwrap();
        assert_eq!(items.len(), 3, "{nodes}");
        for n in items {
            let labels = &n["metadata"]["labels"];
            assert_eq!(labels["topology.kubernetes.io/region"], region, "{n}");
            assert!(
                labels["topology.kubernetes.io/zone"]
                    .as_str()
                    .is_some_and(|z| z.starts_with(region)),
                "{n}"
            );
            let ready = n["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            assert!(ready, "{n}");
        }
    }
}
