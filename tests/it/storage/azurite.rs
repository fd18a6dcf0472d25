//! Azurite-only behaviour: the RA-GRS secondary through a read+list SAS, pagination, a 300 MiB
//! object, retries on injected 503s and none on 403.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lifeboat::config::{AzureAuth, Location, SecretSource};
use lifeboat::storage::azure::{AzureBackend, AzureOptions, Credential};
use lifeboat::storage::local::LocalBackend;
use lifeboat::storage::{
    ObjectRead, PutOutcome, StorageError, TransferOptions, Writer, open_reader, open_writer,
    probe_write,
};
use sha2::{Digest, Sha256};

use super::proxy::{Fault, Proxy};
use super::{KEY, account_sas, azurite, azurite_location, azurite_writer, pattern};

#[tokio::test]
async fn secondary_reads_through_rl_sas_and_refuses_writes() {
    let Some(base) = azurite() else { return };
    let (primary, container) = azurite_writer(&base, "sec").await;
    primary
        .put_if_absent("backups/b1/manifest.json", Bytes::from_static(b"{\"v\":1}"))
        .await
        .unwrap();

    let mut loc = azurite_location(&base, &container, true);
    loc.auth = AzureAuth::Sas;
    let sas = account_sas("rl");
    let secondary =
        AzureBackend::with_credential("secondary", &loc, Credential::Sas(sas.clone())).unwrap();

    assert_eq!(
        secondary.get("backups/b1/manifest.json").await.unwrap(),
        Bytes::from_static(b"{\"v\":1}")
    );
    let keys: Vec<String> = secondary
        .list("backups/")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys, ["backups/b1/manifest.json"]);
    let status = secondary
        .replication_status()
        .await
        .unwrap()
        .expect("a secondary reports replication");
    assert_eq!(status.status, "live");
    assert!(status.last_sync_time.is_some(), "{status:?}");

    // The SAS grants read and list only: a write (bypassing the type system on purpose) is a 403.
    let err =
        lifeboat::storage::ObjectWrite::put_if_absent(&secondary, "x", Bytes::from_static(b"x"))
            .await
            .unwrap_err();
    assert!(
        matches!(err, StorageError::Denied { status: 403, .. }),
        "{err:?}"
    );

    // The same through configuration: SAS from a file, `readOnly: true`, and the doctor's probe.
    let dir = tempfile::tempdir().unwrap();
    let sas_file = dir.path().join("sas");
    std::fs::File::create(&sas_file)
        .unwrap()
        .write_all(format!("{sas}\n").as_bytes())
        .unwrap();
    loc.sas_token = Some(SecretSource {
        env: None,
        file: Some(sas_file),
    });
    let cfg = Location {
        read_only: true,
        encryption: None,
        local: None,
        azure: Some(loc),
    };
    let reader = open_reader("secondary", &cfg).unwrap();
    assert!(
        reader
            .head("backups/b1/manifest.json")
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        open_writer("secondary", &cfg).err(),
        Some(StorageError::ReadOnly { .. })
    ));
    assert!(
        !probe_write("secondary", &cfg).await.unwrap(),
        "the rl SAS must refuse the probe write"
    );

    // The primary through configuration (account key from a file) is writable and leaves no probe behind.
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let mut ploc = azurite_location(&base, &container, false);
    ploc.account_key = Some(SecretSource {
        env: None,
        file: Some(key_file),
    });
    let pcfg = Location {
        read_only: false,
        encryption: None,
        local: None,
        azure: Some(ploc),
    };
    assert!(probe_write("primary", &pcfg).await.unwrap());
    let probes: Vec<String> = primary
        .list(".lifeboat-probe")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    assert!(probes.is_empty(), "{probes:?}");
    assert_eq!(
        open_reader("primary", &pcfg)
            .unwrap()
            .replication_status()
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn listing_pages_over_more_than_5000_blobs() {
    let Some(base) = azurite() else { return };
    let (w, container) = azurite_writer(&base, "page").await;
    const N: usize = 5_123;
    futures::stream::iter(0..N)
        .map(|i| {
            let w = w.clone();
            async move { w.put_if_absent(&format!("many/{i:05}"), Bytes::new()).await }
        })
        .buffer_unordered(32)
        .try_for_each(|o| async move {
            assert_eq!(o, PutOutcome::Created);
            Ok(())
        })
        .await
        .unwrap();

    // List through a counting proxy to see the pages go by.
    let proxy = Proxy::start(&base, 0, Fault::Status(0)).await;
    let via_proxy = AzureBackend::with_credential(
        "paged",
        &azurite_location(&proxy.url, &container, false),
        Credential::SharedKey(KEY.into()),
    )
    .unwrap();
    let keys: Vec<String> = via_proxy
        .list("many/")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    let expected: Vec<String> = (0..N).map(|i| format!("many/{i:05}")).collect();
    assert_eq!(keys, expected);
    let pages = proxy
        .requests()
        .iter()
        .filter(|r| r.contains("comp=list"))
        .count();
    assert!(pages >= 2, "expected at least two list pages, saw {pages}");
}

#[tokio::test]
async fn retries_injected_503_server_busy_then_succeeds() {
    let Some(base) = azurite() else { return };
    let (direct, container) = azurite_writer(&base, "retry").await;
    let proxy = Proxy::start(&base, 3, Fault::Status(503)).await;
    let w = AzureBackend::with_credential(
        "flaky",
        &azurite_location(&proxy.url, &container, false),
        Credential::SharedKey(KEY.into()),
    )
    .unwrap();
    let outcome = lifeboat::storage::ObjectWrite::put_if_absent(&w, "k", Bytes::from_static(b"v"))
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Created);
    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 4, "3 refused tries + 1 forwarded: {reqs:?}");
    assert!(reqs.iter().all(|r| r.starts_with("PUT ")), "{reqs:?}");
    assert_eq!(direct.get("k").await.unwrap(), Bytes::from_static(b"v"));
}

