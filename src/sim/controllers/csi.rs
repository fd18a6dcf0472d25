//! The `disk.csi.sim` CSI driver: a volume is a directory under `<state_dir>/volumes/<pv-name>`,
//! a snapshot is a copy of it under `<state_dir>/snapshots/<content-name>`.
//!
//! Everything here is blocking file-system work; callers run it on `spawn_blocking`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The driver name a StorageClass's `provisioner` and a VolumeSnapshotClass's `driver` must carry.
pub const DRIVER: &str = "disk.csi.sim";

/// Returns the directory backing the volume of PersistentVolume `pv`.
pub fn volume_dir(state_dir: &Path, pv: &str) -> PathBuf {
    state_dir.join("volumes").join(pv)
}

/// Returns the directory holding the copy taken for VolumeSnapshotContent `content`.
pub fn snapshot_dir(state_dir: &Path, content: &str) -> PathBuf {
    state_dir.join("snapshots").join(content)
}

/// Creates the (empty) directory of a new volume, or, given `source`, a volume holding a copy of
/// that directory (a snapshot's copy or a cloned volume). An existing directory is kept as it is,
/// so a provisioning retried after a crash does not lose data.
pub fn create_volume(dir: &Path, source: Option<&Path>) -> io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    match source {
        None => fs::create_dir_all(dir),
        Some(src) => copy_atomically(src, dir),
    }
}

/// Copies a volume's directory into a snapshot directory and returns the bytes copied.
/// An existing snapshot directory is kept (the copy was taken before a crash).
pub fn create_snapshot(volume: &Path, dir: &Path) -> io::Result<u64> {
    if !dir.exists() {
        copy_atomically(volume, dir)?;
    }
    tree_size(dir)
}

/// Removes a volume's or a snapshot's directory; a missing one is not an error.
pub fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Copies into a temporary sibling first, so a crash never leaves a half-copied directory that a
/// retry would then take for a finished one.
fn copy_atomically(src: &Path, dst: &Path) -> io::Result<()> {
    let parent = dst.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.partial"));
    remove(&tmp)?;
    copy_tree(src, &tmp)?;
    fs::rename(&tmp, dst)
}

/// Copies a directory tree keeping file modes, mtimes, symbolic links and hard links, as a
/// block-level CSI snapshot would (owners are not changed: the simulator is unprivileged).
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    copy_dir(src, dst, &mut std::collections::HashMap::new())
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    linked: &mut std::collections::HashMap<(u64, u64), std::path::PathBuf>,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    fs::create_dir(dst)?;
    let meta = fs::metadata(src)?;
    fs::set_permissions(dst, meta.permissions())?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&from, &to, linked)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            set_mtime(&to, &fs::symlink_metadata(&from)?)?;
        } else if kind.is_file() {
            let m = entry.metadata()?;
            if m.nlink() > 1 {
                if let Some(first) = linked.get(&(m.dev(), m.ino())) {
                    fs::hard_link(first, &to)?;
                    continue;
                }
                linked.insert((m.dev(), m.ino()), to.clone());
            }
            // fs::copy keeps the permission bits.
            fs::copy(&from, &to)?;
            set_mtime(&to, &m)?;
        }
        // Sockets, FIFOs and devices are not volume data; a real snapshot of a block device would
        // carry them, but no workload here creates them.
    }
    // Last: creating the entries above changed the directory's mtime.
    set_mtime(dst, &meta)
}

/// Sets `path`'s own mtime (not a symlink's target) to `like`'s.
fn set_mtime(path: &Path, like: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    crate::mover::fsmeta::set_mtime_nofollow(path, like.mtime(), like.mtime_nsec() as u32)
}

/// Returns the total size of the regular files under `dir`.
pub fn tree_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += tree_size(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_then_restore_keeps_bytes_modes_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::tempdir().unwrap();
        let vol = volume_dir(state.path(), "pv-a");
        create_volume(&vol, None).unwrap();
        fs::create_dir(vol.join("sub")).unwrap();
        fs::write(vol.join("sub/data"), b"hello").unwrap();
        fs::set_permissions(vol.join("sub/data"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/data", vol.join("link")).unwrap();

        let snap = snapshot_dir(state.path(), "snapcontent-1");
        assert_eq!(create_snapshot(&vol, &snap).unwrap(), 5);
        // Writes after the snapshot must not reach the copy.
        fs::write(vol.join("sub/data"), b"changed").unwrap();

        let restored = volume_dir(state.path(), "pv-b");
        create_volume(&restored, Some(&snap)).unwrap();
        assert_eq!(fs::read(restored.join("sub/data")).unwrap(), b"hello");
        let mode = fs::metadata(restored.join("sub/data"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            fs::read_link(restored.join("link")).unwrap(),
            Path::new("sub/data")
        );

        remove(&snap).unwrap();
        remove(&snap).unwrap();
        assert!(!snap.exists());
    }
}
