//! Benchmark of the volume mover (issue 6) on a generated dataset (~2 GB by default) against a
//! `local` location, warm cache, all in one run on this machine:
//! - full backup MB/s, incremental after rewriting ~1 % of the database pages and ~1 % of the
//!   small files (wall time, repository bytes added), restore MB/s, peak RSS of each phase;
//! - every phase runs as a child process (lifeboat re-executes this binary with `--child`), so
//!   each peak RSS and CPU time is that phase's own;
//! - the same for restic 0.14 (`--compression auto`, repo v2) and borg 1.2 (`zstd,3`) when they
//!   are on PATH (Debian `restic`, `borgbackup`), each run as a child process with its peak RSS
//!   polled from its `VmHWM`;
//! - `--sweep`: the chunk-size sweep behind the parameters in `lifeboat.json` (new bytes after
//!   1 % random 8 KiB page rewrites, chunks per TB).
//!
//! - `lb+age`: lifeboat again into an encrypted repository (issue 17: keyed chunk ids, packs
//!   and indexes sealed with age; restore decrypting ranges), in the same run, with the ratio to
//!   the unencrypted row;
//!
//! Run: `cargo bench --bench mover` (`LIFEBOAT_BENCH_GB=0.5` for a quicker run,
//! `LIFEBOAT_BENCH_DIR` to place the data elsewhere than the system temp dir,
//! `LIFEBOAT_BENCH_KEEP=1` to keep it afterwards).
// A panic is how a test or benchmark fails: unwrapping is its error handling.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use lifeboat::mover::{
    BackupOptions, ChunkId, ChunkerConfig, KnownChunks, ParentIndex, RestoreOptions, backup_volume,
    restore_index_file,
};
use lifeboat::repo::RepoConfig;
use lifeboat::repo::crypto::{ReaderKey, WriterKey};
use lifeboat::repo::index::VolumeIndex;
use lifeboat::storage::Writer;
use lifeboat::storage::local::LocalBackend;

include!("../fixtures/volume/dataset.rs");
use dataset::{Rng, Spec};

const MB: f64 = 1e6;

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// Runs a child to completion; returns (seconds, peak RSS MiB). The peak is polled from the
/// child's own `VmHWM`: `wait4`'s `ru_maxrss` would include this process's peak, which a child
/// inherits at fork.
fn run_child(cmd: &mut Command) -> (f64, f64) {
    let t = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0.0f64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_path)
            && let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        {
            peak = peak.max(kb / 1024.0);
        }
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(status.success(), "{cmd:?} failed: {status}");
    (t.elapsed().as_secs_f64(), peak)
}

fn on_path(tool: &str, version_arg: &str) -> bool {
    Command::new(tool)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One tool's figures.
#[derive(Default)]
struct Row {
    tool: &'static str,
    full: Run,
    repo_full: u64,
    incr: Run,
    incr_added: u64,
    restore: Run,
}

/// Wall seconds, CPU seconds, peak RSS (MiB) of one child process.
#[derive(Default, Clone, Copy)]
struct Run {
    wall: f64,
    cpu: f64,
    rss: f64,
}

/// CPU seconds used by reaped children so far.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage fills a plain struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn measure(cmd: &mut Command) -> Run {
    let c0 = children_cpu_s();
    let (wall, rss) = run_child(cmd);
    Run {
        wall,
        cpu: children_cpu_s() - c0,
        rss,
    }
}

fn print_rows(data_bytes: u64, rows: &[Row]) {
    println!(
        "\n{:<9} {:>9} {:>7} {:>7} {:>8} | {:>6} {:>7} {:>8} {:>7} | {:>9} {:>7} {:>7}",
        "tool",
        "full MB/s",
        "CPU s",
        "RSS MiB",
        "repo MB",
        "incr s",
        "CPU s",
        "added MB",
        "RSS MiB",
        "rest MB/s",
        "CPU s",
        "RSS MiB"
    );
    for r in rows {
        println!(
            "{:<9} {:>9.0} {:>7.2} {:>7.0} {:>8.1} | {:>6.2} {:>7.2} {:>8.1} {:>7.0} | {:>9.0} {:>7.2} {:>7.0}",
            r.tool,
            data_bytes as f64 / MB / r.full.wall,
            r.full.cpu,
            r.full.rss,
            r.repo_full as f64 / MB,
            r.incr.wall,
            r.incr.cpu,
            r.incr_added as f64 / MB,
            r.incr.rss,
            data_bytes as f64 / MB / r.restore.wall,
            r.restore.cpu,
            r.restore.rss,
        );
    }
}

