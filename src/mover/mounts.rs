//! Container mount paths when the container runtime runs processes on the host, as the
//! simulated cluster's kubelet does: it passes each container's mount table in
//! [`MOUNTS_ENV`], and the mover resolves its in-pod paths through it. In a real pod the
//! variable is absent and paths are used as they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable that carries a lifeboat container's volume mounts: a JSON object
/// from each in-pod mount path to a [`SimMount`], e.g.
/// `{"/data": {"path": "/tmp/sim/volumes/pvc-1b2c…", "readOnly": false}}`.
pub const MOUNTS_ENV: &str = "LIFEBOAT_SIM_MOUNTS";

/// Where one in-pod mount path lives on the host, as [`MOUNTS_ENV`] carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimMount {
    /// The host directory (with the mount's `subPath` already joined).
    pub path: PathBuf,
    /// Returns true if and only if the mount is read-only. The host directory itself stays
    /// writable (other pods may mount it read-write), so the program must honour this.
    #[serde(rename = "readOnly", default)]
    pub read_only: bool,
}

/// The mounts of one container: in-pod mount path → host directory.
pub type SimMounts = BTreeMap<String, SimMount>;

/// Translates an in-pod path through `mounts`: the longest mount path that is a prefix of
/// `path` (on a component boundary) is replaced by its host directory. Returns the host path
/// and whether the mount is read-only, or None when no mount covers `path`.
pub fn translate(mounts: &SimMounts, path: &Path) -> Option<(PathBuf, bool)> {
    mounts
        .iter()
        .filter_map(|(mount, m)| {
            let rest = path.strip_prefix(mount).ok()?;
            Some((mount.len(), m.path.join(rest), m.read_only))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, p, ro)| (p, ro))
}

/// Why an in-pod path cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The table in [`MOUNTS_ENV`] does not parse.
    #[error("${MOUNTS_ENV} is not a mount table")]
    Table(#[source] serde_json::Error),
    /// No mount covers the path.
    #[error("{0} is not on a volume mounted into this pod")]
    NotMounted(String),
}

/// The host path of `path` and whether its mount is read-only: through [`MOUNTS_ENV`] when the
/// runtime set it, else `path` itself (writable as far as this knows).
pub fn host_path(path: &Path) -> Result<(PathBuf, bool), MountError> {
    let Ok(json) = std::env::var(MOUNTS_ENV) else {
        return Ok((path.to_owned(), false));
    };
    let mounts: SimMounts = serde_json::from_str(&json).map_err(MountError::Table)?;
    translate(&mounts, path).ok_or_else(|| MountError::NotMounted(path.display().to_string()))
}
