//! Bind mounts at fixed paths for one lifeboat process, in a mount namespace of its own: how a
//! container sees its service-account credentials at
//! `/var/run/secrets/kubernetes.io/serviceaccount` while every other path stays the host's.
//! Needs root (CAP_SYS_ADMIN), as a real container runtime does.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;

/// Makes `cmd` run in a new private mount namespace with each `(target, source)` bind-mounted
/// read-only. Creates the targets (empty directories) on the host first, since a bind mount
/// needs its mount point to exist.
pub(super) fn bind_in_own_namespace(
    cmd: &mut std::process::Command,
    mounts: &[(PathBuf, PathBuf)],
) -> io::Result<()> {
    // SAFETY-relevant: everything the child needs is allocated here, before the fork.
    let mut pairs = Vec::with_capacity(mounts.len());
    for (target, source) in mounts {
        std::fs::create_dir_all(target)?;
        let t = CString::new(target.as_os_str().as_bytes())?;
        let s = CString::new(source.as_os_str().as_bytes())?;
        pairs.push((t, s));
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
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            for (target, source) in &pairs {
                if libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
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
            Ok(())
        });
    }
    Ok(())
}
