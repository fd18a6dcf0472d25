//! Mover credentials (issue 14 item 4, issue 15 item 5), against Azurite: a backup whose movers
//! could not open the location stops before any snapshot, naming the key to set; lifeboat's own
//! credentials Secret is never backed up; a restore into namespaces that do not exist yet hands
//! its movers the restore side's read-only credentials in a Secret of its own, deleted after the
//! fills.

use serde_json::{Value, json};

use super::{Regions, get};
use crate::seed::post;
use crate::storage::{KEY, account_sas, azurite, azurite_writer};
use crate::support::{lifeboat_cmd, stderr, stdout};
use crate::volumes::claim_dir;

/// Config: Azurite's primary endpoint written with the account key from the environment, its
/// `-secondary` endpoint read with a read+list SAS from a file; `volumes` as given.
fn config(r: &Regions, base: &str, container: &str, volumes: &str) -> String {
    let sas_file = r.path().join("secondary.sas");
    std::fs::write(&sas_file, account_sas("rl")).unwrap();
    format!(
        "clusters:\n  primary: {{ context: primary, kubeconfig: {:?} }}\n  secondary: {{ context: secondary, kubeconfig: {:?} }}\n\
         locations:\n\
         \x20 primary:\n    azure: {{ account: devstoreaccount1, container: {container}, endpoint: '{base}/devstoreaccount1', auth: account-key, accountKey: {{ env: AZURITE_ACCOUNT_KEY }} }}\n\
         \x20 dr:\n    readOnly: true\n    azure: {{ account: devstoreaccount1, container: {container}, endpoint: '{base}/devstoreaccount1-secondary', auth: sas, sasToken: {{ file: {sas_file:?} }} }}\n\
         defaults: {{ cluster: primary, location: primary }}\n\
         volumes: {{ moverImage: \"lifeboat:dev\", leaseSeconds: 3, timeoutSeconds: 120{volumes} }}\n\
         restore:\n  secondary: {{ cluster: secondary, from: dr, zoneMap: {{ eastus2-1: centralus-1, eastus2-2: centralus-2, eastus2-3: centralus-3 }} }}\n",
        r.primary.cluster.kubeconfig_path(),
        r.secondary.cluster.kubeconfig_path(),
    )
}

async fn items(client: &kube::Client, path: &str) -> Vec<Value> {
    get(client, path)
        .await
        .map(|l| l["items"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn movers_get_credentials_checked_before_a_backup_and_just_in_time_for_a_restore() {
    let Some(base) = azurite() else { return };
    let r = Regions::new().await;
    let (_, container) = azurite_writer(&base, "movercreds").await;
    let primary = &r.primary.client;
    let vol0 = claim_dir(primary, "db", "data-postgres-0").await;
    std::fs::write(vol0.join("PG_VERSION"), "17\n").unwrap();
    let run = |args: &[&str]| {
        lifeboat_cmd(r.path(), args)
            .env("AZURITE_ACCOUNT_KEY", KEY)
            .output()
            .unwrap()
    };

    // The key only in the operator's environment: the movers could not open the location.
    std::fs::write(
        r.path().join("lifeboat.yaml"),
        config(&r, &base, &container, ""),
    )
    .unwrap();
    let out = run(&["backup", "--name", "b0"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("set volumes.credentialsSecret") && err.contains("AZURITE_ACCOUNT_KEY"),
        "{err}"
    );
    assert!(
        items(primary, "/apis/snapshot.storage.k8s.io/v1/volumesnapshots")
            .await
            .is_empty(),
        "a snapshot was created"
    );
    // Scripts get the same in the one JSON document.
    let out = run(&["backup", "--name", "b0", "-o", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["exitCode"], 2, "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("volumes.credentialsSecret"),
        "{doc}"
    );

    // The configured Secret, labelled as lifeboat's: the backup moves the data, and the
    // Secret is not in it.
    let secret = json!({
        "metadata": {"name": "lifeboat-credentials", "labels": {"lifeboat.io/credentials": "true"}},
        "stringData": {"AZURITE_ACCOUNT_KEY": KEY},
    });
    post(primary, "/api/v1/namespaces/db/secrets", secret).await;
    std::fs::write(
        r.path().join("lifeboat.yaml"),
        config(
            &r,
            &base,
            &container,
            ", credentialsSecret: lifeboat-credentials",
        ),
    )
    .unwrap();
    let out = run(&["backup", "--name", "b1", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // The restore side's config names no Secret: its SAS (a file) is handed to the movers.
    std::fs::write(
        r.path().join("lifeboat.yaml"),
        config(&r, &base, &container, ""),
    )
    .unwrap();
    let out = run(&["restore", "--to", "secondary", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Movers: movers get read-only credentials (AZURE_STORAGE_SAS_TOKEN) in a Secret created in each namespace"),
        "{}",
        stdout(&out)
    );
    let out = run(&["restore", "--to", "secondary", "-o", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}{}", stdout(&out), stderr(&out)));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        doc["report"]
    );
    let items_of_plan = doc["plan"]["items"].as_array().unwrap();
    let own = items_of_plan
        .iter()
        .find(|i| i["kind"] == "Secret" && i["name"] == "lifeboat-credentials");
    assert!(
        own.is_none(),
        "lifeboat's credentials were backed up: {own:?}"
    );
    let volumes = doc["report"]["volumes"].as_array().unwrap();
    assert!(
        !volumes.is_empty() && volumes.iter().all(|v| v["status"] == "restored"),
        "{volumes:?}"
    );
    let secondary = &r.secondary.client;
    let restored0 = claim_dir(secondary, "db", "data-postgres-0").await;
    assert_eq!(
        std::fs::read(restored0.join("PG_VERSION")).unwrap(),
        b"17\n"
    );
    // No credentials Secret remains, lifeboat's or any.
    let left = items(
        secondary,
        "/api/v1/secrets?labelSelector=lifeboat.io%2Fcredentials",
    )
    .await;
    assert!(left.is_empty(), "{left:?}");
    let names: Vec<String> = items(secondary, "/api/v1/namespaces/db/secrets")
        .await
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("credentials")),
        "{names:?}"
    );
    r.primary.cluster.shutdown().await.unwrap();
    r.secondary.cluster.shutdown().await.unwrap();
}
