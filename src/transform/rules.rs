//! The transform rules, one function each.

use serde_json::{Map, Value};

use super::Context;

/// Label set on every restored object: `lifeboat.io/restored-from: <backup>`. A re-run of the
/// same restore recognises its own objects by it.
pub const RESTORED_FROM: &str = "lifeboat.io/restored-from";

fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or_default()
}

fn group(obj: &Value) -> &str {
    obj["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit_once('/'))
        .map(|(g, _)| g)
        .unwrap_or("")
}

fn meta(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.get_mut("metadata")?.as_object_mut()
}

fn remove_keys(map: &mut Map<String, Value>, keys: &[&str]) -> bool {
    // Every key must go, so no short-circuiting `any`.
    keys.iter().filter(|k| map.remove(**k).is_some()).count() > 0
}

/// Server-set fields cannot be sent on create (resourceVersion is refused outright) and status
/// is the target's to compute.
pub fn strip_server_fields(obj: &mut Value, _: &Context<'_>) -> bool {
    let mut changed = false;
    if let Some(m) = meta(obj) {
        changed |= remove_keys(
            m,
            &[
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "managedFields",
                "selfLink",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ],
        );
        if let Some(ann) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            // kubectl's last-applied copy still carries the primary's names.
            changed |= ann
                .remove("kubectl.kubernetes.io/last-applied-configuration")
                .is_some();
        }
    }
    if let Some(o) = obj.as_object_mut() {
        changed |= o.remove("status").is_some();
    }
    changed
}

/// Owner uids are the primary's: the target's garbage collector would delete an object whose
/// owner uid does not exist. The object is created without them; the restore attaches them
/// again, with the owners' uids in the target, once its owners exist (`restore::owners`).
pub fn drop_owner_references(obj: &mut Value, _: &Context<'_>) -> bool {
    meta(obj).is_some_and(|m| m.remove("ownerReferences").is_some())
}

/// ClusterIPs belong to the primary's service CIDR; the target allocates its own. Headless
/// (`None`) is meaning, not an address, and stays.
pub fn service_cluster_ip(obj: &mut Value, _: &Context<'_>) -> bool {
    if !group(obj).is_empty() || kind(obj) != "Service" {
        return false;
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return false;
    };
    if spec.get("clusterIP").and_then(Value::as_str) == Some("None") {
        return false;
    }
    remove_keys(spec, &["clusterIP", "clusterIPs"])
}

/// nodePorts collide with the target's allocations unless the user asks to keep them.
pub fn service_node_ports(obj: &mut Value, ctx: &Context<'_>) -> bool {
    if ctx.options.preserve_node_ports || !group(obj).is_empty() || kind(obj) != "Service" {
        return false;
    }
    let mut changed = false;
    if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            changed |= p.remove("nodePort").is_some();
        }
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        changed |= spec.remove("healthCheckNodePort").is_some();
    }
    changed
}

const BINDING_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
];

/// A claim must be provisioned anew in the target: no PV name, no binding annotations, no data
/// source pointing at a primary-region snapshot. A claim of a pre-provisioned volume restored as
/// it is keeps its volume name, so it binds to it again.
pub fn pvc_unbind(obj: &mut Value, ctx: &Context<'_>) -> bool {
    if !group(obj).is_empty() || kind(obj) != "PersistentVolumeClaim" {
        return false;
    }
    let mut changed = false;
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let rebound = spec
            .get("volumeName")
            .and_then(Value::as_str)
            .is_some_and(|v| ctx.options.rebound_volumes.contains(v));
        if rebound {
            changed |= remove_keys(spec, &["dataSource", "dataSourceRef"]);
        } else {
            changed |= remove_keys(spec, &["volumeName", "dataSource", "dataSourceRef"]);
        }
    }
    if let Some(ann) = meta(obj)
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        changed |= remove_keys(ann, BINDING_ANNOTATIONS);
    }
    changed
}

