//! A backup that outlives a short grace period, with prune looping beside it (issue 15 item 2):
//! the running backup's heartbeats keep its archive, indexes and packs from being collected, so
//! every backup commits and verifies deep.

use std::process::Stdio;

use serde_json::Value;

use crate::restore::{Regions, get};
use crate::sim::eventually;
use crate::support::{lifeboat, lifeboat_cmd, stderr, stdout};
use crate::volumes::{annotate, claim_dir, dataset};

#[tokio::test(flavor = "multi_thread")]
async fn backups_outliving_the_grace_period_beside_a_looping_prune_commit_whole() {
    let regions = Regions::new().await;
    let primary = &regions.primary.client;
    let vol = claim_dir(primary, "db", "data-postgres-0").await;
    let spec = dataset::Spec {
        large_bytes: 24 << 20,
        ..dataset::Spec::small()
    };
    dataset::generate(&vol, &spec).unwrap();
    claim_dir(primary, "db", "data-postgres-1").await;
    let dir = regions.path();
    // A checkpoint that takes 2.5 s before the snapshot: each backup writes its archive, then
    // waits longer than the grace period without writing anything.
    let pod = "/api/v1/namespaces/db/pods/postgres-0";
    eventually("postgres-0 running", || async {
        (get(primary, pod).await?["status"]["phase"] == "Running").then_some(())
    })
    .await;
    annotate(
        primary,
        pod,
        serde_json::json!({
            "pre.hook.backup.lifeboat.io/command": "psql -c CHECKPOINT",
            "sim.lifeboat.io/exec-duration-ms": "2500",
        }),
    )
    .await;

    // The repository exists before prune first looks at it.
    let out = lifeboat(dir, &["backup", "--no-volumes", "--name", "first"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let (mut prunes, mut seen_in_progress) = (0, 0);
    for trial in 0..10 {
        let name = format!("alive-{trial}");
        // After the first, each backup is incremental with nothing changed: it writes no new
        // pack, only its archive, then its indexes 2.5 s later: longer than the 1 s grace.
        let mut child = lifeboat_cmd(dir, &["backup", "--name", &name, "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        loop {
            let out = lifeboat(
                dir,
                &["prune", "--keep-last", "100", "--grace", "1s", "-o", "json"],
            );
            assert_eq!(
                out.status.code(),
                Some(0),
                "prune: {}{}",
                stdout(&out),
                stderr(&out)
            );
            prunes += 1;
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            if report["inProgress"].to_string().contains(&name) {
                seen_in_progress += 1;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "trial {trial}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let verify = lifeboat(dir, &["verify", "--deep", &name]);
        assert_eq!(
            verify.status.code(),
            Some(0),
            "trial {trial}: the committed backup verifies: {}{}",
            stdout(&verify),
            stderr(&verify)
        );
    }
    eprintln!("{prunes} prunes beside 10 backups; {seen_in_progress} saw the backup in progress");
    assert!(
        seen_in_progress > 0,
        "the prunes ran while backups were in progress"
    );
    // Every backup is still whole after the last prune.
    for trial in 0..10 {
        let verify = lifeboat(dir, &["verify", "--deep", &format!("alive-{trial}")]);
        assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    }
    regions.primary.cluster.shutdown().await.unwrap();
    regions.secondary.cluster.shutdown().await.unwrap();
}
