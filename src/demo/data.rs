//! The demo's volume data: the deterministic dataset the mover's tests use (many small files, a
//! large file, a database-like file of 8 KiB pages, a sparse file, symlinks, a hard link, an
//! empty directory, a 0600 file), an exact copy of a volume (what "the data of backup N" is),
//! and a byte-for-byte comparison of two trees.

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

// One generator for the mover's tests, its benchmark and the demo, so the demo's data has every
// shape the mover is tested with. It is shared by `include!` because it is not library API.
mod generator {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/volume/dataset.rs"
    ));
}
use generator::dataset;

/// The demo's dataset: about 24 MiB, so the drill stays quick on a small machine.
fn spec() -> dataset::Spec {
    dataset::Spec {
        seed: 2026,
        small_files: 400,
        small_max: 16 * 1024,
        large_bytes: 10 << 20,
        db_pages: 1024,
        sparse_bytes: 4 << 20,
    }
}

/// Writes the dataset into `root` (an empty directory: a freshly provisioned volume).
pub fn generate(root: &Path) -> io::Result<()> {
    dataset::generate(root, &spec())
}

/// The application's writes after the first backup: 10% of the database pages and of the small
/// files rewritten, and a new file. Returns the bytes written.
pub fn write_more(root: &Path) -> io::Result<u64> {
    let s = spec();
    let mut n = dataset::touch_db_pages(root, s.db_pages, 10, s.seed + 1)?;
    n += dataset::touch_small_files(root, s.small_files, 10, s.seed + 2)?;
    let log = b"order 1001 paid\norder 1002 shipped\n";
    fs::write(root.join("data/orders-after-backup-1.log"), log)?;
    Ok(n + log.len() as u64)
}

/// Sizes of a tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeStats {
    /// Regular files (each hard link counted once).
    pub files: u64,
    /// Directories, symlinks and other entries.
    pub other_entries: u64,
    /// Bytes of regular files (each hard-linked file counted once).
    pub bytes: u64,
}

/// Counts the entries and bytes under `root`.
pub fn stats(root: &Path) -> io::Result<TreeStats> {
    let mut s = TreeStats::default();
    let mut seen = std::collections::HashSet::new();
    for (_, e) in walk(root)? {
        match e.kind {
            Kind::File { len } => {
                if e.nlink < 2 || seen.insert(e.ino) {
                    s.files += 1;
                    s.bytes += len;
                }
            }
            _ => s.other_entries += 1,
        }
    }
    Ok(s)
}

/// Copies `src` to `dst` (which must not exist) keeping what a backup must keep: content,
/// modes, mtimes (files, directories and symlinks), symlink targets and hard links.
pub fn copy_exact(src: &Path, dst: &Path) -> io::Result<()> {
    let mut links = BTreeMap::new();
    copy_dir(src, dst, &mut links)
}

fn copy_dir(src: &Path, dst: &Path, links: &mut BTreeMap<(u64, u64), PathBuf>) -> io::Result<()> {
    fs::create_dir(dst)?;
    let mut names: Vec<_> = fs::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let (from, to) = (src.join(&name), dst.join(&name));
        let m = fs::symlink_metadata(&from)?;
        let kind = m.file_type();
        if kind.is_dir() {
            copy_dir(&from, &to, links)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            set_link_mtime(&to, &m)?;
        } else if kind.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    fs::hard_link(first, &to)?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), to.clone());
            }
            fs::copy(&from, &to)?;
            fs::set_permissions(&to, m.permissions())?;
            File::open(&to)?.set_times(FileTimes::new().set_modified(mtime(&m)))?;
        }
        // Sockets, FIFOs and devices are not in the dataset.
    }
    // Last, so creating the entries above does not bump it afterwards.
    let m = fs::symlink_metadata(src)?;
    fs::set_permissions(dst, m.permissions())?;
    File::open(dst)?.set_times(FileTimes::new().set_modified(mtime(&m)))
}

fn mtime(m: &fs::Metadata) -> SystemTime {
    let (s, ns) = (m.mtime(), m.mtime_nsec());
    if s >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(s as u64, ns as u32)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
            + Duration::from_nanos(ns as u64)
    }
}

/// A symlink's own mtime: std has no call that does not follow the link.
fn set_link_mtime(path: &Path, m: &fs::Metadata) -> io::Result<()> {
    crate::mover::fsmeta::set_mtime_nofollow(path, m.mtime(), m.mtime_nsec() as u32)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File { len: u64 },
    Dir,
    Symlink(PathBuf),
    Other,
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    mode: u32,
    mtime: (i64, i64),
    nlink: u64,
    ino: (u64, u64),
}

/// Every entry under `root` (not `root` itself), by path relative to it.
fn walk(root: &Path) -> io::Result<BTreeMap<PathBuf, Entry>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in fs::read_dir(root.join(&rel))? {
            let e = e?;
            let rel = rel.join(e.file_name());
            let m = fs::symlink_metadata(e.path())?;
            let t = m.file_type();
            let kind = if t.is_dir() {
                todo.push(rel.clone());
                Kind::Dir
            } else if t.is_symlink() {
                Kind::Symlink(fs::read_link(e.path())?)
            } else if t.is_file() {
                Kind::File { len: m.len() }
            } else {
                Kind::Other
            };
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: m.permissions().mode() & 0o7777,
                    mtime: (m.mtime(), m.mtime_nsec()),
                    nlink: m.nlink(),
                    ino: (m.dev(), m.ino()),
                },
            );
        }
    }
    Ok(out)
}

/// What a comparison found.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// Entries compared (present on both sides).
    pub entries: usize,
    /// File bytes compared.
    pub bytes: u64,
    /// Differences, at most [`MAX_DIFFERENCES`], each naming the path and what differs.
    pub differences: Vec<String>,
    /// Differences in all (may exceed the ones listed).
    pub difference_count: usize,
}