#[tokio::test]
async fn a_403_is_not_retried() {
    let Some(base) = azurite() else { return };
    let (_direct, container) = azurite_writer(&base, "deny").await;
    let proxy = Proxy::start(&base, usize::MAX, Fault::Status(403)).await;
    let r = AzureBackend::with_credential(
        "denied",
        &azurite_location(&proxy.url, &container, false),
        Credential::SharedKey(KEY.into()),
    )
    .unwrap();
    let err = r.get("k").await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Denied {
                status: 403,
                op: "get",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(proxy.requests().len(), 1, "a 403 must not be retried");
}

/// Writes `len` pseudo-random bytes to `path`; returns their sha256.
fn big_file(path: &std::path::Path, len: usize) -> Vec<u8> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = Sha256::new();
    let chunk = 4 << 20;
    for (i, start) in (0..len).step_by(chunk).enumerate() {
        let block = pattern(chunk.min(len - start), i as u64 + 11);
        h.update(&block);
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    h.finalize().to_vec()
}

fn sha256_file(path: &std::path::Path) -> Vec<u8> {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut h).unwrap();
    h.finalize().to_vec()
}

/// Uploads and downloads `src` through `w`, checks the digest, and prints the throughput.
async fn round_trip_300_mib(
    label: &str,
    w: &Writer,
    src: &std::path::Path,
    digest: &[u8],
    dir: &std::path::Path,
) {
    const MIB: f64 = 1024.0 * 1024.0;
    let opts = TransferOptions::default();
    let size = std::fs::metadata(src).unwrap().len();
    let t = Instant::now();
    assert_eq!(
        w.put_file_if_absent("big/object", src, &opts)
            .await
            .unwrap(),
        PutOutcome::Created
    );
    let up = t.elapsed().as_secs_f64();
    assert_eq!(w.head("big/object").await.unwrap().unwrap().size, size);
    let dst = dir.join(format!("download-{label}"));
    let t = Instant::now();
    assert_eq!(
        w.get_to_file("big/object", &dst, &opts).await.unwrap(),
        size
    );
    let down = t.elapsed().as_secs_f64();
    assert!(
        sha256_file(&dst) == digest,
        "{label}: downloaded object differs"
    );
    eprintln!(
        "300 MiB {label}: upload {:.1} MiB/s ({up:.2} s), download {:.1} MiB/s ({down:.2} s) [block {} MiB x {}]",
        size as f64 / MIB / up,
        size as f64 / MIB / down,
        opts.block_size >> 20,
        opts.concurrency
    );
}

#[tokio::test]
async fn a_300_mib_object_in_staged_blocks_and_ranged_reads() {
    let Some(base) = azurite() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source");
    let digest = big_file(&src, 300 << 20);

    let (azure, _) = azurite_writer(&base, "big").await;
    round_trip_300_mib("azurite", &azure, &src, &digest, dir.path()).await;
    let local = Writer::new(Arc::new(LocalBackend::new(dir.path().join("repo"))));
    round_trip_300_mib("local", &local, &src, &digest, dir.path()).await;
}

#[tokio::test]
async fn a_missing_container_is_not_a_missing_object() {
    let Some(base) = azurite() else { return };
    let loc = azurite_location(&base, &super::unique_container("nocont"), false);
    let b =
        AzureBackend::with_credential("nocont", &loc, Credential::SharedKey(KEY.into())).unwrap();
    let err = b.get("k").await.unwrap_err();
    assert!(
        matches!(err, StorageError::Azure { op: "get", .. }),
        "{err:?}"
    );
    assert_eq!(b.head("k").await.unwrap(), None);
    // create_location makes it usable.
    assert!(
        lifeboat::storage::ObjectWrite::create_location(&b)
            .await
            .unwrap()
    );
    assert!(matches!(
        b.get("k").await.unwrap_err(),
        StorageError::NotFound { .. }
    ));
}

#[tokio::test]
async fn a_try_that_times_out_is_retried() {
    let Some(base) = azurite() else { return };
    let (direct, container) = azurite_writer(&base, "hang").await;
    direct
        .put_if_absent("k", Bytes::from_static(b"v"))
        .await
        .unwrap();
    let proxy = Proxy::start(&base, 1, Fault::Hang).await;
    let opts = AzureOptions {
        try_timeout: std::time::Duration::from_millis(500),
        initial_delay: std::time::Duration::from_millis(10),
        max_retries: 3,
    };
    let loc = azurite_location(&proxy.url, &container, false);
    let r =
        AzureBackend::with_options("hung", &loc, Credential::SharedKey(KEY.into()), &opts).unwrap();
    assert_eq!(r.get("k").await.unwrap(), Bytes::from_static(b"v"));
    assert_eq!(
        proxy.requests().len(),
        2,
        "one hung try, one answered: {:?}",
        proxy.requests()
    );
}
