//! A directory as an object store: one file per object, `/` in keys are sub-directories.
//!
//! Write-once is enforced by the file system: an object is written to a temporary file in its
//! final directory, synced, then hard-linked to its name. `link(2)` fails if the name exists, so of
//! two concurrent writers exactly one creates the object and neither overwrites it; a reader never
//! sees a half-written object.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::lease::HolderRecord;
use super::transfer::{blocking, io_err};
use super::{
    Lease, LeaseAttempt, LeaseHolder, ObjectMeta, ObjectRead, ObjectWrite, PutOutcome, Result,
    StorageError, TransferOptions, validate_key, validate_prefix,
};

/// Refuses the file-system root and the home directory as a repository's root, whatever they
/// hold: the first backup would scatter `lifeboat.json` and `backups/` among the system's or the
/// user's own files.
fn refuse_unsuitable(root: &Path, location: &str) -> Result<()> {
    // Compared resolved, so `/srv/..`, `~/.` or a symlink to either cannot slip through; a root
    // that does not exist yet cannot be either of them.
    let Ok(resolved) = fs::canonicalize(root) else {
        return Ok(());
    };
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .and_then(|h| fs::canonicalize(h).ok());
    let what = if resolved.parent().is_none() {
        "the file-system root"
    } else if home.as_deref() == Some(resolved.as_path()) {
        "the home directory"
    } else {
        return Ok(());
    };
    Err(StorageError::Unsuitable {
        location: location.to_owned(),
        what,
        suggestion: resolved.join("lifeboat-backups").display().to_string(),
    })
}

/// Names of in-flight temporary files start with this; listings skip them and keys may not use it.
pub const TEMP_PREFIX: &str = ".lifeboat-tmp.";

/// Objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    location: String,
}

impl LocalBackend {
    /// A backend rooted at `root` (created on first write; a missing root lists as empty).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let location = format!("local:{}", root.display());
        Self { root, location }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        if key
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with(TEMP_PREFIX))
        {
            return Err(StorageError::InvalidKey {
                key: key.to_owned(),
                reason: "reserved temporary-file name",
            });
        }
        Ok(self.root.join(key))
    }

    fn not_found(&self, key: &str) -> StorageError {
        StorageError::NotFound {
            location: self.location.clone(),
            key: key.to_owned(),
        }
    }
}

#[async_trait]
impl ObjectRead for LocalBackend {
    fn location(&self) -> &str {
        &self.location
    }

