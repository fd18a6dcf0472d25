//! The resource types the simulated API server serves: the built-ins, generated from
//! `k8s-openapi`'s type metadata, plus whatever CustomResourceDefinitions add at run time.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::{ClusterResourceScope, ListableResource, NamespaceResourceScope, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The verbs every stored resource supports.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource: what discovery reports and what the store keys its tables by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version inside the group, e.g. `v1`: the one objects are stored at.
    pub version: String,
    /// Every version served (the storage version included), in the order a real API server
    /// prefers them (`v2`, `v1`, `v1beta2`, `v1beta1`, `v1alpha1`): a CRD may serve several,
    /// converting with its `None` strategy (only `apiVersion` changes).
    pub served: Vec<String>,
    /// Kind of one object, e.g. `ConfigMap`.
    pub kind: String,
    /// Kind of a list of objects, e.g. `ConfigMapList`.
    pub list_kind: String,
    /// Plural URL segment, e.g. `configmaps`.
    pub plural: String,
    /// Singular name (lower-case kind) reported by discovery.
    pub singular: String,
    /// Short names reported by discovery (kubectl's `cm`, `ns`, ...).
    pub short_names: Vec<String>,
    /// Returns true if and only if objects live inside a namespace.
    pub namespaced: bool,
    /// Verbs reported by discovery.
    pub verbs: Vec<String>,
    /// Subresources served, e.g. `status`, `log`.
    pub subresources: Vec<String>,
    /// Discovery categories (`all` makes `kubectl get all` include the type).
    pub categories: Vec<String>,
    /// True for types defined by a CustomResourceDefinition (their list items keep kind/apiVersion).
    pub custom: bool,
    /// Checks an object against its schema (built-ins: decoding into the `k8s-openapi` type, so
    /// wrong types and missing required fields are refused as a real server refuses them).
    pub validate: Option<Validator>,
}

/// A schema check: `Err` carries the reason. Two validators compare equal (types are compared
/// by their names, not by code addresses).
#[derive(Clone, Copy, Debug)]
pub struct Validator(pub fn(&Value) -> Result<(), String>);

