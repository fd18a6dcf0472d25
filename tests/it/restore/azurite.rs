//! The incident path for real storage: backup to Azurite's primary endpoint, restore reading
//! through the RA-GRS `-secondary` endpoint with a read+list-only SAS (any write would be a 403
//! and fail the restore).

use serde_json::Value;

use super::{Regions, get};
use crate::storage::{KEY, account_sas, azurite, azurite_writer};
use crate::support::{lifeboat_cmd, stderr, stdout};

#[tokio::test(flavor = "multi_thread")]
async fn restore_to_secondary_reads_the_geo_secondary_through_a_read_only_sas() {
    let Some(base) = azurite() else { return };
    let r = Regions::new().await;
    let (_, container) = azurite_writer(&base, "restore").await;
    let sas_file = r.path().join("secondary.sas");
    std::fs::write(&sas_file, account_sas("rl")).unwrap();
    let cfg = format!(
        "clusters:\n  primary: {{ context: primary, kubeconfig: {:?} }}\n  secondary: {{ context: secondary, kubeconfig: {:?} }}\n\
         locations:\n\
         \x20 primary:\n    azure: {{ account: devstoreaccount1, container: {container}, prefix: aks-prod, endpoint: '{base}/devstoreaccount1', auth: account-key, accountKey: {{ env: AZURITE_ACCOUNT_KEY }} }}\n\
         \x20 dr:\n    readOnly: true\n    azure: {{ account: devstoreaccount1, container: {container}, prefix: aks-prod, endpoint: '{base}/devstoreaccount1-secondary', auth: sas, sasToken: {{ file: {sas_file:?} }} }}\n\
         defaults: {{ cluster: primary, location: primary }}\n\
         restore:\n  secondary: {{ cluster: secondary, from: dr, zoneMap: {{ eastus2-1: centralus-1 }} }}\n",
        r.primary.cluster.kubeconfig_path(),
        r.secondary.cluster.kubeconfig_path(),
    );
    std::fs::write(r.path().join("lifeboat.yaml"), cfg).unwrap();
    let run = |args: &[&str]| {
        lifeboat_cmd(r.path(), args)
            .env("AZURITE_ACCOUNT_KEY", KEY)
            .output()
            .unwrap()
    };

    let out = run(&["backup", "--no-volumes", "--name", "nightly-1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // The reader really cannot write: doctor's probe is refused.
    let out = run(&["doctor", "-l", "dr", "-o", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["locations"][0]["observedAccess"], "read-only", "{doc}");

    let out = run(&["restore", "--to", "secondary", "--no-volumes", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["report"]["failed"].as_array().unwrap().is_empty(),
        "{}",
        doc["report"]
    );
    assert_eq!(doc["plan"]["restorePoint"]["name"], "nightly-1");
    assert_eq!(
        doc["plan"]["restorePoint"]["replication"]["status"], "live",
        "RA-GRS status reported"
    );
    assert!(doc["plan"]["restorePoint"]["replication"]["lastSyncTime"].is_string());
    let web = get(
        &r.secondary.client,
        "/apis/apps/v1/namespaces/shop/deployments/web",
    )
    .await;
    assert!(web.is_some(), "the app is back in the secondary");
    let sc = get(
        &r.secondary.client,
        "/apis/storage.k8s.io/v1/storageclasses/zoned",
    )
    .await
    .unwrap();
    assert_eq!(
        sc["allowedTopologies"][0]["matchLabelExpressions"][0]["values"][0],
        "centralus-1"
    );
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}
