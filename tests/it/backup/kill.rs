//! A backup killed at any point leaves no committed backup, and the next one succeeds.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use super::Env;
use crate::support::{lifeboat, lifeboat_cmd, stdout};

/// Starts a backup, waits until its progress output (plain lines on a non-terminal stderr)
/// reaches `marker`, then SIGKILLs it.
fn kill_at(env: &Env, name: &str, marker: &str) {
    let mut child = lifeboat_cmd(env.path(), &["backup", "--no-volumes", "--name", name])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = false;
    for line in BufReader::new(stderr).lines() {
        if line.unwrap().contains(marker) {
            seen = true;
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(seen, "backup never reached {marker:?} (exit {status:?})");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_backups_leave_no_committed_backup_and_the_next_succeeds() {
    let env = Env::new().await;
    for (i, marker) in [
        "listing",
        "carts.shop.example.com:",
        "uploading",
        "committing",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("killed-{i}");
        kill_at(&env, &name, marker);
        // A process killed right after printing "committing" may have written its manifest
        // already; it then is a complete backup, which is fine. Anything earlier must not exist.
        let out = lifeboat(env.path(), &["list", "-o", "json"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let names: Vec<&str> = doc["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap())
            .collect();
        if *marker != "committing" {
            assert!(
                !names.contains(&name.as_str()),
                "killed at {marker}: {names:?}"
            );
        } else if names.contains(&name.as_str()) {
            assert_eq!(
                lifeboat(env.path(), &["verify", &name, "--deep"])
                    .status
                    .code(),
                Some(0)
            );
        }
    }
    let summary = env.backup("after-kills", &[]);
    assert_eq!(summary["status"], "Completed");
    let out = lifeboat(env.path(), &["verify", "after-kills", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    env.sim.cluster.shutdown().await.unwrap();
}