impl PartialEq for Validator {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Validator {}

/// Decodes `v` as `K` without copying it; the error names the offending field.
fn validate_as<K: DeserializeOwned>(v: &Value) -> Result<(), String> {
    K::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

/// Implemented by `k8s-openapi`'s scope marker types so the catalogue can read a type's scope.
pub trait ScopeFlag {
    /// Returns true if and only if the scope is a namespace.
    const NAMESPACED: bool;
}

impl ScopeFlag for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl ScopeFlag for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

impl ResourceType {
    /// The resource type of a `k8s-openapi` type, read from its `Resource` metadata.
    pub fn of<K>() -> ResourceType
    where
        K: Resource + ListableResource + DeserializeOwned,
        K::Scope: ScopeFlag,
    {
        ResourceType {
            group: K::GROUP.to_string(),
            version: K::VERSION.to_string(),
            served: vec![K::VERSION.to_string()],
            kind: K::KIND.to_string(),
            list_kind: K::LIST_KIND.to_string(),
            plural: K::URL_PATH_SEGMENT.to_string(),
            singular: K::KIND.to_ascii_lowercase(),
            short_names: Vec::new(),
            namespaced: <K::Scope as ScopeFlag>::NAMESPACED,
            verbs: ALL_VERBS.iter().map(|v| v.to_string()).collect(),
            subresources: Vec::new(),
            categories: Vec::new(),
            custom: false,
            validate: Some(Validator(validate_as::<K>)),
        }
    }

    /// Returns true if and only if the type is served at `version`.
    pub fn serves(&self, version: &str) -> bool {
        self.served.iter().any(|v| v == version)
    }

    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Returns true if and only if the type serves the `status` subresource (so writes to the
    /// main resource keep the stored status, and creates drop it).
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }

    /// Returns true if and only if this is `group`/`kind`.
    pub fn is(&self, group: &str, kind: &str) -> bool {
        self.group == group && self.kind == kind
    }
}

/// Lists the built-in types; the metadata comes from each type's `Resource` impl, only the
/// subresources (which `k8s-openapi` does not describe) are listed here.
macro_rules! builtins {
    ($($ty:ty => [$($sub:literal),*] [$($short:literal),*];)*) => {
        vec![$({
            let mut rt = ResourceType::of::<$ty>();
            rt.subresources = vec![$($sub.to_string()),*];
            rt.short_names = vec![$($short.to_string()),*];
            if IN_ALL.contains(&rt.kind.as_str()) {
                rt.categories = vec!["all".to_string()];
            }
            rt
        }),*]
    };
}

/// The kinds in the `all` category, as on a real cluster.
const IN_ALL: &[&str] = &[
    "Pod",
    "Service",
    "ReplicationController",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "HorizontalPodAutoscaler",
];

fn builtin_types() -> Vec<ResourceType> {
    use k8s_openapi::api::admissionregistration::v1 as admission;
    use k8s_openapi::api::apps::v1 as apps;
    use k8s_openapi::api::autoscaling::v2 as autoscaling;
    use k8s_openapi::api::batch::v1 as batch;
    use k8s_openapi::api::certificates::v1 as certificates;
    use k8s_openapi::api::coordination::v1 as coordination;
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;
    use k8s_openapi::api::events::v1 as events;
    use k8s_openapi::api::networking::v1 as networking;
    use k8s_openapi::api::node::v1 as node;
    use k8s_openapi::api::policy::v1 as policy;
    use k8s_openapi::api::rbac::v1 as rbac;
    use k8s_openapi::api::scheduling::v1 as scheduling;
    use k8s_openapi::api::storage::v1 as storage;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as aggregator;
    builtins! {
        core::Namespace => ["status"] ["ns"];
        core::Node => ["status"] ["no"];
        core::Pod => ["status", "log"] ["po"];
        core::Service => ["status"] ["svc"];
        core::ConfigMap => [] ["cm"];
        core::Secret => [] [];
        core::ServiceAccount => [] ["sa"];
        core::PersistentVolumeClaim => ["status"] ["pvc"];
        core::PersistentVolume => ["status"] ["pv"];
        core::Endpoints => [] ["ep"];
        core::Event => [] ["ev"];
        core::LimitRange => [] ["limits"];
        core::ResourceQuota => ["status"] ["quota"];
        core::ReplicationController => ["status", "scale"] ["rc"];
        core::PodTemplate => [] [];
        apps::Deployment => ["status", "scale"] ["deploy"];
        apps::ReplicaSet => ["status", "scale"] ["rs"];
        apps::StatefulSet => ["status", "scale"] ["sts"];
        apps::DaemonSet => ["status"] ["ds"];
        apps::ControllerRevision => [] [];
        batch::Job => ["status"] [];
        batch::CronJob => ["status"] ["cj"];
        autoscaling::HorizontalPodAutoscaler => ["status"] ["hpa"];
        networking::Ingress => ["status"] ["ing"];
        networking::IngressClass => [] [];
        networking::NetworkPolicy => [] ["netpol"];
        policy::PodDisruptionBudget => ["status"] ["pdb"];
        rbac::Role => [] [];
        rbac::RoleBinding => [] [];
        rbac::ClusterRole => [] [];
        rbac::ClusterRoleBinding => [] [];
        storage::StorageClass => [] ["sc"];
        storage::VolumeAttributesClass => [] ["vac"];
        storage::CSIDriver => [] [];
        storage::CSINode => [] [];
        storage::VolumeAttachment => ["status"] [];
        scheduling::PriorityClass => [] ["pc"];
        coordination::Lease => [] [];
        discovery::EndpointSlice => [] [];
        events::Event => [] ["ev"];
        node::RuntimeClass => [] [];
        certificates::CertificateSigningRequest => ["status"] ["csr"];
        admission::MutatingWebhookConfiguration => [] [];
        admission::ValidatingWebhookConfiguration => [] [];
        apiextensions::CustomResourceDefinition => ["status"] ["crd", "crds"];
        // Stored and served as objects; the simulator aggregates no API behind them.
        aggregator::APIService => ["status"] [];
    }
}

type TypeMap = BTreeMap<(String, String), Arc<ResourceType>>;

/// The served resource types; cheap to clone (shared), updated when CRDs are established or
/// deleted.
#[derive(Clone, Debug)]
pub struct Catalogue {
    // Keyed by (group, plural); the lock is held only to copy out an `Arc`.
    inner: Arc<RwLock<TypeMap>>,
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue::builtin()
    }
}

impl Catalogue {
    /// The built-in types only.
    pub fn builtin() -> Catalogue {
        let map = builtin_types()
            .into_iter()
            .map(|rt| ((rt.group.clone(), rt.plural.clone()), Arc::new(rt)))
            .collect();
        Catalogue {
            inner: Arc::new(RwLock::new(map)),
        }
    }

