//! SIGTERM at random points of a backup with volumes (issue 15 item 6): each run stops within
//! its grace period, exits 143, says nothing was committed, and leaves no temporary object.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::restore::{Regions, get};
use crate::sim::{eventually, eventually_within};
use crate::support::lifeboat_cmd;

use super::{claim_dir, dataset, leftovers};

/// Where in the backup the signal comes: each point is observed in the cluster, never timed.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// A VolumeSnapshot of the run exists.
    Snapshot,
    /// A mover Job of the run exists.
    Job,
    /// A mover pod of the run is running (reading the volume).
    MoverRunning,
    /// One volume's Job has succeeded, the other's is still moving data.
    OneVolumeDone,
}

async fn reached(client: &kube::Client, backup: &str, point: Point) -> Option<()> {
    let of_run = format!("lifeboat.io%2Fbackup%3D{backup}");
    let items = |v: Value| v["items"].as_array().cloned().unwrap_or_default();
    let found = match point {
        Point::Snapshot => !items(
            get(
                client,
                &format!("/apis/snapshot.storage.k8s.io/v1/volumesnapshots?labelSelector={of_run}"),
            )
            .await?,
        )
        .is_empty(),
        Point::Job => !items(
            get(
                client,
                &format!("/apis/batch/v1/jobs?labelSelector={of_run}"),
            )
            .await?,
        )
        .is_empty(),
        Point::MoverRunning => items(get(client, "/api/v1/pods").await?).iter().any(|p| {
            p["metadata"]["labels"]["lifeboat.io/backup"] == backup
                && p["status"]["phase"] == "Running"
        }),
        Point::OneVolumeDone => items(
            get(
                client,
                &format!("/apis/batch/v1/jobs?labelSelector={of_run}"),
            )
            .await?,
        )
        .iter()
        .any(|j| j["status"]["succeeded"].as_i64() == Some(1)),
    };
    found.then_some(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_at_random_points_of_a_backup_exits_143_and_leaves_nothing_behind() {
    let regions = Regions::new().await;
    let primary = &regions.primary.client;
    let big = claim_dir(primary, "db", "data-postgres-0").await;
    // Enough data that the mover of this volume runs for a while in a debug build.
    let spec = dataset::Spec {
        large_bytes: 48 << 20,
        ..dataset::Spec::small()
    };
    dataset::generate(&big, &spec).unwrap();
    let small = claim_dir(primary, "db", "data-postgres-1").await;
    std::fs::write(small.join("PG_VERSION"), "17\n").unwrap();

    let points = [
        Point::Snapshot,
        Point::Job,
        Point::MoverRunning,
        Point::OneVolumeDone,
    ];
    let mut rng = dataset::Rng::new(0x5167_7e12);
    for trial in 0..10 {
        let point = points[rng.below(points.len() as u64) as usize];
        let name = format!("term-{trial}");
        let child = lifeboat_cmd(regions.path(), &["backup", "--name", &name, "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        eventually(&format!("trial {trial}: {point:?}"), || {
            reached(primary, &name, point)
        })
        .await;
        // SAFETY: kill(2) with a pid this test spawned and has not reaped.
        let sent = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(sent, 0, "trial {trial}: the signal was sent");
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            out.status.code(),
            Some(143),
            "trial {trial} at {point:?}:\n{stdout}\n{stderr}"
        );
        assert!(
            stderr.contains("interrupted: nothing committed"),
            "trial {trial}: {stderr}"
        );
        let doc: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("one JSON document: {stdout}"));
        assert_eq!(doc["status"], "Interrupted", "{doc}");
        assert_eq!(doc["signal"], "SIGTERM");
        assert_eq!(doc["exitCode"], 143);
        assert_eq!(doc["committed"], false);
        eprintln!("trial {trial} at {point:?}: cleanup {}", doc["cleanup"]);
        assert!(
            !regions
                .path()
                .join(format!("repo/backups/{name}/manifest.json"))
                .exists(),
            "trial {trial}: no manifest"
        );
        // Deleted and gone before the process exited; the mover pods follow their Jobs.
        assert_eq!(
            leftovers(primary).await,
            Vec::<String>::new(),
            "trial {trial} at {point:?}: {doc}"
        );
        eventually_within(
            &format!("trial {trial}: the run's mover pods to go"),
            Duration::from_secs(30),
            || async {
                let pods = get(primary, "/api/v1/pods").await?;
                (!pods["items"]
                    .as_array()?
                    .iter()
                    .any(|p| p["metadata"]["labels"]["lifeboat.io/backup"] == name.as_str()))
                .then_some(())
            },
        )
        .await;
    }
    regions.primary.cluster.shutdown().await.unwrap();
    regions.secondary.cluster.shutdown().await.unwrap();
}