/// A pre-provisioned volume restored as it is: its claim reference names the claim in the
/// target (namespace mapped), without the primary's uid and resourceVersion, so the target's
/// PV controller binds the two again.
pub fn pv_rebind(obj: &mut Value, ctx: &Context<'_>) -> bool {
    if !group(obj).is_empty() || kind(obj) != "PersistentVolume" {
        return false;
    }
    let mut changed = false;
    if let Some(r) = obj
        .pointer_mut("/spec/claimRef")
        .and_then(Value::as_object_mut)
    {
        changed |= remove_keys(r, &["uid", "resourceVersion"]);
        if let Some(ns) = r.get("namespace").and_then(Value::as_str) {
            let mapped = ctx.mappings.namespace(ns).to_owned();
            if mapped != ns {
                r.insert("namespace".into(), Value::String(mapped));
                changed = true;
            }
        }
    }
    if let Some(ann) = meta(obj)
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        changed |= ann.remove("pv.kubernetes.io/bound-by-controller").is_some();
    }
    changed
}

/// A restored pre-provisioned volume on an Azure storage account names the primary's account
/// in its CSI attributes, its volume handle (`rg#account#share#...`) and its server host
/// (`account.file.core.windows.net`); the secondary region uses another account.
pub fn map_storage_account(obj: &mut Value, ctx: &Context<'_>) -> bool {
    let map = &ctx.mappings.storage_accounts;
    if map.is_empty() || !group(obj).is_empty() || kind(obj) != "PersistentVolume" {
        return false;
    }
    let mut changed = false;
    let Some(csi) = obj.pointer_mut("/spec/csi").and_then(Value::as_object_mut) else {
        return false;
    };
    if let Some(handle) = csi.get_mut("volumeHandle")
        && let Some(h) = handle.as_str()
    {
        let mapped: Vec<&str> = h
            .split('#')
            .map(|part| map.get(part).map_or(part, String::as_str))
            .collect();
        let mapped = mapped.join("#");
        if mapped != h {
            *handle = Value::String(mapped);
            changed = true;
        }
    }
    if let Some(attrs) = csi
        .get_mut("volumeAttributes")
        .and_then(Value::as_object_mut)
    {
        for key in ["storageAccount", "storageaccount", "storageAccountName"] {
            changed |= map_string(attrs.get_mut(key), map);
        }
        if let Some(server) = attrs.get_mut("server")
            && let Some(s) = server.as_str()
            && let Some((account, domain)) = s.split_once('.')
            && let Some(new) = map.get(account)
        {
            *server = Value::String(format!("{new}.{domain}"));
            changed = true;
        }
    }
    changed
}

/// A bare pod bound to a primary node would never run in the target.
pub fn pod_node_name(obj: &mut Value, _: &Context<'_>) -> bool {
    if !group(obj).is_empty() || kind(obj) != "Pod" {
        return false;
    }
    obj.get_mut("spec")
        .and_then(Value::as_object_mut)
        .is_some_and(|s| s.remove("nodeName").is_some())
}

fn map_string(v: Option<&mut Value>, map: &std::collections::BTreeMap<String, String>) -> bool {
    let Some(v) = v else { return false };
    let Some(new) = v.as_str().and_then(|s| map.get(s)) else {
        return false;
    };
    *v = Value::String(new.clone());
    true
}

/// Renames a class by `map`: the class object of `class_kind` itself, and `spec.<field>` of
/// claims and of StatefulSet claim templates, which name it.
fn map_class(
    obj: &mut Value,
    map: &std::collections::BTreeMap<String, String>,
    class_kind: &str,
    field: &str,
) -> bool {
    if map.is_empty() {
        return false;
    }
    let pointer = format!("/spec/{field}");
    match (group(obj), kind(obj)) {
        ("storage.k8s.io", k) if k == class_kind => {
            map_string(obj.pointer_mut("/metadata/name"), map)
        }
        ("", "PersistentVolumeClaim") => map_string(obj.pointer_mut(&pointer), map),
        ("apps", "StatefulSet") => {
            let mut changed = false;
            if let Some(ts) = obj
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for t in ts {
                    changed |= map_string(t.pointer_mut(&pointer), map);
                }
            }
            changed
        }
        _ => false,
    }
}

/// Storage class names of the primary region → the secondary's: StorageClasses themselves,
/// claims, and StatefulSet claim templates.
pub fn map_storage_class(obj: &mut Value, ctx: &Context<'_>) -> bool {
    map_class(
        obj,
        &ctx.mappings.storage_classes,
        "StorageClass",
        "storageClassName",
    )
}

