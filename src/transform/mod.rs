//! Pure transforms applied to each object before it is restored: no I/O, no client.
//!
//! Every rule is a named function over the object's JSON ([`Rule`]); the plan records which
//! rules changed which object, so an operator can see exactly what a restore rewrote.

mod rules;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

pub use rules::*;

/// Mappings from the primary region's names to the secondary's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mappings {
    /// Storage class renames.
    pub storage_classes: BTreeMap<String, String>,
    /// VolumeAttributesClass renames.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_attributes_classes: BTreeMap<String, String>,
    /// Zone renames.
    pub zones: BTreeMap<String, String>,
    /// Namespace renames.
    pub namespaces: BTreeMap<String, String>,
    /// Storage account renames (restored pre-provisioned volumes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_accounts: BTreeMap<String, String>,
}

impl Mappings {
    /// The target namespace of `ns`.
    pub fn namespace<'a>(&'a self, ns: &'a str) -> &'a str {
        self.namespaces.get(ns).map(String::as_str).unwrap_or(ns)
    }
}

/// Options that change which rules apply.
#[derive(Debug, Clone, Default)]
pub struct TransformOptions {
    /// Keep Service nodePorts instead of letting the target allocate them.
    pub preserve_node_ports: bool,
    /// The backup restored from (recorded in a label for resumability).
    pub backup: String,
    /// PersistentVolumes restored as they are (pre-provisioned): their claims stay bound to them.
    pub rebound_volumes: std::collections::BTreeSet<String>,
}

/// A named transform. Returns true if and only if it changed the object.
pub type Rule = fn(&mut Value, &Context<'_>) -> bool;

/// What a rule may look at besides the object.
pub struct Context<'a> {
    /// Mappings.
    pub mappings: &'a Mappings,
    /// Options.
    pub options: &'a TransformOptions,
}

/// Every rule, in the order applied, with the name the plan reports.
pub const RULES: &[(&str, Rule)] = &[
    ("claim-capacity", claim_capacity),
    ("strip-server-fields", strip_server_fields),
    ("drop-owner-references", drop_owner_references),
    ("service-cluster-ip", service_cluster_ip),
    ("service-node-ports", service_node_ports),
    ("pvc-unbind", pvc_unbind),
    ("pv-rebind", pv_rebind),
    ("map-storage-account", map_storage_account),
    ("pod-node-name", pod_node_name),
    ("map-storage-class", map_storage_class),
    ("map-volume-attributes-class", map_volume_attributes_class),
    ("map-zones", map_zones),
    ("map-namespace", map_namespace),
    ("aggregated-rules", aggregated_rules),
    ("mark-restored", mark_restored),
];

/// Applies every rule; returns the names of those that changed the object.
pub fn apply_all(obj: &mut Value, ctx: &Context<'_>) -> Vec<&'static str> {
    RULES
        .iter()
        .filter_map(|(name, rule)| rule(obj, ctx).then_some(*name))
        .collect()
}

#[cfg(test)]
mod tests;
