//! Storage layer tests: one conformance suite over every backend, then Azurite-only behaviour
//! (RA-GRS secondary through a read+list SAS, pagination, large objects, retries).

mod azurite;
mod conformance;
mod open;
pub mod proxy;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lifeboat::config::{AzureAuth, AzureLocation, Endpoint};
use lifeboat::storage::Writer;
use lifeboat::storage::azure::{AzureBackend, Credential};

/// Azurite's account and its published development key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The Azurite base URL (`http://127.0.0.1:PORT`) from `LIFEBOAT_TEST_AZURITE`, or `None` to skip.
/// Under `CI=true` a missing Azurite is a failure, never a skip.
pub fn azurite() -> Option<String> {
    match std::env::var("LIFEBOAT_TEST_AZURITE") {
        Ok(u) if !u.trim().is_empty() => Some(u.trim().trim_end_matches('/').to_owned()),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "LIFEBOAT_TEST_AZURITE is not set and CI=true: Azurite is required; start it with `.ci/azurite start`"
            )
        }
        _ => {
            eprintln!(
                "skipping: LIFEBOAT_TEST_AZURITE is not set (start Azurite with `.ci/azurite start`)"
            );
            None
        }
    }
}

/// A container name no other test (or test run) uses.
pub fn unique_container(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An account-key location on Azurite's primary (or `-secondary`) endpoint of `base`.
pub fn azurite_location(base: &str, container: &str, secondary: bool) -> AzureLocation {
    let account = if secondary {
        format!("{ACCOUNT}-secondary")
    } else {
        ACCOUNT.to_owned()
    };
    AzureLocation {
        account: ACCOUNT.to_owned(),
        container: container.to_owned(),
        prefix: None,
        endpoint: Endpoint::Url(format!("{base}/{account}")),
        auth: AzureAuth::AccountKey,
        sas_token: None,
        account_key: None,
        client_id: None,
    }
}

/// A fresh container on Azurite's primary, created with the account key; returns its writer.
pub async fn azurite_writer(base: &str, tag: &str) -> (Writer, String) {
    let container = unique_container(tag);
    let backend = AzureBackend::with_credential(
        "primary",
        &azurite_location(base, &container, false),
        Credential::SharedKey(KEY.into()),
    )
    .unwrap();
    assert!(
        backend.create_container().await.unwrap(),
        "container {container} already existed"
    );
    (Writer::new(Arc::new(backend)), container)
}

/// An account SAS for the blob service (`ss=b`, `srt=sco`), signed with Azurite's key.
pub fn account_sas(permissions: &str) -> String {
    let (version, expiry) = ("2019-12-12", "2099-01-01T00:00:00Z");
    // Account SAS string-to-sign for versions before 2020-12-06 (no encryption-scope line).
    let sts = format!("{ACCOUNT}\n{permissions}\nb\nsco\n\n{expiry}\n\n\n{version}\n");
    let key = STANDARD.decode(KEY).unwrap();
    let sig = lifeboat::storage::azure::shared_key::sign(&key, &sts);
    let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    format!("sv={version}&ss=b&srt=sco&sp={permissions}&se={expiry}&sig={sig}")
}

/// A pseudo-random, reproducible byte pattern.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64: fast and incompressible enough to defeat any accidental dedup.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
