//! The manifest: the commit point of a backup and the list of everything it needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BackupName, ManifestDetails, VolumeRecord};
use crate::filter::Filters;

/// One stored object a backup needs, with what a reader checks it against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectEntry {
    /// Key relative to the location's prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the stored bytes, lowercase hex.
    pub sha256: String,
}

/// Facts about the backed-up cluster, where visible.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFacts {
    /// Config name of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `gitVersion` of the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Host of the API URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_host: Option<String>,
    /// Zones of the nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Number of nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<u64>,
}

/// `backups/<name>/manifest.json`. Readers ignore fields they do not know, so later versions can
/// add detail without breaking them; `formatVersion` guards incompatible changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Manifest format version (1).
    pub format_version: u32,
    /// The backup's name.
    pub name: BackupName,
    /// `lifeboat <version>` that wrote it.
    pub created_by: String,
    /// When the backup started.
    pub started_at: jiff::Timestamp,
    /// When the manifest was written.
    pub completed_at: jiff::Timestamp,
    /// User labels (`--label k=v`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When retention may delete it (`--ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
    /// The cluster it was taken from.
    #[serde(default)]
    pub cluster: ClusterFacts,
    /// The filters it was taken with, as given: the backup's scope. Keys this build does not
    /// know are ignored, as everywhere in a manifest.
    #[serde(default, deserialize_with = "Filters::lenient")]
    pub filters: Filters,
    /// Every object of this backup's folder (except the manifest itself).
    pub objects: Vec<ObjectEntry>,
    /// Every pack the backup's volumes reference (shared with other backups).
    #[serde(default)]
    pub packs: Vec<ObjectEntry>,
    /// Non-fatal problems met while taking it.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Part-specific detail (resource counts, skipped kinds, volumes), typed: a record that does
    /// not parse makes the whole manifest an error naming the field.
    #[serde(default, skip_serializing_if = "ManifestDetails::is_empty")]
    pub details: ManifestDetails,
    /// sha256 of the manifest's own content (see [`content_sha256`]), set by the commit and
    /// checked on every read, so damage to the manifest is named as such rather than blamed on
    /// an object whose recorded digest was hit. Absent from manifests written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// In an encrypted repository: the fields that describe content ([`SEALED_FIELDS`]), as one
    /// age file (base64). Opened on read when the identity is at hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// True if the manifest was read without the identity: its sealed fields are empty here.
    #[serde(skip)]
    pub unopened: bool,
}

/// The manifest's fields that describe content, sealed as a whole in an encrypted repository:
/// everything under them (every field of `details`, present or added later) is encrypted.
pub const SEALED_FIELDS: &[&str] = &["cluster", "filters", "warnings", "details"];
/// The JSON key of [`Manifest::sealed`].
pub(super) const SEALED_FIELD: &str = "sealed";

/// Moves the [`SEALED_FIELDS`] of a manifest document into one age file (`sealed`).
pub(super) fn seal(
    doc: &mut serde_json::Value,
    key: &super::crypto::WriterKey,
) -> Result<(), super::crypto::CryptoError> {
    use base64::Engine;
    let Some(obj) = doc.as_object_mut() else {
        return Ok(());
    };
    let mut inner = serde_json::Map::new();
    for f in SEALED_FIELDS {
        if let Some(v) = obj.remove(*f) {
            inner.insert((*f).to_owned(), v);
        }
    }
    let plain = serde_json::to_vec(&inner).unwrap_or_default();
    let ct = super::crypto::encrypt_bytes(key, &plain)?;
    obj.insert(
        SEALED_FIELD.into(),
        serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(ct)),
    );
    Ok(())
}

