//! A container's volume mounts for one lifeboat process, in a mount namespace of its own: the
//! process sees each volume at its mount path (`/etc/lifeboat`, `/tmp`, the service-account
//! credentials at `/var/run/secrets/kubernetes.io/serviceaccount`) while every other path stays
//! the host's. Used against a real control plane; needs root (CAP_SYS_ADMIN), as a container
//! runtime does. Mount points missing on the host are created there (empty directories or
//! files), since a bind mount needs one.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;

/// One volume mount.
pub(super) struct Bind {
    /// The mount path in the container.
    pub(super) target: PathBuf,
    /// The host directory (or file) behind it.
    pub(super) source: PathBuf,
    /// Returns true if and only if the mount is read-only.
    pub(super) read_only: bool,
}

/// Makes `cmd` run in a new private mount namespace with each bind mounted, in order.
pub(super) fn bind_in_own_namespace(
    cmd: &mut std::process::Command,
    binds: &[Bind],
) -> io::Result<()> {
    // Everything the child needs is allocated here, before the fork.
    let mut prepared = Vec::with_capacity(binds.len());
    for b in binds {
        if b.source.is_dir() {
            std::fs::create_dir_all(&b.target)?;
        } else if !b.target.exists() {
            if let Some(parent) = b.target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(&b.target)?;
        }
        let t = CString::new(b.target.as_os_str().as_bytes())?;
        let s = CString::new(b.source.as_os_str().as_bytes())?;
        prepared.push((t, s, b.read_only));
    }
    let root = CString::new("/")?;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (unshare, mount) on memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Private: nothing mounted here propagates back to the host.
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                private,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            for (target, source, read_only) in &prepared {
                let bind = libc::MS_BIND | libc::MS_REC;
                if libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    bind,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if *read_only {
                    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                    if libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        flags,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    Ok(())
}
