//! A backup killed while its mover runs leaves a snapshot, a claim and a Job; their lease then
//! lapses and the next backup deletes them, leaving nothing of lifeboat's behind.

use std::process::Stdio;

use crate::restore::{Regions, get};
use crate::sim::eventually;
use crate::support::{lifeboat, lifeboat_cmd, stderr, stdout};

use super::{claim_dir, dataset, leases_lapsed, leftovers};

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_killed_mid_volume_leaves_nothing_after_the_next_backup() {
    let regions = Regions::new().await;
    let primary = &regions.primary.client;
    let vol = claim_dir(primary, "db", "data-postgres-0").await;
    dataset::generate(&vol, &dataset::Spec::small()).unwrap();
    claim_dir(primary, "db", "data-postgres-1").await;

    let mut child = lifeboat_cmd(regions.path(), &["backup", "--name", "killed"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once a mover Job exists: its snapshot and claim exist too.
    eventually("a mover Job of the backup", || async {
        let jobs = get(
            primary,
            "/apis/batch/v1/jobs?labelSelector=lifeboat.io%2Frole%3Dmover",
        )
        .await?;
        (!jobs["items"].as_array()?.is_empty()).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let left = leftovers(primary).await;
    assert!(
        left.iter().any(|l| l.contains("volumesnapshots")),
        "the killed run left its snapshot: {left:?}"
    );

    // The lease is 3 s (see the config): wait for it to lapse, as a crashed run's would.
    eventually("the killed run's leases to lapse", || async {
        leases_lapsed(primary).await.then_some(())
    })
    .await;
    let out = lifeboat(regions.path(), &["backup", "--name", "after"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(leftovers(primary).await, Vec::<String>::new());
}
