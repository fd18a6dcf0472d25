//! `volumes:`: how backup and restore move volume data (mover Jobs, snapshot classes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `volumes:` of lifeboat.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumesConfig {
    /// Image of the mover Jobs: lifeboat itself.
    #[serde(default = "default_image")]
    pub mover_image: String,
    /// Volumes moved at once (each is one Job in the cluster).
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// VolumeSnapshotClass per CSI driver, where the cluster's default class is not wanted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshot_classes: BTreeMap<String, String>,
    /// Service account of the mover pods, e.g. one federated with Azure workload identity
    /// (`azure.workload.identity/client-id`); it must exist in each volume's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// A Secret (in each volume's namespace) whose keys become the mover's environment, holding
    /// what the location's `env:` credential references name (SAS token, account key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// CSI drivers of shared storage (`file.csi.azure.com`, `nfs.csi.k8s.io`): their volumes'
    /// data is never copied; a restore re-creates the PersistentVolume, pointing at the same
    /// share (storage accounts mapped by `storageAccountMap`), and binds the claim to it again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_storage_drivers: Vec<String>,
    /// How long one volume may take (snapshot, copy), in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Temporary objects (snapshots, claims, Jobs) carry a lease their run renews; once a killed
    /// run's lease has passed, the next run deletes them. Seconds.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
}

fn default_lease() -> u64 {
    120
}

fn default_image() -> String {
    format!("ghcr.io/lifeboat/lifeboat:{}", env!("CARGO_PKG_VERSION"))
}

fn default_parallelism() -> usize {
    2
}

fn default_timeout() -> u64 {
    3600
}

impl Default for VolumesConfig {
    fn default() -> Self {
        Self {
            mover_image: default_image(),
            parallelism: default_parallelism(),
            snapshot_classes: BTreeMap::new(),
            service_account: None,
            credentials_secret: None,
            shared_storage_drivers: Vec::new(),
            timeout_seconds: default_timeout(),
            lease_seconds: default_lease(),
        }
    }
}
