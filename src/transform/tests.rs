//! Table-driven tests: `fixtures/transform/<rule>.json` holds, per rule, cases of input and
//! expected output (`null`: the rule must leave the object unchanged).

use std::path::Path;

use serde_json::Value;

use super::*;

fn context() -> (Mappings, TransformOptions) {
    let m = Mappings {
        storage_classes: [("premium-zrs".into(), "premium".into())].into(),
        volume_attributes_classes: [("gold-eastus2".into(), "gold".into())].into(),
        zones: [
            ("eastus2-1".into(), "centralus-1".into()),
            ("eastus2-2".into(), "centralus-2".into()),
        ]
        .into(),
        namespaces: [("shop".into(), "shop-dr".into())].into(),
        storage_accounts: [("lbfileseastus2".into(), "lbfilescentralus".into())].into(),
    };
    (
        m,
        TransformOptions {
            preserve_node_ports: false,
            backup: "nightly-1".into(),
            rebound_volumes: ["static-share".into()].into(),
        },
    )
}

#[test]
fn every_rule_passes_its_fixture_cases() {
    let (mappings, options) = context();
    let ctx = Context {
        mappings: &mappings,
        options: &options,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/transform");
    for (name, rule) in RULES {
        let path = dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("rule {name} has no fixture {}", path.display()));
        let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert!(!cases.is_empty(), "{name}: no cases");
        for case in cases {
            let mut obj = case["input"].clone();
            let changed = rule(&mut obj, &ctx);
            let expected = if case["expected"].is_null() {
                &case["input"]
            } else {
                &case["expected"]
            };
            assert_eq!(&obj, expected, "{name}: {}", case["case"]);
            assert_eq!(
                changed,
                !case["expected"].is_null(),
                "{name}: {}: reported change",
                case["case"]
            );
        }
    }
}

#[test]
fn node_ports_are_kept_on_request() {
    let (mappings, mut options) = context();
    options.preserve_node_ports = true;
    let ctx = Context {
        mappings: &mappings,
        options: &options,
    };
    let mut svc = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "w"}, "spec": {"ports": [{"nodePort": 30080}]}});
    assert!(!service_node_ports(&mut svc, &ctx));
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
}

#[test]
fn apply_all_names_the_rules_that_changed_the_object() {
    let (mappings, options) = context();
    let ctx = Context {
        mappings: &mappings,
        options: &options,
    };
    let mut svc = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "w", "namespace": "shop", "uid": "u"}, "spec": {"clusterIP": "10.0.0.5"}});
    let applied = apply_all(&mut svc, &ctx);
    assert_eq!(
        applied,
        [
            "strip-server-fields",
            "service-cluster-ip",
            "map-namespace",
            "mark-restored"
        ]
    );
}
