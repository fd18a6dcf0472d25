//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the lifeboat binary in `dir` with a clean environment for config and logs.
pub fn lifeboat(dir: &Path, args: &[&str]) -> Output {
    lifeboat_cmd(dir, args).output().expect("lifeboat runs")
}

/// The lifeboat command, not yet run.
pub fn lifeboat_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("LIFEBOAT_CONFIG")
        .env_remove("RUST_LOG");
    cmd
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Returns true if and only if a program is on PATH. Under `CI=true` a missing one fails the
/// test instead of skipping it.
pub fn require_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is required under CI=true but is not installed"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// The kubectl the tests use: `$LIFEBOAT_TEST_KUBECTL` (the pinned build of `.ci/controlplane`,
/// which `.ci/test` also puts first on PATH), else whichever `kubectl` is on PATH.
pub fn kubectl_path() -> std::path::PathBuf {
    std::env::var_os("LIFEBOAT_TEST_KUBECTL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "kubectl".into())
}

/// Returns true if and only if the tests' kubectl runs. Under `CI=true` a missing one fails the
/// test instead of skipping it.
pub fn kubectl_present() -> bool {
    let found = Command::new(kubectl_path())
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubectl ({}) is required under CI=true",
            kubectl_path().display()
        );
        eprintln!("skipping: no kubectl ({})", kubectl_path().display());
    }
    found
}

/// Flips a byte of the last chunk of the last file with data that the local replica's index
/// `replica/backups/<backup>/volumes/<ns>/<pvc>.json` lists (a later chunk: a mover has written
/// files before it meets it). Returns the pack's path and its good bytes, to put back.
pub fn damage_last_chunk(dir: &Path, backup: &str, ns: &str, pvc: &str) -> (PathBuf, Vec<u8>) {
    let replica = dir.join("replica");
    let index_path = replica.join(format!("backups/{backup}/volumes/{ns}/{pvc}.json"));
    let index =
        lifeboat::repo::index::VolumeIndex::from_json(&std::fs::read(index_path).unwrap()).unwrap();
    let chunk = *index
        .files()
        .filter(|f| !f.chunks.is_empty())
        .last()
        .unwrap()
        .chunks
        .last()
        .unwrap();
    let pack = replica.join(index.packs[chunk.pack as usize].key());
    let good = std::fs::read(&pack).unwrap();
    let mut bad = good.clone();
    bad[(chunk.offset + chunk.length / 2) as usize] ^= 0xff;
    std::fs::write(&pack, bad).unwrap();
    (pack, good)
}
