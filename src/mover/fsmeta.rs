//! File metadata on the local file system: mtimes (a symlink's own included), modes and owners
//! as the index records them. The restore applies them; the simulator's snapshotter and the
//! demo's reference copy set link mtimes the same way, so they share these helpers instead of
//! reaching into the restore.

use std::fs::{self, File, FileTimes};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::repo::index::{Meta, Mtime};

/// Returns true if and only if this process runs as root (and so can restore owners).
pub(crate) fn running_as_root() -> bool {
    // /proc/self belongs to the process's effective user.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub(crate) fn system_time(m: Mtime) -> SystemTime {
    let Mtime(s, ns) = m;
    if s >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(s as u64, ns)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
            + Duration::from_nanos(u64::from(ns))
    }
}

/// A symlink's own mtime (std has no call that does not follow the link).
pub(crate) fn set_link_mtime(abs: &Path, m: Mtime) -> io::Result<()> {
    set_mtime_nofollow(abs, m.0, m.1)
}

/// Sets the mtime of `path` itself, a symlink included (not its target); the access time is
/// left alone. Shared with the simulator's snapshotter and the demo's reference copy.
pub fn set_mtime_nofollow(path: &Path, secs: i64, nanos: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nanos as libc::c_long,
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs; AT_SYMLINK_NOFOLLOW acts on a link itself.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives a restored file or directory the mtime, owner (if `owners`) and mode of the index.
pub(crate) fn apply_meta(abs: &Path, meta: &Meta, owners: bool) -> io::Result<()> {
    let f = File::open(abs)?;
    f.set_times(FileTimes::new().set_modified(system_time(meta.mtime)))?;
    drop(f);
    if owners {
        std::os::unix::fs::chown(abs, Some(meta.uid), Some(meta.gid))?;
    }
    // After chown, which clears setuid/setgid bits.
    fs::set_permissions(abs, fs::Permissions::from_mode(meta.mode))
}