/// `--child backup SRC REPO PARENT|- OUT` or `--child restore REPO INDEX DST`: one lifeboat phase
/// in its own process, so its peak RSS is its own. Stats go to `OUT.stats.json` / `DST.stats.json`.
fn child(args: &[String]) {
    // As `lifeboat mover` does; LIFEBOAT_BENCH_ARENAS=default measures glibc's default instead.
    if std::env::var("LIFEBOAT_BENCH_ARENAS").as_deref() != Ok("default") {
        lifeboat::mover::limit_malloc_arenas();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args[0].as_str() {
        "backup" => {
            let (src, repo, parent, out) = (&args[1], &args[2], &args[3], &args[4]);
            let store = Writer::new(Arc::new(LocalBackend::new(repo)));
            let mut opts = BackupOptions::for_repo(&RepoConfig::new_default());
            if let Some(dir) = std::env::var_os("LIFEBOAT_BENCH_KEYS") {
                let text = std::fs::read_to_string(Path::new(&dir).join("writer")).unwrap();
                opts.seal = Some(WriterKey::parse(&text, "bench writer key").unwrap());
            }
            if let Ok(sizes) = std::env::var("LIFEBOAT_BENCH_CHUNKER") {
                let n: Vec<u32> = sizes.split(',').map(|v| v.parse().unwrap()).collect();
                (
                    opts.chunker.min_size,
                    opts.chunker.avg_size,
                    opts.chunker.max_size,
                ) = (n[0], n[1], n[2]);
            }
            if let Some(level) = std::env::var("LIFEBOAT_BENCH_ZSTD")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                opts.zstd_level = Some(level);
            }
            let parent = (parent != "-").then(|| ParentIndex::from_file(parent));
            let done = rt
                .block_on(backup_volume(
                    PathBuf::from(src),
                    store,
                    opts,
                    parent,
                    KnownChunks::new(),
                ))
                .unwrap();
            std::fs::copy(&done.index.path, out).unwrap();
            let stats = serde_json::to_vec(&done.stats).unwrap();
            std::fs::write(format!("{out}.stats.json"), stats).unwrap();
        }
        "restore" => {
            let (repo, index, dst) = (&args[1], &args[2], &args[3]);
            let store = Writer::new(Arc::new(LocalBackend::new(repo)));
            let identity = std::env::var_os("LIFEBOAT_BENCH_KEYS").map(|dir| {
                let text = std::fs::read_to_string(Path::new(&dir).join("identity")).unwrap();
                ReaderKey::parse(&text, "bench identity").unwrap()
            });
            // An encrypted run's index is kept in clear by the bench (the mover's own index
            // file), as the restore Job has it after decrypting the stored one.
            let done = rt
                .block_on(restore_index_file(
                    store.reader(),
                    PathBuf::from(index),
                    PathBuf::from(dst),
                    RestoreOptions {
                        identity,
                        ..RestoreOptions::default()
                    },
                ))
                .unwrap();
            let stats = serde_json::to_vec(&done).unwrap();
            std::fs::write(format!("{dst}.stats.json"), stats).unwrap();
        }
        other => panic!("unknown child phase {other}"),
    }
}

