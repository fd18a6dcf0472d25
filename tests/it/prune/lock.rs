//! The pruner lock: one prune per location; a killed or abandoned holder's lock frees itself;
//! read-only locations are refused.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::repo::{LockError, LockOptions, PruneError, PruneLock, RepoWriter, prune};
use lifeboat::storage::Writer;
use lifeboat::storage::local::LocalBackend;
use lifeboat::storage::memory::MemoryBackend;

use super::{keys, now, opts, seed};
use crate::support::{lifeboat, stderr};

/// Env var that turns [`lock_holder_child`] into a process holding the lock on a directory.
const HOLD_ENV: &str = "LIFEBOAT_TEST_HOLD_PRUNE_LOCK";

fn lease(d: Duration) -> LockOptions {
    LockOptions {
        lease: d,
        ..Default::default()
    }
}

/// Asserts that a prune fails on the lock, naming the location and the holder.
async fn assert_prune_refused(store: &Writer, holder: &str) {
    let before = keys(store, "").await;
    let err = prune(store, &super::keep_last(1), &opts(Duration::ZERO), now())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PruneError::Lock(LockError::Held { .. })),
        "{err:?}"
    );
    assert!(msg.contains("another prune holds the lock on"), "{msg}");
    assert!(msg.contains(holder), "{msg}");
    assert_eq!(
        keys(store, "").await,
        before,
        "a refused prune deleted something"
    );
}

#[tokio::test]
async fn a_second_prune_gets_the_lock_error_local_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    for store in [
        Writer::new(Arc::new(LocalBackend::new(dir.path()))),
        Writer::new(Arc::new(MemoryBackend::new("prune-lock"))),
    ] {
        seed(&store).await;
        let o = LockOptions {
            holder: Some("first pruner".into()),
            ..Default::default()
        };
        let held = PruneLock::acquire(&store, &o).await.unwrap();
        assert_prune_refused(&store, "first pruner").await;
        // Waiting for a held lock gives up after the wait, with the same error.
        let waiting = LockOptions {
            wait: Some(Duration::from_millis(1500)),
            ..Default::default()
        };
        let err = PruneLock::acquire(&store, &waiting).await.unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err:?}");
        held.release().await.unwrap();
        // Released: the next prune runs, and the repository is intact.
        let r = prune(&store, &super::keep_last(2), &opts(Duration::ZERO), now())
            .await
            .unwrap();
        assert_eq!(r.deleted.len(), 3);
        assert_eq!(super::committed_and_deep_ok(&store).await, ["b3", "b4"]);
    }
}

#[tokio::test]
async fn a_waiting_prune_runs_once_the_holder_releases() {
    let store = Writer::new(Arc::new(MemoryBackend::new("prune-wait")));
    seed(&store).await;
    let held = PruneLock::acquire(&store, &LockOptions::default())
        .await
        .unwrap();
    let mut o = opts(Duration::ZERO);
    o.lock.wait = Some(Duration::from_secs(30));
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { prune(&store, &super::keep_last(4), &o, now()).await })
    };
    // The waiter cannot finish while the lock is held (it polls every second).
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    held.release().await.unwrap();
    let r = waiter.await.unwrap().unwrap();
    assert_eq!(r.deleted.len(), 1);
}

#[tokio::test]
async fn two_concurrent_cli_prunes_one_exits_1_with_the_lock_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lifeboat.yaml"),
        "locations:\n  here:\n    local: { path: repo }\n",
    )
    .unwrap();
    let store = Writer::new(Arc::new(LocalBackend::new(dir.path().join("repo"))));
    seed(&store).await;
    let o = LockOptions {
        holder: Some("the other prune".into()),
        ..Default::default()
    };
    // This process stands for the first prune: it holds the lock while the CLI runs.
    let held = PruneLock::acquire(&store, &o).await.unwrap();
    let out = lifeboat(dir.path(), &["prune", "--keep-last", "1", "--grace", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("another prune holds the lock on"), "{err}");
    assert!(err.contains("holder the other prune"), "{err}");
    assert!(err.contains("held until that process exits"), "{err}");
    held.release().await.unwrap();
    let out = lifeboat(
        dir.path(),
        &["prune", "--keep-last", "1", "--grace", "1s", "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deleted"].as_array().unwrap().len(), 4);
    assert_eq!(super::committed_and_deep_ok(&store).await, ["b4"]);
}

