//! Encrypted, write-only repositories (issue 17): the primary's writer key writes backups it
//! cannot read; the DR side's identity restores them from a read-only replica; nothing of the
//! content is stored in clear.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::restore::{Regions, get};
use crate::seed::SECRET_VALUE;
use crate::support::{lifeboat, stderr, stdout};
use crate::volumes::claim_dir;

/// In a data file of the volume: must never be stored in clear.
const FILE_CANARY: &str = "file-canary-4e1f9b27-never-stored-in-clear";

/// The standard `age` CLI ($LIFEBOAT_TEST_AGE, built by `.ci/age`): under CI=true a missing
/// one fails the test, elsewhere it is skipped with a warning.
fn age_cli() -> Option<PathBuf> {
    match std::env::var("LIFEBOAT_TEST_AGE") {
        Ok(p) if !p.trim().is_empty() => Some(PathBuf::from(p.trim())),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "LIFEBOAT_TEST_AGE is not set and CI=true: the age CLI is required; build it with `.ci/age`"
            )
        }
        _ => {
            eprintln!(
                "skipping the age CLI checks: LIFEBOAT_TEST_AGE is not set (build it with `.ci/age`)"
            );
            None
        }
    }
}

/// `sh -c script` in `dir`; panics with its stderr on failure.
fn sh(dir: &Path, script: &str) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", stderr(&out));
    out.stdout
}

/// The recovery procedure of `docs/FORMAT.md` ("Reading your data without lifeboat"), by hand:
/// the archive through `age -d | zstd -d | tar -x`, the index through `age -d`, then each chunk
/// of a file out of its pack (itself one age file), decompressed when stored shorter.
fn recover_by_hand(
    age: &Path,
    id: &Path,
    replica: &Path,
    work: &Path,
    index_key: &str,
    file: &str,
) -> (Vec<u8>, Vec<u8>) {
    std::fs::create_dir_all(work.join("tree")).unwrap();
    let (age, id) = (age.display(), id.display());
    let replica = replica.display();
    sh(
        work,
        &format!(
            "{age} -d -i {id} {replica}/backups/v2/resources.tar.zst | zstd -d | tar -x -C tree"
        ),
    );
    let secret = std::fs::read(work.join("tree/core/v1/secrets/shop/creds.json")).unwrap();
    let sealed: Value = serde_json::from_slice(&sh(
        work,
        &format!(
            "python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"sealed\"])' {replica}/backups/v2/manifest.json | base64 -d | {age} -d -i {id}"
        ),
    ))
    .unwrap();
    assert!(
        sealed["details"]["volumes"]
            .as_array()
            .is_some_and(|v| !v.is_empty()),
        "{sealed}"
    );
    let index: Value = serde_json::from_slice(&sh(
        work,
        &format!("{age} -d -i {id} {replica}/{index_key}"),
    ))
    .unwrap();
    let packs = index["packs"].as_array().unwrap();
    let node = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e.get("file").filter(|f| f["path"] == file))
        .unwrap_or_else(|| panic!("{file} in {index}"));
    let mut data = Vec::new();
    for c in node["chunks"].as_array().unwrap() {
        let (row, off, len, size) = (
            c[1].as_u64().unwrap() as usize,
            c[2].as_u64().unwrap() as usize,
            c[3].as_u64().unwrap() as usize,
            c[4].as_u64().unwrap() as usize,
        );
        let pack = packs[row]["id"].as_str().unwrap();
        let plain = sh(
            work,
            &format!("{age} -d -i {id} {replica}/packs/{}/{pack}", &pack[..2]),
        );
        let stored = &plain[off..off + len];
        if len == size {
            data.extend_from_slice(stored);
        } else {
            data.extend(zstd::bulk::decompress(stored, size).unwrap());
        }
    }
    (secret, data)
}

