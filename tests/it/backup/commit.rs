//! The commit's outcome is settled by reading the manifest back (issue 15): a backup whose
//! manifest write was stored but whose answer was lost is committed (exit 0); one that lost to a
//! genuine second writer is not (exit 1). When every answer is lost, the retries run out (a
//! minute and a half with the CLI's back-off), so that case runs on the library with short
//! retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use lifeboat::repo::{BackupName, Manifest, RepoWriter};
use lifeboat::storage::Writer;
use lifeboat::storage::azure::{AzureBackend, AzureOptions, Credential};
use serde_json::Value;

use super::Env;
use crate::storage::proxy::{Action, Fault, Proxy, Rule};
use crate::storage::{KEY, azurite, azurite_location, azurite_writer};
use crate::support::{lifeboat_cmd, stderr, stdout};

fn is_manifest_put(line: &str) -> bool {
    // Keys are sent with `/` encoded (`backups%2Fname%2Fmanifest.json`).
    line.starts_with("PUT ") && line.contains("manifest.json")
}

/// Points the env's config at `container` on Azurite through `proxy`.
fn use_azure(env: &Env, proxy: &Proxy, container: &str) {
    std::fs::write(
        env.path().join("lifeboat.yaml"),
        format!(
            "clusters:\n  primary: {{ context: primary, kubeconfig: {:?} }}\n\
             locations:\n  blob:\n    azure: {{ account: devstoreaccount1, container: {container}, endpoint: '{}/devstoreaccount1', auth: account-key, accountKey: {{ env: AZURITE_ACCOUNT_KEY }} }}\n",
            env.sim.cluster.kubeconfig_path(),
            proxy.url
        ),
    )
    .unwrap();
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    lifeboat_cmd(env.path(), args)
        .env("AZURITE_ACCOUNT_KEY", KEY)
        .output()
        .unwrap()
}

/// A rule applying `first` to the first manifest PUT and forwarding everything else; `seen`
/// counts the manifest PUTs.
fn first_manifest_put(
    seen: Arc<AtomicUsize>,
    first: impl Fn() -> Action + Send + Sync + 'static,
) -> Rule {
    Arc::new(move |line| {
        if is_manifest_put(line) && seen.fetch_add(1, Ordering::SeqCst) == 0 {
            first()
        } else {
            Action::Forward
        }
    })
}

/// Runs `lifeboat backup --name NAME` through `proxy`, checks its exit code, returns stderr.
fn backup_exits(env: &Env, proxy: &Proxy, container: &str, name: &str, code: i32) -> String {
    use_azure(env, proxy, container);
    let out = run(env, &["backup", "--no-volumes", "--name", name]);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

/// The names `lifeboat list` shows.
fn listed(env: &Env) -> Vec<String> {
    let out = run(env, &["list", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_the_manifest_write_is_committed_and_a_rival_commit_is_not() {
    let Some(base) = azurite() else { return };
    let env = Env::new().await;
    let (direct, container) = azurite_writer(&base, "lost").await;

    // 1. The first manifest PUT's answer is dropped (after Azurite stored it); the SDK's retry
    //    then gets 409 from `If-None-Match: *`, which used to read as "another writer won".
    let drops = Arc::new(AtomicUsize::new(0));
    let rule = first_manifest_put(drops.clone(), || Action::Fault(Fault::DropAnswer));
    let proxy = Proxy::with_rule(&base, rule).await;
    backup_exits(&env, &proxy, &container, "dropped-once", 0);
    assert!(
        drops.load(Ordering::SeqCst) >= 2,
        "the manifest PUT was retried: {:?}",
        proxy.requests()
    );
    assert!(listed(&env).contains(&"dropped-once".to_owned()));
    let out = run(&env, &["verify", "dropped-once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    drop(proxy);

    // 2. A genuine second writer commits the same name just before our manifest PUT arrives:
    //    exit 1, nothing of ours committed, the rival's manifest untouched.
    let rival_key = "backups/raced/manifest.json";
    let rival_body = Bytes::from_static(b"{\"rival\":true}");
    let rival = (direct.clone(), rival_body.clone());
    let rule = first_manifest_put(Arc::default(), move || {
        let (w, body) = rival.clone();
        Action::ForwardAfter(Box::pin(async move {
            w.put_if_absent(rival_key, body).await.unwrap();
        }))
    });
    let proxy = Proxy::with_rule(&base, rule).await;
    let err = backup_exits(&env, &proxy, &container, "raced", 1);
    assert!(
        err.contains("another writer committed backup \"raced\""),
        "{err}"
    );
    assert_eq!(direct.get(rival_key).await.unwrap(), rival_body);
    env.sim.cluster.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_answer_to_the_manifest_write_lost_still_commits() {
    let Some(base) = azurite() else { return };
    let (direct, container) = azurite_writer(&base, "lost-always").await;
    let rule: Rule = Arc::new(|line| {
        if is_manifest_put(line) {
            Action::Fault(Fault::DropAnswer)
        } else {
            Action::Forward
        }
    });
    let proxy = Proxy::with_rule(&base, rule).await;
    let backend = AzureBackend::with_options(
        "lossy",
        &azurite_location(&proxy.url, &container, false),
        Credential::SharedKey(KEY.into()),
        &AzureOptions {
            try_timeout: std::time::Duration::from_secs(30),
            initial_delay: std::time::Duration::from_millis(10),
            max_retries: 2,
        },
    )
    .unwrap();
    let repo = RepoWriter::open_or_init(Writer::new(Arc::new(backend)))
        .await
        .unwrap();
    let name = BackupName::new("always").unwrap();
    let mut b = repo.begin_backup(name.clone()).await.unwrap();
    b.put("resources.tar.zst", Bytes::from_static(b"archive"))
        .await
        .unwrap();
    let committed = b
        .commit(Manifest::draft(name.clone(), jiff::Timestamp::now()))
        .await
        .unwrap();
    let puts = proxy
        .requests()
        .iter()
        .filter(|l| is_manifest_put(l))
        .count();
    assert_eq!(puts, 3, "one try and two retries, every answer lost");
    let stored: Manifest =
        serde_json::from_slice(&direct.get("backups/always/manifest.json").await.unwrap()).unwrap();
    assert_eq!(stored, committed);
}