    /// The type served as `group`/`plural`.
    pub fn find(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.read()
            .get(&(group.to_string(), plural.to_string()))
            .cloned()
    }

    /// The type with `group` and `kind`.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.read()
            .values()
            .find(|rt| rt.group == group && rt.kind == kind)
            .cloned()
    }

    /// The type of an object's `apiVersion` and `kind`.
    pub fn by_api_version(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.read()
            .values()
            .find(|rt| rt.group == group && rt.version == version && rt.kind == kind)
            .cloned()
    }

    /// Every served type, ordered by (group, plural).
    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        self.read().values().cloned().collect()
    }

    /// Adds (or replaces) a type; used when a CRD becomes established.
    pub fn add(&self, rt: ResourceType) {
        let key = (rt.group.clone(), rt.plural.clone());
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::new(rt));
    }

    /// Removes a type; used when its CRD is deleted.
    pub fn remove(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(group.to_string(), plural.to_string()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TypeMap> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Kubernetes' version priority (`k8s.io/apimachinery/pkg/version.CompareKubeAwareVersionStrings`):
/// GA before beta before alpha, higher major first, then higher minor; other names last, in
/// alphabetical order. Sorts `versions` most preferred first.
pub fn sort_by_priority(versions: &mut [String]) {
    fn key(v: &str) -> (u8, u64, u64, String) {
        let parsed = v.strip_prefix('v').and_then(|rest| {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let major: u64 = rest[..digits].parse().ok()?;
            match &rest[digits..] {
                "" => Some((3, major, 0)),
                tail => {
                    let (rank, n) = if let Some(n) = tail.strip_prefix("beta") {
                        (2, n)
                    } else {
                        (1, tail.strip_prefix("alpha")?)
                    };
                    Some((rank, major, n.parse().ok()?))
                }
            }
        });
        match parsed {
            Some((rank, major, minor)) => (rank, major, minor, String::new()),
            None => (0, 0, 0, v.to_owned()),
        }
    }
    versions.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        // Known versions descending; unknown ones (rank 0) ascending by name.
        kb.0.cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.cmp(&ka.2))
            .then(ka.3.cmp(&kb.3))
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_sort_as_kubernetes_prefers_them() {
        let mut v: Vec<String> = [
            "v1alpha1",
            "v1",
            "foo1",
            "v2beta1",
            "v1beta2",
            "v2",
            "v11alpha2",
            "v1beta1",
        ]
        .map(String::from)
        .to_vec();
        super::sort_by_priority(&mut v);
        assert_eq!(
            v,
            [
                "v2",
                "v1",
                "v2beta1",
                "v1beta2",
                "v1beta1",
                "v11alpha2",
                "v1alpha1",
                "foo1"
            ]
        );
    }

    use super::*;

    #[test]
    fn builtins_come_from_type_metadata() {
        let c = Catalogue::builtin();
        let cm = c.find("", "configmaps").expect("configmaps");
        assert_eq!(cm.kind, "ConfigMap");
        assert_eq!(cm.list_kind, "ConfigMapList");
        assert!(cm.namespaced);
        let sc = c.by_kind("storage.k8s.io", "StorageClass").expect("sc");
        assert_eq!(sc.plural, "storageclasses");
        assert!(!sc.namespaced);
        assert_eq!(sc.api_version(), "storage.k8s.io/v1");
    }
}