/// Generates a key pair into `dir`; returns (identity, writer key).
pub fn keys(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let (id, w) = (
        dir.join(format!("{tag}.identity")),
        dir.join(format!("{tag}.writer")),
    );
    let out = lifeboat(
        dir,
        &[
            "key",
            "generate",
            "--identity",
            id.to_str().unwrap(),
            "--writer-key",
            w.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    (id, w)
}

/// The regions' config with keys: `primary` holds the writer key only, `dr` (read-only
/// replica) the identity only; `primary-as-reader` is the primary's repository read with the
/// writer key, `dr-writer` writes with the identity only, `dr-wrong` reads with another identity.
fn write_config(r: &Regions, id: &Path, w: &Path, other_id: &Path) {
    let cfg = format!(
        "clusters:\n  primary: {{ context: primary, kubeconfig: {:?} }}\n  secondary: {{ context: secondary, kubeconfig: {:?} }}\n\
         locations:\n\
         \x20 primary: {{ local: {{ path: repo }}, encryption: {{ writerKey: {{ file: {w:?} }} }} }}\n\
         \x20 primary-as-reader: {{ readOnly: true, local: {{ path: repo }}, encryption: {{ writerKey: {{ file: {w:?} }} }} }}\n\
         \x20 dr-writer: {{ local: {{ path: repo }}, encryption: {{ identity: {{ file: {id:?} }} }} }}\n\
         \x20 dr: {{ readOnly: true, local: {{ path: replica }}, encryption: {{ identity: {{ file: {id:?} }} }} }}\n\
         \x20 dr-wrong: {{ readOnly: true, local: {{ path: replica }}, encryption: {{ identity: {{ file: {other_id:?} }} }} }}\n\
         defaults: {{ cluster: primary, location: primary }}\n\
         volumes: {{ moverImage: \"lifeboat:dev\", leaseSeconds: 3, timeoutSeconds: 120 }}\n\
         restore:\n  secondary: {{ cluster: secondary, from: dr, zoneMap: {{ eastus2-1: centralus-1, eastus2-2: centralus-2, eastus2-3: centralus-3 }} }}\n",
        r.primary.cluster.kubeconfig_path(),
        r.secondary.cluster.kubeconfig_path(),
    );
    std::fs::write(r.path().join("lifeboat.yaml"), cfg).unwrap();
}

/// Every stored file under `dir`, with its bytes and, if it is a zstd frame, its decompressed
/// bytes too.
fn stored_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            if let Ok(plain) = zstd::stream::decode_all(&bytes[..]) {
                out.push((p.clone(), plain));
            }
            out.push((p, bytes));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The canaries, as they could be stored: in clear, base64 (a Secret's `data`), and the claim's
/// name (object and claim names must not appear in keys or manifests).
fn canaries() -> Vec<Vec<u8>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        SECRET_VALUE.as_bytes().to_vec(),
        b64.encode(SECRET_VALUE).into_bytes(),
        FILE_CANARY.as_bytes().to_vec(),
        b"data-postgres-0".to_vec(),
    ]
}

fn assert_no_canary(dir: &Path) {
    let files = stored_bytes(dir);
    assert!(files.len() > 5, "a repository was written: {files:?}");
    for (path, bytes) in &files {
        let rel = path
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for c in canaries() {
            let c_text = String::from_utf8_lossy(&c).into_owned();
            assert!(!rel.contains(&c_text), "{rel}: the key names {c_text}");
            assert!(!contains(bytes, &c), "{rel} holds {c_text} in clear");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_round_trip_write_only_writer_identity_only_reader_and_no_canary_in_clear() {
    let r = Regions::new().await;
    let (id, w) = keys(r.path(), "prod");
    let (other_id, _) = keys(r.path(), "other");
    write_config(&r, &id, &w, &other_id);
    let primary = &r.primary.client;
    let vol0 = claim_dir(primary, "db", "data-postgres-0").await;
    claim_dir(primary, "db", "data-postgres-1").await;
    // Incompressible data around the canary, so an unencrypted pack would hold it verbatim.
    let mut data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    data.splice(150_000..150_000, FILE_CANARY.bytes());
    std::fs::write(vol0.join("canary.bin"), &data).unwrap();
    std::fs::write(vol0.join("PG_VERSION"), "17\n").unwrap();

    // The writer key backs up (volumes included), twice: the second deduplicates.
    for name in ["v1", "v2"] {
        let out = lifeboat(r.path(), &["backup", "--name", name, "-o", "json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(r.path().join("repo/lifeboat.json")).unwrap())
            .unwrap();
    assert_eq!(config["encryption"]["scheme"], "age-x25519-v1", "{config}");
    assert_eq!(config["encryption"]["chunkId"], "blake3-keyed", "{config}");
    let m2: Value = serde_json::from_slice(
        &std::fs::read(r.path().join("repo/backups/v2/manifest.json")).unwrap(),
    )
    .unwrap();
    assert!(m2["sealed"].is_string(), "{m2}");
    assert!(m2.get("details").is_none(), "details are sealed: {m2}");
    assert!(m2["objects"].as_array().unwrap().len() >= 3, "{m2}");
    assert_no_canary(&r.path().join("repo"));

    // The writer key reads nothing: each refusal comes before the target cluster is touched.
    for args in [
        &[
            "restore",
            "--from",
            "primary-as-reader",
            "--cluster",
            "secondary",
        ][..],
        &["verify", "v2", "--deep", "-l", "primary-as-reader"],
        &["describe", "v2", "--details", "-l", "primary-as-reader"],
    ] {
        let out = lifeboat(r.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("needs its identity"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(
        get(&r.secondary.client, "/api/v1/namespaces/shop")
            .await
            .is_none(),
        "nothing was written to the target"
    );
    // Without --deep the writer key checks completeness (clear sizes and digests).
    let out = lifeboat(r.path(), &["verify", "v2", "-l", "primary-as-reader"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The identity alone does not write.
    let out = lifeboat(
        r.path(),
        &[
            "backup",
            "--no-volumes",
            "--to",
            "dr-writer",
            "--name",
            "v3",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs its writer key"),
        "{}",
        stderr(&out)
    );

    r.replicate_all(7).await;
    // Another identity is named as such; nothing is written.
    let out = lifeboat(
        r.path(),
        &["restore", "--from", "dr-wrong", "--cluster", "secondary"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not among the repository's recipients"),
        "{}",
        stderr(&out)
    );
    assert!(
        get(&r.secondary.client, "/api/v1/namespaces/shop")
            .await
            .is_none()
    );

    // The identity restores from the read-only replica: objects and volume data.
    let (code, doc, err) = r.restore(&[]);
    assert_eq!(code, Some(0), "{doc}\n{err}");
    assert_eq!(doc["plan"]["restorePoint"]["name"], "v2");
    let secondary = &r.secondary.client;
    let secret = get(secondary, "/api/v1/namespaces/shop/secrets/creds")
        .await
        .unwrap();
    use base64::Engine;
    assert_eq!(
        secret["data"]["password"],
        base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE)
    );
    let restored = claim_dir(secondary, "db", "data-postgres-0").await;
    assert_eq!(std::fs::read(restored.join("canary.bin")).unwrap(), data);
    assert_eq!(std::fs::read(restored.join("PG_VERSION")).unwrap(), b"17\n");

    // The identity reads the details and verifies deeply.
    let out = lifeboat(
        r.path(),
        &["describe", "v2", "--details", "-l", "dr", "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let v0 = m["details"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pvc"] == "data-postgres-0")
        .unwrap()
        .clone();
    assert_eq!(v0["parent"], "v1", "{v0}");
    assert!(
        v0["reusedChunks"].as_u64().unwrap() > 0,
        "incremental: {v0}"
    );
    assert_eq!(v0["newChunks"], 0, "nothing changed: {v0}");
    // Without lifeboat: the standard age CLI and the identity, as docs/FORMAT.md says.
    if let Some(age) = age_cli() {
        let (secret, by_hand) = recover_by_hand(
            &age,
            &id,
            &r.path().join("replica"),
            &r.path().join("by-hand"),
            v0["index"].as_str().unwrap(),
            "canary.bin",
        );
        let secret: Value = serde_json::from_slice(&secret).unwrap();
        assert_eq!(
            secret["data"]["password"],
            base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE)
        );
        assert_eq!(by_hand, std::fs::read(restored.join("canary.bin")).unwrap());
    }
    let out = lifeboat(
        r.path(),
        &["verify", "v2", "--deep", "-l", "dr", "-o", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["volumeData"]["chunks"].as_u64().unwrap() > 0, "{v}");

    // Retention and garbage collection need no identity: the writer side drops v1, and v2
    // (which deduplicated against v1's packs) stays complete and deeply intact.
    let out = lifeboat(r.path(), &["prune", "--keep-last", "1", "--grace", "1s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        !r.path().join("repo/backups/v1/manifest.json").exists(),
        "v1 was pruned: {}",
        stdout(&out)
    );
    let out = lifeboat(r.path(), &["verify", "v2", "--deep", "-l", "dr-writer"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_identity_and_a_flipped_ciphertext_byte_are_named_and_nothing_is_written() {
    let r = Regions::new().await;
    let (id, w) = keys(r.path(), "prod");
    let (other_id, _) = keys(r.path(), "other");
    write_config(&r, &id, &w, &other_id);
    let out = lifeboat(r.path(), &["backup", "--no-volumes", "--name", "v1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    r.replicate_all(3).await;

    // The identity file is not there: a configuration error naming the file (exit 2).
    std::fs::rename(&id, r.path().join("moved.identity")).unwrap();
    let (code, _, err) = r.restore(&["--no-volumes"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot read the key file") && err.contains("prod.identity"),
        "{err}"
    );
    std::fs::rename(r.path().join("moved.identity"), &id).unwrap();

    // One flipped byte of the replica's encrypted archive: named (backup and object), exit 1.
    let archive = r.path().join("replica/backups/v1/resources.tar.zst");
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&archive, &bytes).unwrap();
    let (code, _, err) = r.restore(&["--no-volumes"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("v1") && err.contains("backups/v1/resources.tar.zst"),
        "{err}"
    );
    assert!(
        get(&r.secondary.client, "/api/v1/namespaces/shop")
            .await
            .is_none(),
        "nothing was written to the target"
    );
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}

/// Relative path → sha256 of every regular file under `dir`.
fn file_digests(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                let digest = hex::encode(sha2::Sha256::digest(std::fs::read(e.path()).unwrap()));
                out.insert(rel, digest);
            }
        }
    }
    out
}

/// Azurite config: the primary endpoint written with the account key and the writer key, both
/// from the environment (movers get them from `credentialsSecret`, when given); the
/// `-secondary` endpoint read with a read+list SAS and the identity, both from files.
fn azurite_config(r: &Regions, base: &str, container: &str, id: &Path, volumes: &str) -> String {
    let sas_file = r.path().join("secondary.sas");
    std::fs::write(&sas_file, crate::storage::account_sas("rl")).unwrap();
    format!(
        "clusters:\n  primary: {{ context: primary, kubeconfig: {:?} }}\n  secondary: {{ context: secondary, kubeconfig: {:?} }}\n\
         locations:\n\
         \x20 primary:\n    azure: {{ account: devstoreaccount1, container: {container}, prefix: aks-prod, endpoint: '{base}/devstoreaccount1', auth: account-key, accountKey: {{ env: AZURITE_ACCOUNT_KEY }} }}\n    encryption: {{ writerKey: {{ env: LIFEBOAT_WRITER_KEY }} }}\n\
         \x20 dr:\n    readOnly: true\n    azure: {{ account: devstoreaccount1, container: {container}, prefix: aks-prod, endpoint: '{base}/devstoreaccount1-secondary', auth: sas, sasToken: {{ file: {sas_file:?} }} }}\n    encryption: {{ identity: {{ file: {id:?} }} }}\n\
         defaults: {{ cluster: primary, location: primary }}\n\
         volumes: {{ moverImage: \"lifeboat:dev\", leaseSeconds: 3, timeoutSeconds: 120{volumes} }}\n\
         restore:\n  secondary: {{ cluster: secondary, from: dr, zoneMap: {{ eastus2-1: centralus-1, eastus2-2: centralus-2, eastus2-3: centralus-3 }} }}\n",
        r.primary.cluster.kubeconfig_path(),
        r.secondary.cluster.kubeconfig_path(),
    )
}

/// The must-show of issue 17 against Azurite: the demo application, objects and volume data,
/// backed up with the writer key (which the movers get, with the account key, from the
/// namespace's credentials Secret), restored from the read-only `-secondary` endpoint with the
/// identity only; every file's sha256 as it was.
#[tokio::test(flavor = "multi_thread")]
async fn encrypted_backup_with_volume_data_to_azurite_restores_from_the_read_only_secondary_with_the_identity_only()
 {
    use crate::seed::post;
    use crate::storage::{KEY, azurite, azurite_writer};
    use futures::TryStreamExt;
    let Some(base) = azurite() else { return };
    let r = Regions::new().await;
    let (store, container) = azurite_writer(&base, "encrypted").await;
    let (id, w) = keys(r.path(), "az");
    let writer_key = std::fs::read_to_string(&w).unwrap();
    let primary = &r.primary.client;
    let vol0 = claim_dir(primary, "db", "data-postgres-0").await;
    let vol1 = claim_dir(primary, "db", "data-postgres-1").await;
    // Incompressible data around the canary, so an unencrypted pack would hold it verbatim;
    // big enough for several chunks, plus small files and a nested directory.
    let mut data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    data.splice(1_500_000..1_500_000, FILE_CANARY.bytes());
    std::fs::write(vol0.join("canary.bin"), &data).unwrap();
    std::fs::write(vol0.join("PG_VERSION"), "17\n").unwrap();
    std::fs::create_dir_all(vol1.join("base/16384")).unwrap();
    for i in 0..20u32 {
        std::fs::write(
            vol1.join(format!("base/16384/{i}")),
            format!("page {i} ").repeat(1000 + i as usize * 37),
        )
        .unwrap();
    }
    let originals = [
        ("data-postgres-0", file_digests(&vol0)),
        ("data-postgres-1", file_digests(&vol1)),
    ];
    assert_eq!(originals[0].1.len() + originals[1].1.len(), 22);

    // The primary's movers open the location with the Secret's account key and writer key.
    let secret = serde_json::json!({
        "metadata": {"name": "lifeboat-credentials", "labels": {"lifeboat.io/credentials": "true"}},
        "stringData": {"AZURITE_ACCOUNT_KEY": KEY, "LIFEBOAT_WRITER_KEY": writer_key.trim()},
    });
    post(primary, "/api/v1/namespaces/db/secrets", secret).await;
    std::fs::write(
        r.path().join("lifeboat.yaml"),
        azurite_config(
            &r,
            &base,
            &container,
            &id,
            ", credentialsSecret: lifeboat-credentials",
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        crate::support::lifeboat_cmd(r.path(), args)
            .env("AZURITE_ACCOUNT_KEY", KEY)
            .env("LIFEBOAT_WRITER_KEY", &writer_key)
            .output()
            .unwrap()
    };
    let out = run(&["backup", "--name", "nightly-1", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // Every stored blob, canaries looked for in clear and base64; packs were written.
    let keys: Vec<String> = store
        .list("")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k.contains("packs/")), "{keys:?}");
    for k in &keys {
        let bytes = store.get(k).await.unwrap();
        for c in canaries() {
            assert!(!contains(&bytes, &c), "{k} holds a canary in clear");
        }
    }

    // The writer key cannot read; the identity restores from the read-only secondary, whose
    // SAS the restore hands to its movers (the restore side's config names no Secret).
    let out = run(&["describe", "nightly-1", "--details", "-l", "primary"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    std::fs::write(
        r.path().join("lifeboat.yaml"),
        azurite_config(&r, &base, &container, &id, ""),
    )
    .unwrap();
    let out =
        crate::support::lifeboat_cmd(r.path(), &["restore", "--to", "secondary", "-o", "json"])
            .env_remove("AZURITE_ACCOUNT_KEY")
            .env_remove("LIFEBOAT_WRITER_KEY")
            .output()
            .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}{}", stdout(&out), stderr(&out)));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        doc["report"]
    );
    assert_eq!(doc["plan"]["restorePoint"]["name"], "nightly-1");
    let volumes = doc["report"]["volumes"].as_array().unwrap();
    assert!(
        volumes.len() == 2 && volumes.iter().all(|v| v["status"] == "restored"),
        "{volumes:?}"
    );
    let secret = get(&r.secondary.client, "/api/v1/namespaces/shop/secrets/creds")
        .await
        .unwrap();
    use base64::Engine;
    assert_eq!(
        secret["data"]["password"],
        base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE)
    );
    for (claim, original) in &originals {
        let restored = claim_dir(&r.secondary.client, "db", claim).await;
        assert_eq!(&file_digests(&restored), original, "{claim}");
    }
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}

#[test]
fn demo_encrypted_shows_the_write_only_split_and_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        crate::support::lifeboat_cmd(dir.path(), &["demo", "--encrypted", "--output", "json"])
            .output()
            .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("describe shop-1 --details") && err.contains("refused (exit 2)"),
        "the writer's refusal is shown: {err}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.len() >= 10, "{report}");
    for c in checks {
        assert_eq!(c["passed"], true, "{c}");
    }
}
