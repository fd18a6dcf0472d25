//! Objects an operator owns (issue 16 item 4): restored with their data, their references
//! pointing at the uids their owners got in the target.

use serde_json::{Value, json};

use super::{Regions, get};
use crate::seed::post;

/// A Secret and a ConfigMap owned by a custom resource, as an operator makes them.
pub async fn owned_by_cart(client: &kube::Client) -> String {
    let cart = get(
        client,
        "/apis/shop.example.com/v1/namespaces/shop/carts/cart-00",
    )
    .await
    .expect("the seeded cart");
    let uid = cart["metadata"]["uid"].as_str().unwrap().to_owned();
    let owner = json!([{"apiVersion": "shop.example.com/v1", "kind": "Cart", "name": "cart-00",
        "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    post(
        client,
        "/api/v1/namespaces/shop/secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "cart-00-password", "ownerReferences": owner},
            "data": {"password": "b2xkLXBhc3N3b3Jk"}
        }),
    )
    .await;
    post(
        client,
        "/api/v1/namespaces/shop/configmaps",
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cart-00-settings", "ownerReferences": owner},
            "data": {"tier": "gold"}
        }),
    )
    .await;
    uid
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_an_operator_owns_come_back_with_their_data_owned_by_the_restored_owner() {
    let r = Regions::new().await;
    let old_uid = owned_by_cart(&r.primary.client).await;
    r.backup("owned");
    r.replicate_all(11).await;
    let (code, doc, err) = r.restore(&["--no-volumes"]);
    assert_eq!(code, Some(0), "{err}\n{doc}");
    assert_eq!(doc["report"]["ownerReferences"], 2, "{}", doc["report"]);

    let s = &r.secondary.client;
    let cart = get(s, "/apis/shop.example.com/v1/namespaces/shop/carts/cart-00")
        .await
        .expect("the cart is restored");
    let new_uid = cart["metadata"]["uid"].as_str().unwrap();
    assert_ne!(new_uid, old_uid);
    for (path, field, value) in [
        (
            "/api/v1/namespaces/shop/secrets/cart-00-password",
            "password",
            "b2xkLXBhc3N3b3Jk",
        ),
        (
            "/api/v1/namespaces/shop/configmaps/cart-00-settings",
            "tier",
            "gold",
        ),
    ] {
        let live = get(s, path)
            .await
            .unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(live["data"][field], value, "{path}: the backed-up data");
        let refs = live["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 1, "{live}");
        assert_eq!(
            refs[0]["uid"], new_uid,
            "{path}: owned by the restored cart"
        );
        assert_eq!(refs[0]["controller"], true);
        assert_eq!(refs[0]["name"], "cart-00");
    }
    // The plan says where each reference points.
    let secret = doc["plan"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "Secret" && i["name"] == "cart-00-password")
        .unwrap();
    assert_eq!(secret["action"], "create", "{secret}");
    assert_eq!(
        secret["ownerReferences"][0]["target"],
        "/apis/shop.example.com/v1/namespaces/shop/carts/cart-00"
    );

    // A second run finds them restored and leaves the references as they are.
    let (code, doc, err) = r.restore(&["--no-volumes"]);
    assert_eq!(code, Some(0), "{err}\n{doc}");
    assert_eq!(doc["report"]["ownerReferences"], 0, "{}", doc["report"]);
    let live: Value = get(s, "/api/v1/namespaces/shop/secrets/cart-00-password")
        .await
        .unwrap();
    assert_eq!(
        live["metadata"]["ownerReferences"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}
