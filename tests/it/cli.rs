//! The command line as users and scripts see it: help, exit codes, JSON output.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use lifeboat::repo::{BackupName, Manifest, RepoWriter};
use lifeboat::storage::Writer;
use lifeboat::storage::local::LocalBackend;

use crate::support::{lifeboat, stderr, stdout};

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = lifeboat(dir.path(), &["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for cmd in [
        "backup", "restore", "list", "describe", "verify", "prune", "schedule", "doctor", "demo",
        "mover", "sim",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "--help lacks {cmd}:\n{help}"
        );
    }
    assert!(help.contains("3  partially failed"), "{help}");
    let version = lifeboat(dir.path(), &["--version"]);
    assert_eq!(
        stdout(&version).trim(),
        format!("lifeboat {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn malformed_config_exits_2_naming_the_key_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lifeboat.yaml"),
        "locations:\n  dr:\n    azure:\n      account: acct\n      container: backups\n      auth: key\n",
    )
    .unwrap();
    // Found as ./lifeboat.yaml without --config.
    let out = lifeboat(dir.path(), &["doctor"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("lifeboat.yaml: locations.dr.azure.auth: unknown value `key`"),
        "{err}"
    );
    assert!(err.contains("account-key"), "{err}");
}

#[test]
fn unknown_command_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = lifeboat(dir.path(), &["list", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_mover_given_a_malformed_location_exits_2_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "mover",
        "backup",
        "--backup",
        "b1",
        "--namespace",
        "ns",
        "--pvc",
        "p",
        "--source",
        ".",
    ];
    let out = crate::support::lifeboat_cmd(dir.path(), &args)
        .env("LIFEBOAT_LOCATION", "{\"local\": {}}")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("$LIFEBOAT_LOCATION is not a location"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn doctor_reports_a_local_location_writable_in_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lifeboat.yaml"),
        "locations:\n  here:\n    local: { path: repo }\n",
    )
    .unwrap();
    let out = lifeboat(dir.path(), &["doctor", "--output", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    let loc = &doc["locations"][0];
    assert_eq!(loc["name"], "here");
    assert_eq!(loc["reachable"], true);
    assert_eq!(loc["observedAccess"], "writable");
    assert_eq!(loc["repository"]["initialized"], false);
    // The probe cleans up after itself.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("repo"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn doctor_flags_a_read_only_location_that_accepts_writes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lifeboat.yaml"),
        "locations:\n  ro:\n    readOnly: true\n    local: { path: repo }\n",
    )
    .unwrap();
    let out = lifeboat(dir.path(), &["doctor", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a permissive read-only location is a warning"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["locations"][0]["observedAccess"], "writable");
    assert!(
        doc["locations"][0]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("accepted a probe write")
    );
}

async fn write_backup(repo_dir: &Path, name: &str) -> Manifest {
    let repo = RepoWriter::open_or_init(Writer::new(Arc::new(LocalBackend::new(repo_dir))))
        .await
        .unwrap();
    let mut b = repo
        .begin_backup(BackupName::new(name).unwrap())
        .await
        .unwrap();
    b.put("resources.tar.zst", Bytes::from(vec![7u8; 4096]))
        .await
        .unwrap();
    let draft = Manifest {
        labels: [("release".to_owned(), "abc123".to_owned())].into(),
        ..Manifest::draft(b.name().clone(), jiff::Timestamp::now())
    };
    b.commit(draft).await.unwrap()
}

#[tokio::test]
async fn list_describe_and_verify_a_committed_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    write_backup(&repo, "b1").await;
    std::fs::write(
        dir.path().join("lifeboat.yaml"),
        "locations:\n  here:\n    local: { path: repo }\n",
    )
    .unwrap();

    let out = lifeboat(dir.path(), &["list", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["backups"][0]["name"], "b1");
    assert_eq!(doc["backups"][0]["labels"]["release"], "abc123");
    let text = stdout(&lifeboat(dir.path(), &["list"]));
    assert!(
        text.contains("b1") && text.contains("release=abc123"),
        "{text}"
    );

    let out = lifeboat(dir.path(), &["describe", "b1", "--details"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("backups/b1/resources.tar.zst"));

    let out = lifeboat(dir.path(), &["verify", "b1", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // Damage the archive: same size, other bytes. Shallow verify passes, deep fails.
    std::fs::write(repo.join("backups/b1/resources.tar.zst"), vec![8u8; 4096]).unwrap();
    assert_eq!(
        lifeboat(dir.path(), &["verify", "b1"]).status.code(),
        Some(0)
    );
    let out = lifeboat(dir.path(), &["verify", "b1", "--deep", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["report"]["corrupt"][0], "backups/b1/resources.tar.zst");

    // Lose it: missing.
    std::fs::remove_file(repo.join("backups/b1/resources.tar.zst")).unwrap();
    let out = lifeboat(dir.path(), &["verify", "b1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("missing: backups/b1/resources.tar.zst"));

    let out = lifeboat(dir.path(), &["describe", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

/// A kubeconfig whose only cluster listens nowhere (port 1 on loopback refuses at once).
fn unreachable_kubeconfig(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("unreachable.kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster: { server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true }\n\
         users:\n- name: u\n  user: { token: t }\ncontexts:\n- name: gone\n  context: { cluster: gone, user: u }\ncurrent-context: gone\n",
    )
    .unwrap();
    path
}

/// A config with a cluster nobody answers for and one local location at `path`.
fn config_with_location(dir: &Path, path: &Path) {
    let kubeconfig = unreachable_kubeconfig(dir);
    std::fs::write(
        dir.join("lifeboat.yaml"),
        format!(
            "clusters:\n  gone: {{ context: gone, kubeconfig: {kubeconfig:?} }}\nlocations:\n  here: {{ local: {{ path: {path:?} }} }}\n"
        ),
    )
    .unwrap();
}

/// `lifeboat backup` with `HOME` set to `home`.
fn backup_with_home(dir: &Path, home: &Path) -> std::process::Output {
    crate::support::lifeboat_cmd(dir, &["backup", "--no-volumes", "--name", "b1"])
        .env("HOME", home)
        .output()
        .unwrap()
}

#[test]
fn a_local_location_at_the_root_or_the_home_directory_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();

    config_with_location(dir.path(), Path::new("/"));
    let out = backup_with_home(dir.path(), &home);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("location local:/ is the file-system root"),
        "{err}"
    );
    assert!(
        err.contains("set its `path` to a new or empty directory"),
        "{err}"
    );
    assert!(!Path::new("/lifeboat.json").exists());

    // The home directory is refused even when empty, also when named through `..`.
    config_with_location(dir.path(), &home.join("sub/.."));
    std::fs::create_dir(home.join("sub")).unwrap();
    let out = backup_with_home(dir.path(), &home);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is the home directory"), "{err}");
    assert!(
        err.contains(&format!("{}", home.join("lifeboat-backups").display())),
        "suggests a directory: {err}"
    );
    assert!(!home.join("lifeboat.json").exists());
}

#[test]
fn a_non_empty_foreign_directory_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("photos");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("holiday.jpg"), b"not a backup").unwrap();
    config_with_location(dir.path(), &foreign);
    let out = lifeboat(dir.path(), &["backup", "--no-volumes", "--name", "b1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("is not empty and is not a lifeboat repository")
            && err.contains("\"holiday.jpg\"")
            && err.contains("point the location at a new or empty directory"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&foreign)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["holiday.jpg"], "nothing written beside it");
}

#[test]
fn an_empty_directory_a_missing_one_and_an_existing_repository_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // What a `doctor` whose probe could not be deleted leaves: lifeboat's own, not foreign.
    std::fs::write(
        empty.join(".lifeboat-probe-0123"),
        b"lifeboat write probe\n",
    )
    .unwrap();
    for location in [empty.clone(), dir.path().join("missing"), empty] {
        // The third run finds the repository the first one created.
        config_with_location(dir.path(), &location);
        let out = lifeboat(dir.path(), &["backup", "--no-volumes", "--name", "b1"]);
        // Accepted: the repository is there, and the backup fails later, at the cluster.
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            !stderr(&out).contains("lifeboat repository"),
            "{}",
            stderr(&out)
        );
        assert!(location.join("lifeboat.json").is_file(), "{location:?}");
    }
}

/// Runs `args` and parses stdout as one JSON document (failing the test if it is not).
fn json_of(dir: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = lifeboat(dir, args);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out.status.code(), doc, stderr(&out))
}

/// A failure document: `status`, `exitCode`, `committed`, and an `error` containing `part`.
fn assert_failed(doc: &serde_json::Value, code: u8, part: &str) {
    assert_eq!(doc["status"], "Failed", "{doc}");
    assert_eq!(doc["exitCode"], code, "{doc}");
    assert_eq!(doc["committed"], false, "{doc}");
    assert!(doc["error"].as_str().unwrap().contains(part), "{doc}");
}

#[test]
fn backup_json_reports_a_failure_against_an_unreachable_cluster() {
    let dir = tempfile::tempdir().unwrap();
    config_with_location(dir.path(), &dir.path().join("repo"));
    let (code, doc, err) = json_of(
        dir.path(),
        &["backup", "--no-volumes", "--name", "b1", "-o", "json"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_failed(&doc, 1, "nothing was committed");
    assert_eq!(doc["name"], "b1", "{doc}");
    assert_eq!(doc["location"], "here", "{doc}");
    assert_eq!(doc["cluster"], "gone", "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("nothing was committed") && error.contains("discover"),
        "{error}"
    );
    // The same message as stderr, which still carries it for people.
    assert!(err.contains(error), "{err}");
    assert_eq!(
        doc["done"],
        serde_json::json!([
            "location opened",
            "repository opened",
            "cluster client configured",
            "backup attempted"
        ]),
        "{doc}"
    );
}

#[test]
fn backup_json_reports_a_read_only_location_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    config_with_location(dir.path(), &dir.path().join("repo"));
    let cfg = std::fs::read_to_string(dir.path().join("lifeboat.yaml"))
        .unwrap()
        .replace("here: {", "here: { readOnly: true,");
    std::fs::write(dir.path().join("lifeboat.yaml"), cfg).unwrap();
    let (code, doc, err) = json_of(dir.path(), &["backup", "--no-volumes", "-o", "json"]);
    assert_eq!(code, Some(2), "{err}");
    assert_failed(&doc, 2, "location here is read-only");
    assert_eq!(doc["done"], serde_json::json!([]), "{doc}");
    assert!(!dir.path().join("repo").exists(), "nothing written");
}

#[test]
fn schedule_run_json_reports_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    config_with_location(dir.path(), &dir.path().join("repo"));
    std::fs::create_dir(dir.path().join("schedules")).unwrap();
    std::fs::write(
        dir.path().join("schedules/tick.yaml"),
        "name: tick\nschedule: \"*/5 * * * *\"\ncluster: gone\nlocation: here\nvolumes: false\ncronJob: { namespace: ops }\n",
    )
    .unwrap();
    let (code, doc, err) = json_of(dir.path(), &["schedule", "run", "tick", "-o", "json"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(doc["schedule"], "tick", "{doc}");
    assert_failed(&doc, 1, "nothing was committed");
    // A usage error (no such schedule) is a document too, with exit 2.
    let (code, doc, err) = json_of(dir.path(), &["schedule", "run", "nope", "-o", "json"]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(doc["exitCode"], 2, "{doc}");
    assert_eq!(doc["done"], serde_json::json!([]), "{doc}");
}

#[tokio::test]
async fn a_flipped_digest_inside_the_manifest_is_named_as_a_damaged_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let committed = write_backup(&repo, "b1").await;
    std::fs::write(
        dir.path().join("lifeboat.yaml"),
        "locations:\n  here:\n    local: { path: repo }\n",
    )
    .unwrap();
    let path = repo.join("backups/b1/manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let recorded = &committed.objects[0].sha256;
    let flipped = format!(
        "{}{}",
        if recorded.starts_with('f') { 'e' } else { 'f' },
        &recorded[1..]
    );
    std::fs::write(&path, text.replacen(recorded.as_str(), &flipped, 1)).unwrap();

    for args in [&["verify", "b1", "--deep"][..], &["describe", "b1"]] {
        let out = lifeboat(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("the manifest of backup \"b1\" (backups/b1/manifest.json in local:")
                && err.contains("is damaged"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("resources.tar.zst"), "{args:?}: {err}");
    }
}