/// VolumeAttributesClass names (Kubernetes 1.34: a claim's mutable disk parameters, such as
/// IOPS and throughput) of the primary region → the secondary's, wherever they are named.
pub fn map_volume_attributes_class(obj: &mut Value, ctx: &Context<'_>) -> bool {
    map_class(
        obj,
        &ctx.mappings.volume_attributes_classes,
        "VolumeAttributesClass",
        "volumeAttributesClassName",
    )
}

const ZONE_KEYS: &[&str] = &[
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.disk.csi.azure.com/zone",
];

/// Primary-region zones are invalid in the secondary region: StorageClass `allowedTopologies`
/// values are mapped through the zone map.
pub fn map_zones(obj: &mut Value, ctx: &Context<'_>) -> bool {
    let map = &ctx.mappings.zones;
    if map.is_empty() || group(obj) != "storage.k8s.io" || kind(obj) != "StorageClass" {
        return false;
    }
    let mut changed = false;
    for term in obj
        .pointer_mut("/allowedTopologies")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for expr in term
            .pointer_mut("/matchLabelExpressions")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if !expr["key"].as_str().is_some_and(|k| ZONE_KEYS.contains(&k)) {
                continue;
            }
            for v in expr
                .pointer_mut("/values")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                changed |= map_string(Some(v), map);
            }
        }
    }
    changed
}

/// Namespace renames: the object's namespace, a Namespace's own name, and the namespaces of
/// (Cluster)RoleBinding subjects.
pub fn map_namespace(obj: &mut Value, ctx: &Context<'_>) -> bool {
    let map = &ctx.mappings.namespaces;
    if map.is_empty() {
        return false;
    }
    let mut changed = map_string(obj.pointer_mut("/metadata/namespace"), map);
    match (group(obj), kind(obj)) {
        ("", "Namespace") => changed |= map_string(obj.pointer_mut("/metadata/name"), map),
        // The Service behind an aggregated API or a webhook moves with its namespace.
        ("apiregistration.k8s.io", "APIService") => {
            changed |= map_string(obj.pointer_mut("/spec/service/namespace"), map);
        }
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => {
            for w in obj
                .pointer_mut("/webhooks")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                changed |= map_string(w.pointer_mut("/clientConfig/service/namespace"), map);
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            for s in obj
                .pointer_mut("/subjects")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                changed |= map_string(s.pointer_mut("/namespace"), map);
            }
        }
        _ => {}
    }
    changed
}

/// Labels the object with the backup it came from, so a re-run recognises it.
pub fn mark_restored(obj: &mut Value, ctx: &Context<'_>) -> bool {
    let Some(m) = meta(obj) else { return false };
    let labels = m
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(labels) = labels.as_object_mut() else {
        return false;
    };
    labels.insert(
        RESTORED_FROM.into(),
        Value::String(ctx.options.backup.clone()),
    );
    true
}

/// A claim asks for at least the capacity of the volume it was bound to: since Kubernetes 1.34 a
/// claim's request may be below it (recovery from a failed expansion), and the data may not fit
/// a volume of the request's size. Runs before the status is stripped.
pub fn claim_capacity(obj: &mut Value, _: &Context<'_>) -> bool {
    if kind(obj) != "PersistentVolumeClaim" || !group(obj).is_empty() {
        return false;
    }
    let Some(capacity) = obj["status"]["capacity"]["storage"]
        .as_str()
        .map(str::to_owned)
    else {
        return false;
    };
    let requested = obj["spec"]["resources"]["requests"]["storage"].as_str();
    let bigger = match (
        crate::units::parse_quantity(&capacity),
        requested.and_then(crate::units::parse_quantity),
    ) {
        (Some(c), Some(r)) => c > r,
        (Some(_), None) => true,
        _ => false,
    };
    if bigger {
        obj["spec"]["resources"]["requests"]["storage"] = Value::String(capacity);
    }
    bigger
}

/// An aggregated ClusterRole (one with an `aggregationRule`) is restored without its rules: the
/// target's aggregation controller fills them from the target's own roles.
pub fn aggregated_rules(obj: &mut Value, _: &Context<'_>) -> bool {
    if kind(obj) != "ClusterRole" || obj.get("aggregationRule").is_none_or(Value::is_null) {
        return false;
    }
    let Some(o) = obj.as_object_mut() else {
        return false;
    };
    match o.get("rules") {
        Some(Value::Array(rules)) if rules.is_empty() => false,
        None => false,
        Some(_) => {
            o.insert("rules".into(), Value::Array(Vec::new()));
            true
        }
    }
}