/// The most differences a comparison lists.
pub const MAX_DIFFERENCES: usize = 12;

impl Comparison {
    fn differ(&mut self, what: String) {
        self.difference_count += 1;
        if self.differences.len() < MAX_DIFFERENCES {
            self.differences.push(what);
        }
    }

    /// Returns true if and only if the trees are identical.
    pub fn identical(&self) -> bool {
        self.difference_count == 0
    }
}

/// Compares tree `actual` with tree `expected`: the same entries, of the same kinds, with the
/// same bytes, modes, mtimes (nanoseconds), symlink targets and hard-link groups.
///
/// The two roots themselves are not compared: a volume's root belongs to the CSI driver and
/// the mount (fsGroup), not to the data.
pub fn compare(expected: &Path, actual: &Path) -> io::Result<Comparison> {
    let (want, got) = (walk(expected)?, walk(actual)?);
    let mut c = Comparison::default();
    for (path, w) in &want {
        let p = path.display();
        let Some(g) = got.get(path) else {
            c.differ(format!("{p}: missing"));
            continue;
        };
        c.entries += 1;
        match (&w.kind, &g.kind) {
            (Kind::File { len: a }, Kind::File { len: b }) => {
                if a != b {
                    c.differ(format!("{p}: {b} bytes instead of {a}"));
                } else if let Some(at) = first_difference(&expected.join(path), &actual.join(path))?
                {
                    c.differ(format!("{p}: content differs at byte {at}"));
                }
                c.bytes += a;
            }
            (Kind::Symlink(a), Kind::Symlink(b)) if a != b => c.differ(format!(
                "{p}: symlink to {} instead of {}",
                b.display(),
                a.display()
            )),
            (a, b) if std::mem::discriminant(a) != std::mem::discriminant(b) => {
                c.differ(format!("{p}: {} instead of {}", kind_name(b), kind_name(a)));
                continue;
            }
            _ => {}
        }
        // Symlink modes are meaningless on Linux (always 0777).
        if w.mode != g.mode && !matches!(w.kind, Kind::Symlink(_)) {
            c.differ(format!("{p}: mode {:o} instead of {:o}", g.mode, w.mode));
        }
        if w.mtime != g.mtime {
            c.differ(format!(
                "{p}: mtime {}.{:09} instead of {}.{:09}",
                g.mtime.0, g.mtime.1, w.mtime.0, w.mtime.1
            ));
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        c.differ(format!("{}: not in the backup's data", path.display()));
    }
    let (a, b) = (link_groups(&want), link_groups(&got));
    for (path, group) in &a {
        if b.get(path) != Some(group) {
            c.differ(format!(
                "{}: not hard-linked with {}",
                path.display(),
                group
                    .iter()
                    .filter(|q| q != &path)
                    .map(|q| q.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        c.differ(format!(
            "{}: hard-linked, but not in the backup's data",
            path.display()
        ));
    }
    Ok(c)
}

fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::File { .. } => "a file",
        Kind::Dir => "a directory",
        Kind::Symlink(_) => "a symlink",
        Kind::Other => "a special file",
    }
}

/// For each regular file with other names, the sorted set of all its names.
fn link_groups(tree: &BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, Vec<PathBuf>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for (p, e) in tree {
        if matches!(e.kind, Kind::File { .. }) && e.nlink > 1 {
            by_inode.entry(e.ino).or_default().push(p.clone());
        }
    }
    let mut out = BTreeMap::new();
    for group in by_inode.into_values().filter(|g| g.len() > 1) {
        for p in &group {
            out.insert(p.clone(), group.clone());
        }
    }
    out
}

/// The offset of the first differing byte of two files of equal length, if any.
fn first_difference(a: &Path, b: &Path) -> io::Result<Option<u64>> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if let Some(i) = ba[..n.min(m)]
            .iter()
            .zip(&bb[..n.min(m)])
            .position(|(x, y)| x != y)
        {
            return Ok(Some(offset + i as u64));
        }
        if n != m {
            return Ok(Some(offset + n.min(m) as u64));
        }
        if n == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("lifeboat-demo-data-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn an_exact_copy_compares_identical_and_changes_are_found() {
        let (src, dst) = (tmp("src"), tmp("dst"));
        fs::create_dir(&src).unwrap();
        dataset::generate(&src, &dataset::Spec::small()).unwrap();
        copy_exact(&src, &dst).unwrap();
        let c = compare(&src, &dst).unwrap();
        assert!(c.identical(), "{:?}", c.differences);
        assert!(c.entries > 100 && c.bytes > 1 << 20, "{c:?}");
        let s = stats(&dst).unwrap();
        assert_eq!(s, stats(&src).unwrap());

        // A rewritten page, a lost hard link, a changed mode and a stray file are all found.
        dataset::touch_db_pages(&dst, dataset::Spec::small().db_pages, 1, 5).unwrap();
        fs::remove_file(dst.join("large.hardlink")).unwrap();
        fs::copy(dst.join("data/large.bin"), dst.join("large.hardlink")).unwrap();
        fs::set_permissions(
            dst.join("data/secret.key"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        fs::write(dst.join("stray"), b"x").unwrap();
        let c = compare(&src, &dst).unwrap();
        let all = c.differences.join("\n");
        for want in [
            "data/db.pages: content differs",
            "hard-linked",
            "data/secret.key: mode 644",
            "stray: not in",
        ] {
            assert!(all.contains(want), "{want} not in\n{all}");
        }
        fs::remove_dir_all(&src).unwrap();
        fs::remove_dir_all(&dst).unwrap();
    }
}