/// Not a test on its own: run as a child process by
/// [`a_killed_pruner_frees_the_local_lock_at_once`], it takes the lock on the directory named
/// by the environment and holds it until killed.
#[tokio::test]
#[ignore = "helper process for a_killed_pruner_frees_the_local_lock_at_once"]
async fn lock_holder_child() {
    let Ok(dir) = std::env::var(HOLD_ENV) else {
        return;
    };
    let store = Writer::new(Arc::new(LocalBackend::new(dir)));
    let o = LockOptions {
        holder: Some(format!("child pid {}", std::process::id())),
        ..Default::default()
    };
    let _held = PruneLock::acquire(&store, &o).await.unwrap();
    println!("HOLDING");
    // Held until the parent kills this process; the bound only limits an orphan's life.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_killed_pruner_frees_the_local_lock_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Writer::new(Arc::new(LocalBackend::new(dir.path())));
    RepoWriter::open_or_init(store.clone()).await.unwrap();
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "prune::lock::lock_holder_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let stdout = child.0.stdout.take().unwrap();
    // Synchronise on the child's word that it holds the lock.
    let held = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest prints "test <name> ... " without a newline before the test's output.
            .any(|l| l.ends_with("HOLDING"))
    })
    .await
    .unwrap();
    assert!(held, "the child never took the lock");
    let err = PruneLock::acquire(&store, &LockOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("child pid {pid}")),
        "{err}"
    );
    // SIGKILL: no destructor, no release; the kernel drops the flock with the process.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let lock = PruneLock::acquire(&store, &LockOptions::default())
        .await
        .unwrap();
    lock.release().await.unwrap();
}

#[tokio::test]
async fn an_abandoned_lease_lapses_after_its_ttl() {
    let store = Writer::new(Arc::new(MemoryBackend::new("prune-abandon")));
    let ttl = Duration::from_secs(2);
    let lock = PruneLock::acquire(&store, &lease(ttl)).await.unwrap();
    let abandoned = Instant::now();
    // Stop renewing without releasing, as a crashed holder would.
    lock.abandon();
    let err = PruneLock::acquire(&store, &lease(ttl)).await.unwrap_err();
    assert!(err.to_string().contains("expires in"), "{err}");
    let mut o = lease(ttl);
    o.wait = Some(Duration::from_secs(10));
    let lock = PruneLock::acquire(&store, &o).await.unwrap();
    assert!(
        abandoned.elapsed() >= ttl,
        "taken after {:?}, before the lease lapsed",
        abandoned.elapsed()
    );
    lock.release().await.unwrap();
}

#[tokio::test]
async fn a_renewed_lease_outlives_its_ttl() {
    let store = Writer::new(Arc::new(MemoryBackend::new("prune-renew")));
    let ttl = Duration::from_millis(600);
    let lock = PruneLock::acquire(&store, &lease(ttl)).await.unwrap();
    // Three lease lengths pass while the background task renews it.
    tokio::time::sleep(ttl * 3).await;
    lock.check().unwrap();
    let err = PruneLock::acquire(&store, &lease(ttl)).await.unwrap_err();
    assert!(matches!(err, LockError::Held { .. }), "{err:?}");
    lock.release().await.unwrap();
    PruneLock::acquire(&store, &lease(ttl))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_read_only_location_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lifeboat.yaml"),
        "locations:\n  replica:\n    readOnly: true\n    local: { path: repo }\n",
    )
    .unwrap();
    let store = Writer::new(Arc::new(LocalBackend::new(dir.path().join("repo"))));
    seed(&store).await;
    let before = keys(&store, "").await;
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["prune", "--keep-last", "1"];
        args.extend_from_slice(extra);
        let out = lifeboat(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("location \"replica\" is read-only"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(keys(&store, "").await, before);
    // No lock file either: nothing was written.
    assert!(!dir.path().join("repo/locks").exists());
}

#[tokio::test]
async fn a_bad_policy_flag_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lifeboat.yaml"),
        "locations:\n  here:\n    local: { path: repo }\n",
    )
    .unwrap();
    let out = lifeboat(dir.path(), &["prune", "--keep-within", "3x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--keep-within: \"3x\" is not a duration"),
        "{}",
        stderr(&out)
    );
}
