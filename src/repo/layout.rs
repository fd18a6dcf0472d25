//! Where each kind of object lives: the one place that knows the key layout.

use super::{BackupName, PackId};

/// Object keys of the repository format, relative to the location's prefix.
pub struct Layout;

impl Layout {
    /// The repository config.
    pub const CONFIG: &'static str = "lifeboat.json";
    /// Prefix of every backup's objects.
    pub const BACKUPS: &'static str = "backups/";
    /// Prefix of every pack.
    pub const PACKS: &'static str = "packs/";
    /// The manifest's file name inside a backup's folder.
    pub const MANIFEST_FILE: &'static str = "manifest.json";

    /// `backups/<name>/`
    pub fn backup_dir(name: &BackupName) -> String {
        format!("{}{name}/", Self::BACKUPS)
    }

    /// `backups/<name>/manifest.json`: the commit point.
    pub fn manifest(name: &BackupName) -> String {
        format!("{}{}", Self::backup_dir(name), Self::MANIFEST_FILE)
    }

    /// `backups/<name>/resources.tar.zst`
    pub fn resources(name: &BackupName) -> String {
        format!("{}{}", Self::backup_dir(name), Self::RESOURCES_FILE)
    }

    /// `backups/<name>/volumes/<ns>/<pvc>.json`
    pub fn volume_index(name: &BackupName, namespace: &str, pvc: &str) -> String {
        format!(
            "{}{}",
            Self::backup_dir(name),
            Self::volume_index_in_backup(namespace, pvc)
        )
    }

    /// `volumes/<ns>/<pvc>.json`, relative to a backup's folder (what
    /// [`super::BackupWriter`] takes).
    pub fn volume_index_in_backup(namespace: &str, pvc: &str) -> String {
        format!("volumes/{namespace}/{pvc}.json")
    }

    /// `volumes/<tag>.age`, relative to a backup's folder: a volume's index in an encrypted
    /// repository, where the claim is named only by its keyed tag ([`Layout::claim_tag`]).
    pub fn volume_index_sealed_in_backup(tag: &str) -> String {
        format!("volumes/{tag}.age")
    }

    /// `backups/<name>/volumes/<tag>.age`
    pub fn volume_index_sealed(name: &BackupName, tag: &str) -> String {
        format!(
            "{}{}",
            Self::backup_dir(name),
            Self::volume_index_sealed_in_backup(tag)
        )
    }

    /// The keyed tag standing for claim `namespace/pvc` in an encrypted repository's keys.
    pub fn claim_tag(key: &super::crypto::ChunkKey, namespace: &str, pvc: &str) -> String {
        key.tag("lifeboat volume", &format!("{namespace}/{pvc}"))
    }

    /// `<index key>.writer`: the writer's view of a volume index (encrypted repositories).
    pub fn writer_view(index_key: &str) -> String {
        format!("{index_key}.writer")
    }

    /// `resources.tar.zst`, relative to a backup's folder.
    pub const RESOURCES_FILE: &'static str = "resources.tar.zst";

    /// `packs/<aa>/<sha256>`: fanned out by the first byte so no folder grows huge.
    pub fn pack(id: &PackId) -> String {
        let id = id.as_str();
        let fan = id.get(..2).unwrap_or("00");
        format!("{}{fan}/{id}", Self::PACKS)
    }

    /// Prefix of the markers of retired packs.
    pub const RETIRED: &'static str = "retired/";

    /// `retired/<pack id>`: the pack is mostly garbage; new backups store its live chunks again
    /// instead of referencing it, so it is collected once the backups using it expire.
    pub fn retired(pack_id: &PackId) -> String {
        format!("{}{pack_id}", Self::RETIRED)
    }

    /// If `key` is a pack's (`packs/<aa>/<id>`), its id.
    pub fn pack_of(key: &str) -> Option<PackId> {
        let (_, id) = key.strip_prefix(Self::PACKS)?.split_once('/')?;
        PackId::from_hex(id)
    }

    /// If `key` is a retirement marker's (`retired/<id>`), the pack's id.
    pub fn retired_pack_of(key: &str) -> Option<PackId> {
        PackId::from_hex(key.strip_prefix(Self::RETIRED)?)
    }

    /// If `key` is `backups/<name>/manifest.json`, the backup's name.
    pub fn manifest_owner(key: &str) -> Option<&str> {
        let rest = key.strip_prefix(Self::BACKUPS)?;
        let (name, file) = rest.split_once('/')?;
        (file == Self::MANIFEST_FILE).then_some(name)
    }
}
