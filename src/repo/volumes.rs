//! The per-volume record a backup's manifest keeps in `details.volumes`: what was taken, from
//! where, how, and at what cost. Restore reads it to find each volume's index.

use serde::{Deserialize, Serialize};

/// How a volume's backup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeStatus {
    /// Its index and packs are in the backup.
    Completed,
    /// It was tried and failed (see `error`): the backup is partial.
    Failed,
    /// It could not be snapshotted (no CSI driver, no VolumeSnapshotClass, not bound).
    NotSnapshottable,
}

/// What moving one volume's data amounted to: kept in the manifest's volume record and sent by
/// the mover in its report, under the same JSON names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFigures {
    /// Regular files.
    #[serde(default)]
    pub files: u64,
    /// File bytes (apparent size) backed up or written.
    #[serde(default)]
    pub bytes: u64,
    /// Files taken over from the parent without reading (backup).
    #[serde(default)]
    pub files_unchanged: u64,
    /// Chunks stored by this backup.
    #[serde(default)]
    pub new_chunks: u64,
    /// Their plaintext bytes.
    #[serde(default)]
    pub new_bytes: u64,
    /// Their stored (compressed) bytes.
    #[serde(default)]
    pub stored_bytes: u64,
    /// Chunk references served by chunks the repository already had.
    #[serde(default)]
    pub reused_chunks: u64,
}

/// One PersistentVolumeClaim of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    /// Namespace of the claim.
    pub namespace: String,
    /// The claim.
    pub pvc: String,
    /// Outcome.
    pub status: VolumeStatus,
    /// Why it failed or was not snapshotted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The claim's StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The CSI driver of its volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Capacity of the claim (`10Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// The VolumeSnapshotClass used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_class: Option<String>,
    /// When the snapshot was cut: the data's point in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<String>,
    /// The volume index's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// The backup whose index served as parent (incremental), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Files, bytes and chunks, as the mover reported them.
    #[serde(flatten)]
    pub figures: VolumeFigures,
    /// Hooks run around the snapshot, with their outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// Its data stays in the volume the claim is bound to (a pre-provisioned volume, or shared
    /// storage): never copied, a restore binds the claim to that volume again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_reference: bool,
    /// Wall time of the volume's backup (snapshot to index), seconds.
    #[serde(default)]
    pub seconds: f64,
}

impl VolumeRecord {
    /// A record with only the claim's identity and an outcome.
    pub fn new(namespace: &str, pvc: &str, status: VolumeStatus) -> Self {
        Self {
            namespace: namespace.to_owned(),
            pvc: pvc.to_owned(),
            status,
            error: None,
            storage_class: None,
            driver: None,
            capacity: None,
            snapshot_class: None,
            snapshot_time: None,
            index: None,
            parent: None,
            figures: VolumeFigures::default(),
            hooks: Vec::new(),
            by_reference: false,
            seconds: 0.0,
        }
    }
}
