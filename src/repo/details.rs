//! The typed details of a manifest (`details.resources`, `details.volumes`, ...). They used to be
//! an untyped map each part read as it liked, so a damaged record read as "nothing": a restore
//! then planned no volume data. Now a manifest whose details do not parse is an error naming the
//! backup and the field ([`super::RepoError::Corrupt`]); fields this build does not know are
//! still ignored, so later versions can add detail.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::VolumeRecord;

/// Part-specific detail of a backup, under the same JSON names as before it was typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDetails {
    /// What the resource snapshot took (absent in manifests written by tests or tools that
    /// store volumes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesDetail>,
    /// One record per claim in scope; absent for a configuration-only backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeRecord>>,
    /// Wall time of the whole backup, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// What the backup covers beyond its filters (`Manifest::filters`): whether volume data
    /// was taken, which claims' data is in it, which API groups did not answer. Absent from
    /// manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeDetail>,
}

impl ManifestDetails {
    /// Returns true if and only if no detail is recorded (the manifest then omits `details`).
    pub fn is_empty(&self) -> bool {
        self.resources.is_none()
            && self.volumes.is_none()
            && self.duration_seconds.is_none()
            && self.scope.is_none()
    }
}

/// `details.scope`: what a restore may expect of the backup, so a restore point is chosen for
/// what it holds (a `--no-volumes` backup holds no claim's data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeDetail {
    /// Whether volume data was taken at all (false for `--no-volumes` and `volumes: false`).
    pub volume_data: bool,
    /// Every claim in scope, in namespace/name order: whether its data is in the backup.
    #[serde(default)]
    pub claims: Vec<ClaimScope>,
    /// API group-versions that did not answer discovery: their objects are not in the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unanswered_groups: Vec<String>,
}

impl ScopeDetail {
    /// The claims in scope whose data is not in the backup and does not stay in a volume a
    /// restore binds them to again.
    pub fn claims_without_data(&self) -> impl Iterator<Item = &ClaimScope> {
        self.claims.iter().filter(|c| !c.data && !c.by_reference)
    }
}

/// One claim in a backup's scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimScope {
    /// Namespace.
    pub namespace: String,
    /// The claim.
    pub pvc: String,
    /// Whether its data is in the backup.
    pub data: bool,
    /// Its data stays in the pre-provisioned or shared volume it is bound to, which a restore
    /// binds it to again (see `VolumeRecord::by_reference`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_reference: bool,
    /// Why not, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `details.resources`: what the resource snapshot took, written by `backup`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesDetail {
    /// Per resource: counts, list resourceVersion, errors.
    pub resources: Vec<ResourceSummary>,
    /// Objects per namespace.
    pub namespaces: BTreeMap<String, u64>,
    /// Resources left out by rule, with the reason.
    pub skipped: Vec<Skipped>,
    /// Objects in the archive.
    pub objects: u64,
    /// Uncompressed JSON bytes.
    pub raw_bytes: u64,
}

/// What listing one resource gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSummary {
    /// `deployments.apps`-style name.
    pub resource: String,
    /// Group (`""` for core).
    pub group: String,
    /// Version listed.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Objects taken.
    pub count: u64,
    /// resourceVersion of the list (its first page): where an incremental backup would resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_resource_version: Option<String>,
    /// Times the list restarted after its continue token expired.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Why listing failed, if it did (the objects before the failure are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Objects per namespace (namespaced resources).
    #[serde(skip)]
    pub per_namespace: BTreeMap<String, u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A resource left out, and why: recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// `deployments.apps`-style name.
    pub resource: String,
    /// Why.
    pub reason: String,
}
