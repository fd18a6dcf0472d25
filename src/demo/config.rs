//! The demo's `lifeboat.yaml`: the two simulated clusters, a backup location and its
//! read-only replica (two directories, or Azurite's primary and `-secondary` endpoints), and
//! the restore profile used during the incident.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    AZURITE_ACCOUNT, AZURITE_KEY, CONFIG_FILE, DemoError, MOVER_IMAGE, PRIMARY, PRIMARY_REPO,
    SECONDARY, SECONDARY_REPO, app, io_err,
};
use crate::sim::SimCluster;

/// An account SAS for Azurite's blob service (`ss=b`, `srt=sco`) with `permissions`.
fn azurite_sas(permissions: &str) -> String {
    use base64::Engine as _;
    let (version, expiry) = ("2019-12-12", "2099-01-01T00:00:00Z");
    // Account SAS string-to-sign for service versions before 2020-12-06.
    let sts = format!("{AZURITE_ACCOUNT}\n{permissions}\nb\nsco\n\n{expiry}\n\n\n{version}\n");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .unwrap_or_default();
    let sig = crate::storage::azure::shared_key::sign(&key, &sts);
    let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    format!("sv={version}&ss=b&srt=sco&sp={permissions}&se={expiry}&sig={sig}")
}

pub(super) async fn azurite_reachable(url: &str) -> Result<(), DemoError> {
    let err = |reason: String| DemoError::AzuriteUnreachable {
        url: url.to_owned(),
        reason,
    };
    let u = url::Url::parse(url).map_err(|e| err(e.to_string()))?;
    let host = u.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = u.port_or_known_default().unwrap_or(10000);
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(_) => Err(err("no answer within 5s".to_owned())),
    }
}

/// Writes a new identity and writer key into the workdir (mode 0600); returns their paths
/// (identity, writer key), absolute, as the mover pods read them.
pub(super) fn write_keys(dir: &Path) -> Result<(PathBuf, PathBuf), DemoError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = std::path::absolute(dir).map_err(io_err("resolving the workdir", dir))?;
    let (reader, writer) = crate::repo::crypto::generate().map_err(|e| DemoError::Io {
        what: "generating keys",
        path: dir.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let paths = (dir.join("dr.identity"), dir.join("primary.writer"));
    for (path, text) in [(&paths.0, reader.to_text()), (&paths.1, writer.to_text())] {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io_err("writing a key file", path))?;
    }
    Ok(paths)
}

/// Writes `lifeboat.yaml` into the workdir and returns its locations' description.
pub(super) fn write_config(
    dir: &Path,
    primary: &SimCluster,
    secondary: &SimCluster,
    azurite: Option<&str>,
    keys: Option<&(PathBuf, PathBuf)>,
) -> Result<PathBuf, DemoError> {
    let locations = match azurite {
        None => format!(
            "\
\x20 # The primary region's location (a directory here; an RA-GRS blob container in production).
  primary:
    local: {{ path: {:?} }}
  # Its replica in the secondary region, read-only: the restore reads only this one.
  secondary:
    readOnly: true
    local: {{ path: {:?} }}
",
            dir.join(PRIMARY_REPO),
            dir.join(SECONDARY_REPO)
        ),
        Some(url) => {
            let url = url.trim_end_matches('/');
            let container = format!(
                "lifeboat-demo-{}-{}",
                jiff::Timestamp::now().as_second(),
                std::process::id()
            );
            let key = dir.join("azurite.key");
            let sas = dir.join("secondary.sas");
            std::fs::write(&key, AZURITE_KEY).map_err(io_err("writing the Azurite key", &key))?;
            std::fs::write(&sas, azurite_sas("rl")).map_err(io_err("writing the SAS", &sas))?;
            format!(
                "\
\x20 # Azurite's primary endpoint, written with the account key.
  primary:
    azure:
      account: {AZURITE_ACCOUNT}
      container: {container}
      endpoint: {url}/{AZURITE_ACCOUNT}
      auth: account-key
      accountKey: {{ file: {key:?} }}
  # The RA-GRS secondary endpoint, read with a read+list SAS: it cannot write.
  secondary:
    readOnly: true
    azure:
      account: {AZURITE_ACCOUNT}
      container: {container}
      endpoint: {url}/{AZURITE_ACCOUNT}-secondary
      auth: sas
      sasToken: {{ file: {sas:?} }}
"
            )
        }
    };
    let locations = match keys {
        None => locations,
        Some((identity, writer)) => locations
            .replacen(
                "\n  primary:\n",
                &format!(
                    "\n  primary:\n    # Encrypts and writes; cannot read.\n    encryption: {{ writerKey: {{ file: {writer:?} }} }}\n"
                ),
                1,
            )
            .replacen(
                "\n  secondary:\n",
                &format!(
                    "\n  secondary:\n    # The only key that reads: the DR side's.\n    encryption: {{ identity: {{ file: {identity:?} }} }}\n"
                ),
                1,
            ),
    };
    let (p, s) = (PRIMARY, SECONDARY);
    let zone_map: Vec<String> = p
        .zones()
        .iter()
        .zip(s.zones())
        .map(|(a, b)| format!("{a}: {b}"))
        .collect();
    let text = format!(
        "\
# Written by `lifeboat demo`: two simulated AKS clusters, a backup location and its
# read-only replica in the paired region, and the restore profile used during the incident.
clusters:
  primary: {{ context: {pn}, kubeconfig: {pk:?} }}
  secondary: {{ context: {sn}, kubeconfig: {sk:?} }}
locations:
{locations}defaults: {{ cluster: primary, location: primary }}
# Volume data is moved by Jobs running lifeboat itself (the simulated kubelet runs this image
# with the demo's binary).
volumes:
  moverImage: {MOVER_IMAGE}
  timeoutSeconds: 300
{credentials}# `lifeboat restore --to secondary`: into the secondary cluster, from the read-only replica,
# with the primary region's storage class and zones mapped to the secondary's.
restore:
  secondary:
    cluster: secondary
    from: secondary
    storageClassMap: {{ {psc}: {ssc} }}
    zoneMap: {{ {zones} }}
",
        pn = p.name,
        sn = s.name,
        pk = primary.kubeconfig_path(),
        sk = secondary.kubeconfig_path(),
        psc = app::storage_class(p.name),
        ssc = app::storage_class(s.name),
        zones = zone_map.join(", "),
        credentials = if azurite.is_some() {
            format!(
                "  # The backup's movers read the account key from this Secret (labelled\n  # lifeboat.io/credentials=true: never backed up); a restore hands its own SAS over.\n  credentialsSecret: {}\n",
                app::CREDENTIALS_SECRET
            )
        } else {
            String::new()
        },
    );
    let path = dir.join(CONFIG_FILE);
    std::fs::write(&path, text).map_err(io_err("writing the config", &path))?;
    Ok(path)
}