/// Puts the sealed fields of a manifest document back in place.
pub(super) fn open(
    doc: &mut serde_json::Value,
    key: &super::crypto::ReaderKey,
) -> Result<(), super::crypto::CryptoError> {
    use super::crypto::CryptoError;
    use base64::Engine;
    let Some(obj) = doc.as_object_mut() else {
        return Ok(());
    };
    let Some(sealed) = obj.get(SEALED_FIELD).and_then(|v| v.as_str()) else {
        return Ok(());
    };
    let ct = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| CryptoError::Damaged(format!("`sealed` is not base64: {e}")))?;
    let plain = super::crypto::decrypt_bytes(key, &ct)?;
    let inner: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&plain)
        .map_err(|e| CryptoError::Damaged(format!("`sealed` does not hold JSON: {e}")))?;
    for (k, v) in inner {
        obj.insert(k, v);
    }
    Ok(())
}

/// The JSON key of [`Manifest::manifest_sha256`].
pub(super) const DIGEST_FIELD: &str = "manifestSha256";

/// sha256 (lowercase hex) of a manifest document without its `manifestSha256` field, written as
/// compact JSON with object keys sorted: independent of the file's layout, so the writer (from
/// the struct) and a reader (from the stored bytes) compute the same digest.
pub(super) fn content_sha256(doc: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let mut doc = doc.clone();
    if let Some(obj) = doc.as_object_mut() {
        obj.remove(DIGEST_FIELD);
    }
    let mut h = Sha256::new();
    write_canonical(&doc, &mut h);
    hex::encode(h.finalize())
}

/// Compact JSON with every object's keys in byte order, whatever map type serde_json was built
/// with (a dependency may turn on `preserve_order`).
fn write_canonical(v: &serde_json::Value, out: &mut sha2::Sha256) {
    use sha2::Digest;
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                out.update(serde_json::Value::String(k.clone()).to_string().as_bytes());
                out.update(b":");
                if let Some(value) = map.get(k) {
                    write_canonical(value, out);
                }
            }
            out.update(b"}");
        }
        serde_json::Value::Array(items) => {
            out.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.update(b",");
                }
                write_canonical(item, out);
            }
            out.update(b"]");
        }
        scalar => out.update(scalar.to_string().as_bytes()),
    }
}

impl Manifest {
    /// A manifest to fill in and hand to [`super::BackupWriter::commit`], which sets the
    /// objects, packs and completion time. Format version and `createdBy` are this build's.
    pub fn draft(name: BackupName, started_at: jiff::Timestamp) -> Self {
        Self {
            format_version: 1,
            name,
            created_by: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
            started_at,
            completed_at: started_at,
            labels: BTreeMap::new(),
            expires_at: None,
            cluster: ClusterFacts::default(),
            filters: Filters::default(),
            objects: Vec::new(),
            packs: Vec::new(),
            warnings: Vec::new(),
            details: ManifestDetails::default(),
            manifest_sha256: None,
            sealed: None,
            unopened: false,
        }
    }

    /// Every object a reader must find for this backup to be complete.
    pub fn required_objects(&self) -> impl Iterator<Item = &ObjectEntry> {
        self.objects.iter().chain(self.packs.iter())
    }

    /// The volume records (none for a configuration-only backup).
    pub fn volumes(&self) -> &[VolumeRecord] {
        self.details.volumes.as_deref().unwrap_or_default()
    }

    /// Returns true if and only if problems were met taking it (its warnings): `PartiallyFailed`.
    pub fn is_partial(&self) -> bool {
        !self.warnings.is_empty()
    }

    /// `Completed` or `PartiallyFailed`, as `backup`, `list` and `describe` say it.
    pub fn status(&self) -> &'static str {
        if self.is_partial() {
            "PartiallyFailed"
        } else {
            "Completed"
        }
    }

    /// Kubernetes objects in the backup's resource archive, where recorded.
    pub fn resource_objects(&self) -> Option<u64> {
        self.details.resources.as_ref().map(|r| r.objects)
    }

    /// Total stored bytes the backup needs (its objects plus the packs it references).
    pub fn total_size(&self) -> u64 {
        self.required_objects().map(|o| o.size).sum()
    }
}
