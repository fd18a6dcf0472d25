//! Restore order: the tier each kind of object is created in. Objects of one tier are created
//! in parallel; a tier starts when the previous one is done.

use serde::Serialize;

/// Tiers, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// CustomResourceDefinitions (then wait until Established).
    Crds,
    /// Namespaces.
    Namespaces,
    /// StorageClasses, VolumeAttributesClasses, VolumeSnapshotClasses, PriorityClasses,
    /// IngressClasses, RuntimeClasses.
    ClusterClasses,
    /// ServiceAccounts, Secrets, ConfigMaps, RBAC, quotas and limits.
    Identity,
    /// PersistentVolumeClaims and the pre-provisioned PersistentVolumes they bind to again
    /// (then the claims' data, before any workload).
    Claims,
    /// Services.
    Services,
    /// StatefulSets, Deployments, DaemonSets, ReplicaSets, Jobs, CronJobs, bare Pods.
    Workloads,
    /// Everything else (custom resources, Ingresses, PodDisruptionBudgets, ...).
    Other,
    /// APIServices of aggregated APIs, once the Services and workloads serving them exist
    /// (then waited for until Available, bounded).
    ApiServices,
    /// Admission webhooks last, so they cannot block the restore of what they guard.
    Webhooks,
}

impl Tier {
    /// Every tier in order.
    pub const ALL: [Tier; 10] = [
        Tier::Crds,
        Tier::Namespaces,
        Tier::ClusterClasses,
        Tier::Identity,
        Tier::Claims,
        Tier::Services,
        Tier::Workloads,
        Tier::Other,
        Tier::ApiServices,
        Tier::Webhooks,
    ];

    /// The tier of objects of `group`/`kind`.
    pub fn of(group: &str, kind: &str) -> Tier {
        match (group, kind) {
            ("apiextensions.k8s.io", "CustomResourceDefinition") => Tier::Crds,
            ("", "Namespace") => Tier::Namespaces,
            ("storage.k8s.io", "StorageClass" | "VolumeAttributesClass")
            | ("snapshot.storage.k8s.io", "VolumeSnapshotClass")
            | ("scheduling.k8s.io", "PriorityClass")
            | ("networking.k8s.io", "IngressClass")
            | ("node.k8s.io", "RuntimeClass") => Tier::ClusterClasses,
            ("", "ServiceAccount" | "Secret" | "ConfigMap" | "LimitRange" | "ResourceQuota")
            | ("rbac.authorization.k8s.io", _) => Tier::Identity,
            ("", "PersistentVolumeClaim" | "PersistentVolume") => Tier::Claims,
            ("", "Service") => Tier::Services,
            ("apps", "StatefulSet" | "Deployment" | "DaemonSet" | "ReplicaSet")
            | ("batch", "Job" | "CronJob")
            | ("", "Pod" | "ReplicationController") => Tier::Workloads,
            ("apiregistration.k8s.io", "APIService") => Tier::ApiServices,
            (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
            ) => Tier::Webhooks,
            _ => Tier::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_the_design_order() {
        let order = [
            Tier::of("apiextensions.k8s.io", "CustomResourceDefinition"),
            Tier::of("", "Namespace"),
            Tier::of("storage.k8s.io", "StorageClass"),
            Tier::of("", "Secret"),
            Tier::of("rbac.authorization.k8s.io", "RoleBinding"),
            Tier::of("", "PersistentVolumeClaim"),
            Tier::of("", "Service"),
            Tier::of("apps", "StatefulSet"),
            Tier::of("shop.example.com", "Cart"),
            Tier::of("apiregistration.k8s.io", "APIService"),
            Tier::of(
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
            ),
        ];
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
        assert_eq!(
            Tier::of("snapshot.storage.k8s.io", "VolumeSnapshotClass"),
            Tier::ClusterClasses
        );
        assert_eq!(Tier::of("batch", "CronJob"), Tier::Workloads);
        assert!(
            Tier::of("storage.k8s.io", "VolumeAttributesClass")
                < Tier::of("", "PersistentVolumeClaim")
        );
    }
}