fn stats(path: &Path) -> serde_json::Value {
    let mut p = path.as_os_str().to_owned();
    p.push(".stats.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn sweep() {
    let pages = 32768; // 256 MiB of database pages
    let mut rng = Rng::new(42);
    let mut db: Vec<u8> = Vec::with_capacity(pages * dataset::PAGE);
    for n in 0..pages {
        db.extend(dataset::page(&mut rng, n as u64));
    }
    let mut changed = db.clone();
    let n = pages / 100;
    for _ in 0..n {
        let p = rng.below(pages as u64);
        let new = dataset::page(&mut rng, p);
        changed[p as usize * dataset::PAGE..][..dataset::PAGE].copy_from_slice(&new);
    }
    println!(
        "chunk-size sweep: 256 MiB of 8 KiB pages, {n} random pages rewritten ({:.1} MB)",
        (n * dataset::PAGE) as f64 / MB
    );
    for (min, avg, max) in [
        (4 << 10, 16 << 10, 64 << 10),
        (8 << 10, 32 << 10, 128 << 10),
        (16 << 10, 64 << 10, 256 << 10),
        (32 << 10, 128 << 10, 512 << 10),
        (256 << 10, 1 << 20, 4 << 20),
    ] {
        let cfg = ChunkerConfig { min, avg, max };
        let before: HashSet<ChunkId> = cfg.cut_slice(&db).map(ChunkId::of).collect();
        let mut count = 0usize;
        let new: usize = cfg
            .cut_slice(&changed)
            .inspect(|_| count += 1)
            .filter(|c| !before.contains(&ChunkId::of(c)))
            .map(<[u8]>::len)
            .sum();
        let mean = db.len() / count;
        println!(
            "  {:>4}K/{:>4}K/{:>4}K: mean chunk {:>6} B, new {:>6.1} MB ({:>4.1}x the change), {:>5.1} M chunks per TB",
            min >> 10,
            avg >> 10,
            max >> 10,
            mean,
            new as f64 / MB,
            new as f64 / (n * dataset::PAGE) as f64,
            (1u64 << 40) as f64 / mean as f64 / 1e6
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    if args.iter().any(|a| a == "--sweep") {
        sweep();
        return;
    }
    if args.iter().any(|a| a == "--scale") {
        scale();
        return;
    }
    let gb: f64 = std::env::var("LIFEBOAT_BENCH_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let base =
        std::env::var_os("LIFEBOAT_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let work = tempfile::Builder::new()
        .prefix("lifeboat-mover-bench")
        .tempdir_in(base)
        .unwrap();
    let w = |name: &str| work.path().join(name);
    let src = w("src");
    std::fs::create_dir(&src).unwrap();
    let scale = gb / 2.0;
    let spec = Spec {
        seed: 2026,
        small_files: (20_000.0 * scale) as usize,
        small_max: 16 << 10,
        large_bytes: (640e6 * scale) as usize,
        db_pages: (1.0e9 * scale / dataset::PAGE as f64) as usize,
        sparse_bytes: 256 << 20,
    };
    dataset::generate(&src, &spec).unwrap();
    let _ = Command::new("sync").status();

    let me = std::env::current_exe().unwrap();
    let lifeboat = |args: &[&Path]| {
        let mut c = Command::new(&me);
        c.arg("--child").args(args);
        c
    };
    let restic = on_path("restic", "version");
    let borg = on_path("borg", "--version");
    let restic_cmd = |args: &[&str]| {
        let mut c = Command::new("restic");
        c.env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", w("restic-cache"))
            .arg("-r")
            .arg(w("restic-repo"))
            .args(args);
        c
    };
    let borg_cmd = |args: &[&str]| {
        let mut c = Command::new("borg");
        c.env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_BASE_DIR", w("borg-base"))
            .args(args);
        c
    };
    let src_s = src.to_str().unwrap().to_owned();
    let borg_repo = w("borg-repo").to_str().unwrap().to_owned();
    let (repo, idx_full, idx_incr) = (w("lifeboat-repo"), w("full.json"), w("incr.json"));
    let none = Path::new("-");
    let (repo_enc, idx_full_enc, idx_incr_enc) = (
        w("lifeboat-enc-repo"),
        w("full-enc.json"),
        w("incr-enc.json"),
    );
    std::fs::create_dir(w("keys")).unwrap();
    let (identity, writer) = lifeboat::repo::crypto::generate().unwrap();
    std::fs::write(w("keys/identity"), identity.to_text()).unwrap();
    std::fs::write(w("keys/writer"), writer.to_text()).unwrap();
    let lifeboat_enc = |args: &[&Path]| {
        let mut c = lifeboat(args);
        c.env("LIFEBOAT_BENCH_KEYS", w("keys"));
        c
    };

    let mut rows = vec![Row {
        tool: "lifeboat",
        ..Row::default()
    }];
    // Full backups, every tool on the same unchanged data.
    rows[0].full = measure(&mut lifeboat(&[
        Path::new("backup"),
        &src,
        &repo,
        none,
        &idx_full,
    ]));
    rows[0].repo_full = dir_bytes(&repo);
    let full = stats(&idx_full);
    let data_bytes = full["bytesRead"].as_u64().unwrap();
    let packs = full["packsWritten"].as_array().unwrap().len();
    let config = RepoConfig::new_default().chunker;
    println!(
        "dataset: {:.0} MB of file data in {} files; chunker {}/{}/{}; {} chunks in {} packs ({:.1} per GB stored); index {:.1} MB",
        data_bytes as f64 / MB,
        full["files"],
        config.min_size,
        config.avg_size,
        config.max_size,
        full["newChunks"],
        packs,
        packs as f64 / (rows[0].repo_full as f64 / 1e9),
        std::fs::metadata(&idx_full).unwrap().len() as f64 / MB,
    );
    // The same, encrypted, right after (same warm cache).
    let mut enc = Row {
        tool: "lb+age",
        ..Row::default()
    };
    enc.full = measure(&mut lifeboat_enc(&[
        Path::new("backup"),
        &src,
        &repo_enc,
        none,
        &idx_full_enc,
    ]));
    enc.repo_full = dir_bytes(&repo_enc);
    rows.push(enc);
    if restic {
        run_child(&mut restic_cmd(&["init", "--repository-version", "2"]));
        let mut row = Row {
            tool: "restic",
            ..Row::default()
        };
        row.full = measure(&mut restic_cmd(&[
            "backup",
            "--compression",
            "auto",
            &src_s,
        ]));
        row.repo_full = dir_bytes(&w("restic-repo"));
        rows.push(row);
    }
    if borg {
        run_child(&mut borg_cmd(&["init", "-e", "none", &borg_repo]));
        let mut row = Row {
            tool: "borg",
            ..Row::default()
        };
        let archive = format!("{borg_repo}::full");
        row.full = measure(&mut borg_cmd(&[
            "create",
            "--compression",
            "zstd,3",
            &archive,
            &src_s,
        ]));
        row.repo_full = dir_bytes(&w("borg-repo"));
        rows.push(row);
    }

    let changed_pages = dataset::touch_db_pages(&src, spec.db_pages, 1, 99).unwrap();
    let changed_small = dataset::touch_small_files(&src, spec.small_files, 1, 98).unwrap();
    println!(
        "change: {:.1} MB of database pages, {:.1} MB of small files",
        changed_pages as f64 / MB,
        changed_small as f64 / MB
    );
    let _ = Command::new("sync").status();

    for row in &mut rows {
        let (run, repo_dir) = match row.tool {
            "lifeboat" => (
                measure(&mut lifeboat(&[
                    Path::new("backup"),
                    &src,
                    &repo,
                    &idx_full,
                    &idx_incr,
                ])),
                repo.clone(),
            ),
            "lb+age" => (
                measure(&mut lifeboat_enc(&[
                    Path::new("backup"),
                    &src,
                    &repo_enc,
                    &idx_full_enc,
                    &idx_incr_enc,
                ])),
                repo_enc.clone(),
            ),
            "restic" => (
                measure(&mut restic_cmd(&[
                    "backup",
                    "--compression",
                    "auto",
                    &src_s,
                ])),
                w("restic-repo"),
            ),
            _ => (
                measure(&mut borg_cmd(&[
                    "create",
                    "--compression",
                    "zstd,3",
                    &format!("{borg_repo}::incr"),
                    &src_s,
                ])),
                w("borg-repo"),
            ),
        };
        row.incr = run;
        row.incr_added = dir_bytes(&repo_dir) - row.repo_full;
    }
    let incr = stats(&idx_incr);
    println!(
        "lifeboat incremental: read {:.1} MB, new {:.1} MB plaintext / {:.1} MB stored, {} files unchanged",
        incr["bytesRead"].as_u64().unwrap() as f64 / MB,
        incr["newBytes"].as_u64().unwrap() as f64 / MB,
        incr["newStoredBytes"].as_u64().unwrap() as f64 / MB,
        incr["filesUnchanged"]
    );

    for row in &mut rows {
        let dst = w(&format!("restore-{}", row.tool));
        row.restore = match row.tool {
            "lifeboat" => {
                std::fs::create_dir(&dst).unwrap();
                measure(&mut lifeboat(&[
                    Path::new("restore"),
                    &repo,
                    &idx_incr,
                    &dst,
                ]))
            }
            "lb+age" => {
                std::fs::create_dir(&dst).unwrap();
                measure(&mut lifeboat_enc(&[
                    Path::new("restore"),
                    &repo_enc,
                    &idx_incr_enc,
                    &dst,
                ]))
            }
            "restic" => measure(&mut restic_cmd(&[
                "restore",
                "latest",
                "--target",
                dst.to_str().unwrap(),
            ])),
            _ => {
                std::fs::create_dir(&dst).unwrap();
                measure(borg_cmd(&["extract", &format!("{borg_repo}::incr")]).current_dir(&dst))
            }
        };
    }
    let r = stats(&w("restore-lifeboat"));
    println!(
        "lifeboat restore: {:.0} MB written with {} ranged reads",
        r["bytesWritten"].as_u64().unwrap() as f64 / MB,
        r["reads"]
    );
    print_rows(data_bytes, &rows);
    let (plain, sealed) = (&rows[0], &rows[1]);
    println!(
        "\nencryption, single runs above (lb+age vs lifeboat): full backup {:.0} %, incremental {:.0} %, restore {:.0} % of the unencrypted throughput; repository {:+.1} %",
        100.0 * plain.full.wall / sealed.full.wall,
        100.0 * plain.incr.wall / sealed.incr.wall,
        100.0 * plain.restore.wall / sealed.restore.wall,
        100.0 * (sealed.repo_full as f64 / plain.repo_full as f64 - 1.0),
    );
    for row in &rows {
        let _ = std::fs::remove_dir_all(w(&format!("restore-{}", row.tool)));
    }
    encryption_ab(
        data_bytes,
        &w,
        &src,
        [(&repo, &idx_incr), (&repo_enc, &idx_incr_enc)],
    );
    if !restic || !borg {
        println!(
            "(restic or borg not on PATH: install Debian `restic` and `borgbackup` to compare)"
        );
    }
    if std::env::var_os("LIFEBOAT_BENCH_KEEP").is_some() {
        println!("kept {}", work.keep().display());
    }
}

/// Encryption off and on, in alternating order (ABBA…) over `LIFEBOAT_BENCH_AB_ROUNDS`
/// rounds (default 5) after one round not counted: a full backup into a fresh repository and
/// a restore of the incremental into a fresh directory each, every run after a `sync`.
/// Repository and restore go to `LIFEBOAT_BENCH_AB_DIR` (default `/dev/shm` when it exists):
/// on this kind of VM, writing 900 MB to ext4 took from 1 to 6 s from one run to the next
/// (sys time, whatever the tool), which drowned the difference measured here; in memory, the
/// runs are CPU-bound, the worst case for the ratio. Prints each run and the ratio of the
/// medians (and of the best runs).
fn encryption_ab(
    data_bytes: u64,
    w: &dyn Fn(&str) -> PathBuf,
    src: &Path,
    restore_from: [(&PathBuf, &PathBuf); 2],
) {
    let rounds: usize = std::env::var("LIFEBOAT_BENCH_AB_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let me = std::env::current_exe().unwrap();
    let run = |encrypted: bool, args: &[&Path]| {
        let mut c = Command::new(&me);
        c.arg("--child").args(args);
        if encrypted {
            c.env("LIFEBOAT_BENCH_KEYS", w("keys"));
        }
        let _ = Command::new("sync").status();
        measure(&mut c)
    };
    // [plain, encrypted] × runs
    let mut full: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    let mut restore: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    let scratch_in = std::env::var_os("LIFEBOAT_BENCH_AB_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            Path::new("/dev/shm")
                .is_dir()
                .then(|| PathBuf::from("/dev/shm"))
        })
        .unwrap_or_else(|| w(""));
    let scratch = tempfile::Builder::new()
        .prefix("lifeboat-ab")
        .tempdir_in(&scratch_in)
        .unwrap();
    let (repo, out, idx) = (
        scratch.path().join("repo"),
        scratch.path().join("restore"),
        w("ab-index.json"),
    );
    for round in 0..=rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for v in order {
            let _ = std::fs::remove_dir_all(&repo);
            full[v].push(run(
                v == 1,
                &[Path::new("backup"), src, &repo, Path::new("-"), &idx],
            ));
        }
        for v in order {
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir(&out).unwrap();
            let (from, index) = restore_from[v];
            restore[v].push(run(v == 1, &[Path::new("restore"), from, index, &out]));
        }
    }
    let _ = std::fs::remove_dir_all(&repo);
    let _ = std::fs::remove_dir_all(&out);
    // The warm-up round is not counted.
    for v in [0, 1] {
        full[v].remove(0);
        restore[v].remove(0);
    }
    let median = |runs: &[Run], f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mbs = |runs: &[Run]| {
        runs.iter()
            .map(|r| format!("{:.0}", data_bytes as f64 / MB / r.wall))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "\nencryption off/on, {rounds} alternating rounds in {} (MB/s of each run; median wall, CPU s):",
        scratch_in.display()
    );
    for (what, runs) in [("full backup", &full), ("restore", &restore)] {
        let (p, e) = (&runs[0], &runs[1]);
        let (pw, ew) = (median(p, |r| r.wall), median(e, |r| r.wall));
        let best = |runs: &[Run]| runs.iter().map(|r| r.wall).fold(f64::INFINITY, f64::min);
        println!(
            "  {what:<11} lifeboat [{}] {:.2} s {:.2} CPU | lb+age [{}] {:.2} s {:.2} CPU | encrypted at {:.0} % of the unencrypted throughput (best runs: {:.0} %)",
            mbs(p),
            pw,
            median(p, |r| r.cpu),
            mbs(e),
            ew,
            median(e, |r| r.cpu),
            100.0 * pw / ew,
            100.0 * best(p) / best(e),
        );
    }
}

/// `--scale`: peak RSS of lifeboat's full backup, incremental backup and restore as the number
/// of chunk references grows 8-fold. Chunks of ~1 KiB (FastCDC 256/1024/4096) give a volume of
/// N GB the index of a 64·N GB volume at the default 64 KiB: 1 GB here is ~1 M references, the
/// index load of a 64 GB volume. Memory that grows with the index shows up as a slope.
fn scale() {
    let base =
        std::env::var_os("LIFEBOAT_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let exe = std::env::current_exe().unwrap();
    println!(
        "{:>8} {:>10} {:>9} | {:>8} {:>8} | {:>8} {:>8} | {:>8} {:>8}",
        "data MB",
        "chunk refs",
        "index MB",
        "full s",
        "RSS MiB",
        "incr s",
        "RSS MiB",
        "rest s",
        "RSS MiB"
    );
    for mb in [128usize, 512, 2048] {
        let work = tempfile::Builder::new()
            .prefix("lifeboat-mover-scale")
            .tempdir_in(&base)
            .unwrap();
        let w = |name: &str| work.path().join(name);
        let src = w("src");
        std::fs::create_dir(&src).unwrap();
        // Incompressible data in 64 files, so restore writes several files in parallel.
        let mut rng = Rng::new(mb as u64);
        for i in 0..64 {
            std::fs::write(src.join(format!("f{i:02}")), rng.bytes(mb * 1_000_000 / 64)).unwrap();
        }
        let child = |args: &[&Path]| {
            let mut c = Command::new(&exe);
            c.arg("--child").args(args);
            c.env("LIFEBOAT_BENCH_CHUNKER", "256,1024,4096");
            c.env("LIFEBOAT_BENCH_ZSTD", "1");
            c.env("TMPDIR", work.path());
            c
        };
        let (repo, i1, i2, dst) = (w("repo"), w("full.json"), w("incr.json"), w("dst"));
        let full = measure(&mut child(&[
            Path::new("backup"),
            &src,
            &repo,
            Path::new("-"),
            &i1,
        ]));
        // Rewrite 1 % of each file in place (same size, new mtime): every file is read again
        // and looked up in the known set built from the parent.
        for i in 0..64 {
            let p = src.join(format!("f{i:02}"));
            let mut data = std::fs::read(&p).unwrap();
            let at = rng.below(data.len() as u64 - 20_000) as usize;
            let new = rng.bytes(data.len() / 100);
            let end = (at + new.len()).min(data.len());
            data[at..end].copy_from_slice(&new[..end - at]);
            std::fs::write(&p, data).unwrap();
        }
        let incr = measure(&mut child(&[Path::new("backup"), &src, &repo, &i1, &i2]));
        std::fs::create_dir(&dst).unwrap();
        let rest = measure(&mut child(&[Path::new("restore"), &repo, &i2, &dst]));
        let index = VolumeIndex::from_json(&std::fs::read(&i2).unwrap()).unwrap();
        let refs: usize = index.files().map(|f| f.chunks.len()).sum();
        println!(
            "{:>8} {:>10} {:>9.1} | {:>8.2} {:>8.0} | {:>8.2} {:>8.0} | {:>8.2} {:>8.0}",
            mb,
            refs,
            std::fs::metadata(&i2).unwrap().len() as f64 / MB,
            full.wall,
            full.rss,
            incr.wall,
            incr.rss,
            rest.wall,
            rest.rss,
        );
        assert_eq!(
            std::fs::read(src.join("f00")).unwrap(),
            std::fs::read(dst.join("f00")).unwrap(),
            "restored data differs"
        );
    }
}