    /// One `readdir` of the root, not a walk: the root may be a large foreign tree.
    async fn top_entry(&self) -> Result<Option<String>> {
        let root = self.root.clone();
        blocking(move || {
            let entries = match fs::read_dir(&root) {
                Ok(d) => d,
                Err(e) if is_missing(&e) => return Ok(None),
                Err(e) => return Err(io_err("read directory", &root)(e)),
            };
            let mut first: Option<String> = None;
            for e in entries {
                let name = e
                    .map_err(io_err("read directory", &root))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                // Lifeboat's own in-flight files and a doctor's leftover probe are not foreign.
                let ours = name.starts_with(TEMP_PREFIX) || name.starts_with(super::PROBE_PREFIX);
                if !ours && first.as_ref().is_none_or(|f| name < *f) {
                    first = Some(name);
                }
            }
            Ok(first)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path_of(key)?;
        let not_found = self.not_found(key);
        blocking(move || match fs::read(&path) {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if is_missing(&e) => Err(not_found),
            Err(e) => Err(io_err("read object", &path)(e)),
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path_of(key)?;
        let not_found = self.not_found(key);
        let key = key.to_owned();
        blocking(move || {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if is_missing(&e) => return Err(not_found),
                Err(e) => return Err(io_err("open object", &path)(e)),
            };
            let size = f.metadata().map_err(io_err("stat object", &path))?.len();
            if range.start > range.end || range.end > size {
                return Err(StorageError::InvalidRange {
                    key,
                    start: range.start,
                    end: range.end,
                    size,
                });
            }
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            f.seek(SeekFrom::Start(range.start))
                .map_err(io_err("seek object", &path))?;
            f.read_exact(&mut buf)
                .map_err(io_err("read object", &path))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path_of(key)?;
        let key = key.to_owned();
        blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(meta_of(key, &m))),
            // A directory is where keys below it live, not an object.
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(io_err("stat object", &path)(e)),
        })
        .await
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        if let Err(e) = validate_prefix(prefix) {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        // Start in the deepest directory the prefix names entirely; the rest filters its entries.
        let (dir_part, name_part) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let state = ListState {
            root: self.root.clone(),
            pending_dir: Some((dir_part.to_owned(), name_part.to_owned())),
            stack: Vec::new(),
        };
        Box::pin(futures::stream::unfold(state, |mut st| async move {
            let item = st.next().await?;
            Some((item, st))
        }))
    }
}

/// Depth-first walk that holds one sorted directory listing per level, so memory follows the
/// widest directory, not the number of objects.
struct ListState {
    root: PathBuf,
    /// A directory (key prefix ending in `/`, or empty) still to read, and the name prefix its
    /// entries must have.
    pending_dir: Option<(String, String)>,
    /// Per open level: the key prefix of that directory and its remaining entries, reversed.
    stack: Vec<(String, Vec<Entry>)>,
}

struct Entry {
    /// Entry name; directories sort as `name/` so the walk yields keys in byte order.
    sort_name: String,
    dir: bool,
    meta: Option<fs::Metadata>,
}

impl ListState {
    async fn next(&mut self) -> Option<Result<ObjectMeta>> {
        loop {
            if let Some((dir_key, name_prefix)) = self.pending_dir.take() {
                let path = self.root.join(&dir_key);
                match blocking(move || read_sorted(&path, &name_prefix)).await {
                    Ok(entries) => self.stack.push((dir_key, entries)),
                    Err(e) => {
                        // Stop after reporting: a half-walked tree is not a listing.
                        self.stack.clear();
                        return Some(Err(e));
                    }
                }
            }
            let (dir_key, entries) = self.stack.last_mut()?;
            let Some(entry) = entries.pop() else {
                self.stack.pop();
                continue;
            };
            if entry.dir {
                self.pending_dir = Some((format!("{dir_key}{}", entry.sort_name), String::new()));
                continue;
            }
            let key = format!("{dir_key}{}", entry.sort_name);
            let meta = entry.meta.expect("files carry metadata");
            return Some(Ok(meta_of(key, &meta)));
        }
    }
}

/// Reads one directory: regular files and sub-directories whose names start with `name_prefix`,
/// temporary files excluded, in reverse key order (for popping). A missing directory is empty.
fn read_sorted(path: &Path, name_prefix: &str) -> Result<Vec<Entry>> {
    let rd = match fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if is_missing(&e) || e.kind() == io::ErrorKind::NotADirectory => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(io_err("list directory", path)(e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(io_err("list directory", path))?;
        let Ok(name) = ent.file_name().into_string() else {
            tracing::warn!(path = %ent.path().display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if !name.starts_with(name_prefix) || name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let ft = ent
            .file_type()
            .map_err(io_err("stat directory entry", &ent.path()))?;
        if ft.is_dir() {
            out.push(Entry {
                sort_name: format!("{name}/"),
                dir: true,
                meta: None,
            });
        } else if ft.is_file() {
            match ent.metadata() {
                Ok(m) => out.push(Entry {
                    sort_name: name,
                    dir: false,
                    meta: Some(m),
                }),
                // Deleted between readdir and stat: it is simply not there.
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(io_err("stat object", &ent.path())(e)),
            }
        }
    }
    out.sort_unstable_by(|a, b| b.sort_name.cmp(&a.sort_name));
    Ok(out)
}

#[async_trait]
impl ObjectWrite for LocalBackend {
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome> {
        let path = self.path_of(key)?;
        blocking(move || {
            create_no_clobber(&path, |tmp, f| {
                f.write_all(&data).map_err(io_err("write object", tmp))
            })
        })
        .await
    }

    async fn put_file_if_absent(
        &self,
        key: &str,
        src: &Path,
        _opts: &TransferOptions,
    ) -> Result<PutOutcome> {
        let path = self.path_of(key)?;
        let src = src.to_path_buf();
        blocking(move || {
            let mut input = File::open(&src).map_err(io_err("open upload source", &src))?;
            create_no_clobber(&path, |tmp, f| {
                io::copy(&mut input, f)
                    .map(drop)
                    .map_err(io_err("write object", tmp))
            })
        })
        .await
    }

    async fn create_location(&self) -> Result<bool> {
        let root = self.root.clone();
        let location = self.location.clone();
        blocking(move || {
            refuse_unsuitable(&root, &location)?;
            let existed = root.is_dir();
            fs::create_dir_all(&root).map_err(io_err("create directory", &root))?;
            Ok(!existed)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(io_err("delete object", &path)(e)),
        })
        .await
    }

    /// An exclusive `flock(2)` on the file `key`. The kernel frees it when the holder's process
    /// exits or is killed, so a crashed pruner never blocks the next one and no clock is
    /// involved; a live but hung holder keeps it, which is the safe side. `ttl` does not apply.
    /// The file is never deleted (deleting a lock file races with a process that has opened it
    /// but not locked it yet); its content only describes the current holder.
    async fn try_lease(&self, key: &str, _ttl: Duration, holder: &str) -> Result<LeaseAttempt> {
        let path = self.path_of(key)?;
        let holder = holder.to_owned();
        let location = self.location.clone();
        let key = key.to_owned();
        blocking(move || {
            let dir = path.parent().expect("object paths have a parent");
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err("open lock file", &path))?;
            // SAFETY: flock on a descriptor this function owns; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Ok(LeaseAttempt::Held(read_holder(&path)));
                }
                return Err(io_err("lock", &path)(e));
            }
            let record = HolderRecord {
                holder,
                since: jiff::Timestamp::now(),
                expires_at: None,
            };
            let body = serde_json::to_vec(&record).expect("holder record serializes");
            file.set_len(0).map_err(io_err("write lock file", &path))?;
            file.write_all_at(&body, 0)
                .map_err(io_err("write lock file", &path))?;
            Ok(LeaseAttempt::Acquired(Box::new(FileLease {
                file: std::sync::Mutex::new(Some(file)),
                path,
                location,
                key,
            })))
        })
        .await
    }
}

/// Reads who holds a lock file; an unreadable or half-written record is "unknown holder".
fn read_holder(path: &Path) -> LeaseHolder {
    let record = fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<HolderRecord>(&b).ok());
    LeaseHolder {
        holder: record.as_ref().map(|r| r.holder.clone()),
        since: record.map(|r| r.since),
        expires_at: None,
        until_exit: true,
    }
}

/// A `flock` held on an open lock file; closing the file releases it.
#[derive(Debug)]
struct FileLease {
    file: std::sync::Mutex<Option<File>>,
    path: PathBuf,
    location: String,
    key: String,
}

#[async_trait]
impl Lease for FileLease {
    fn ttl(&self) -> Option<Duration> {
        None
    }

    /// Nothing to extend, but checks the lock still guards the file of that name: if someone
    /// deleted or replaced it, another process can lock the new file, and this one must stop.
    async fn renew(&self) -> Result<()> {
        let ours = {
            let f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            match f.as_ref() {
                Some(f) => f.metadata().map_err(io_err("stat lock file", &self.path))?,
                None => {
                    return Err(StorageError::LeaseLost {
                        location: self.location.clone(),
                        key: self.key.clone(),
                        reason: "already released".into(),
                    });
                }
            }
        };
        let path = self.path.clone();
        let now =
            blocking(move || fs::metadata(&path).map_err(io_err("stat lock file", &path))).await;
        match now {
            Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => Ok(()),
            _ => Err(StorageError::LeaseLost {
                location: self.location.clone(),
                key: self.key.clone(),
                reason: "the lock file was deleted or replaced".into(),
            }),
        }
    }

    async fn release(&self) -> Result<()> {
        // Closing the descriptor drops the flock.
        drop(self.file.lock().unwrap_or_else(|p| p.into_inner()).take());
        Ok(())
    }
}

/// Writes a temporary file next to `path` with `fill`, syncs it, and links it to `path` unless
/// something already has that name.
fn create_no_clobber(
    path: &Path,
    fill: impl FnOnce(&Path, &mut File) -> Result<()>,
) -> Result<PutOutcome> {
    let dir = path.parent().expect("object paths have a parent");
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let tmp = dir.join(temp_name());
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err("create temporary file", &tmp))?;
    let written =
        fill(&tmp, &mut f).and_then(|()| f.sync_all().map_err(io_err("sync object", &tmp)));
    drop(f);
    let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(PutOutcome::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if path.is_dir() {
                Err(io_err("create object (a directory has its name)", path)(e))
            } else {
                Ok(PutOutcome::AlreadyExists)
            }
        }
        Err(e) => Err(io_err("link object", path)(e)),
    });
    if let Err(e) = fs::remove_file(&tmp) {
        tracing::warn!(path = %tmp.display(), error = %e, "could not remove a temporary file");
    }
    if matches!(linked, Ok(PutOutcome::Created)) {
        // The new name must survive a crash too, not only the data.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync directory", dir))?;
    }
    linked
}

fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{TEMP_PREFIX}{}.{n}.{nanos}", std::process::id())
}

fn meta_of(key: String, m: &fs::Metadata) -> ObjectMeta {
    let last_modified = m
        .modified()
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok());
    ObjectMeta {
        key,
        size: m.len(),
        last_modified,
    }
}

fn is_missing(e: &io::Error) -> bool {
    // ENOTDIR: a path component is a file, so the object cannot exist either.
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn list_yields_byte_order_across_directories() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        for k in ["a/b", "a-c", "a0", "ab/x/y", "z"] {
            assert_eq!(
                b.put_if_absent(k, Bytes::from_static(b"x")).await.unwrap(),
                PutOutcome::Created
            );
        }
        let keys: Vec<String> = b.list("").map_ok(|m| m.key).try_collect().await.unwrap();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 5);
        let keys: Vec<String> = b.list("a").map_ok(|m| m.key).try_collect().await.unwrap();
        assert_eq!(keys, ["a-c", "a/b", "a0", "ab/x/y"]);
        let keys: Vec<String> = b
            .list("ab/x/")
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(keys, ["ab/x/y"]);
    }

    #[tokio::test]
    async fn temporary_files_are_invisible_and_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        fs::write(dir.path().join(format!("{TEMP_PREFIX}leftover")), b"x").unwrap();
        b.put_if_absent("k", Bytes::from_static(b"v"))
            .await
            .unwrap();
        let keys: Vec<String> = b.list("").map_ok(|m| m.key).try_collect().await.unwrap();
        assert_eq!(keys, ["k"]);
        let err = b
            .put_if_absent(&format!("d/{TEMP_PREFIX}x"), Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidKey { .. }), "{err:?}");
    }
}
