//! How mover pods open the location, decided before any of them runs (issue 14 item 4, issue 15
//! item 5): workload identity through a service account in each namespace, a credentials Secret
//! the operator keeps in each namespace (`volumes.credentialsSecret`), nothing (a local
//! directory, the nodes' managed identity), or — restore only — the values this process holds,
//! handed over in a Secret created just in time. A location the movers could not open is an
//! error naming the config key to set, before anything is snapshotted or created.
//!
//! Pure: no Kubernetes calls (the orchestrators check that the service account or Secret
//! exists in each namespace). Secret values are read from this process's environment or files
//! and never logged ([`SecretValues`] shows only its keys).

use std::collections::BTreeMap;

use crate::config::{AzureAuth, Location, SecretSource, VolumesConfig};

/// Environment names the movers read a SAS token, an account key, a service principal from
/// when the location is handed to them with a Secret (a `file:` source does not exist in a pod).
const SAS_ENV: &str = "AZURE_STORAGE_SAS_TOKEN";
const KEY_ENV: &str = "AZURE_STORAGE_KEY";
const CLIENT_SECRET_ENV: [&str; 3] = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"];

/// Secret values, by environment name. Debug and Display show the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValues(BTreeMap<String, String>);

impl SecretValues {
    /// The values, to put in a Secret's `data` (never to log).
    pub fn expose(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// What mover pods authenticate with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoverCredentials {
    /// Nothing to provide (why: a local directory, the nodes' managed identity).
    NotNeeded(&'static str),
    /// Azure workload identity: this service account must exist in each namespace.
    WorkloadIdentity {
        /// `volumes.serviceAccount`.
        service_account: String,
    },
    /// The operator's Secret in each namespace (`volumes.credentialsSecret`) with these keys.
    Configured {
        /// The Secret's name.
        secret: String,
        /// The keys it must hold.
        keys: Vec<String>,
    },
    /// This process's values, put in a Secret the restore creates in each namespace for the
    /// fills and deletes after them.
    JustInTime {
        /// The values.
        values: SecretValues,
    },
}

impl MoverCredentials {
    /// One line for the plan and the dry run.
    pub fn describe(&self) -> String {
        match self {
            Self::NotNeeded(why) => format!("movers need no credentials ({why})"),
            Self::WorkloadIdentity { service_account } => format!(
                "movers use workload identity: service account {service_account} in each namespace"
            ),
            Self::Configured { secret, keys } => format!(
                "movers read credentials Secret {secret} in each namespace (keys {})",
                keys.join(", ")
            ),
            Self::JustInTime { values } => format!(
                "movers get read-only credentials ({}) in a Secret created in each namespace just before its fills and deleted after them",
                values.0.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// What must exist in each namespace for [`MoverCredentials`] to work there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need<'a> {
    /// Nothing.
    Nothing,
    /// This service account.
    ServiceAccount(&'a str),
    /// This Secret with these keys.
    Secret(&'a str, &'a [String]),
}

impl MoverCredentials {
    /// What must exist in each namespace (a just-in-time Secret is created, not needed).
    pub fn need(&self) -> Need<'_> {
        match self {
            Self::WorkloadIdentity { service_account } => Need::ServiceAccount(service_account),
            Self::Configured { secret, keys } => Need::Secret(secret, keys),
            Self::NotNeeded(_) | Self::JustInTime { .. } => Need::Nothing,
        }
    }

    /// The error for namespace `ns` given what was found there: whether the service account
    /// exists, and the Secret's keys (`None`: no such Secret). `None` if the movers can open
    /// the location from there.
    pub fn missing_in(
        &self,
        location: &str,
        ns: &str,
        service_account_exists: bool,
        secret_keys: Option<&[String]>,
    ) -> Option<CredentialsError> {
        let err = |reason: String, key: &str| CredentialsError {
            location: location.to_owned(),
            reason,
            key: key.to_owned(),
        };
        match self.need() {
            Need::Nothing => None,
            Need::ServiceAccount(sa) => (!service_account_exists).then(|| {
                err(
                    format!("service account {sa} does not exist in namespace {ns}"),
                    "volumes.serviceAccount (to one that exists in every namespace with volumes)",
                )
            }),
            Need::Secret(secret, keys) => match secret_keys {
                None => Some(err(
                    format!("Secret {secret} does not exist in namespace {ns}"),
                    "volumes.credentialsSecret (to a Secret in every namespace with volumes)",
                )),
                Some(have) => {
                    let lacking: Vec<&str> = keys
                        .iter()
                        .filter(|k| !have.contains(k))
                        .map(String::as_str)
                        .collect();
                    (!lacking.is_empty()).then(|| {
                        err(
                            format!(
                                "Secret {secret} in namespace {ns} lacks key(s) {}",
                                lacking.join(", ")
                            ),
                            "volumes.credentialsSecret (to a Secret holding them)",
                        )
                    })
                }
            },
        }
    }
}

/// A location the movers could not open, and the config key that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mover pods could not open location {location:?}: {reason}; set {key}")]
pub struct CredentialsError {
    /// The location.
    pub location: String,
    /// Why.
    pub reason: String,
    /// The config key to set.
    pub key: String,
}

/// The location as mover pods are given it: `file:` secret sources become the environment
/// names a Secret provides; with a service account, workload identity.
pub fn pod_location(location: &Location, settings: &VolumesConfig) -> Location {
    let mut location = location.clone();
    if let Some(azure) = &mut location.azure {
        if settings.service_account.is_some() {
            azure.auth = AzureAuth::WorkloadIdentity;
        }
        let env = |name: &str| SecretSource {
            env: Some(name.to_owned()),
            file: None,
        };
        if azure.sas_token.as_ref().is_some_and(|s| s.file.is_some()) {
            azure.sas_token = Some(env(SAS_ENV));
        }
        if azure.account_key.as_ref().is_some_and(|s| s.file.is_some()) {
            azure.account_key = Some(env(KEY_ENV));
        }
    }
    location
}

/// Decides how movers open `location` (named `name` in the config). `just_in_time`: the caller
/// (restore) may hand this process's credentials to the movers in a Secret it creates.
pub fn resolve(
    name: &str,
    location: &Location,
    settings: &VolumesConfig,
    just_in_time: bool,
) -> Result<MoverCredentials, CredentialsError> {
    let Some(azure) = &location.azure else {
        return Ok(MoverCredentials::NotNeeded("a local directory"));
    };
    let err = |reason: String, key: &str| CredentialsError {
        location: name.to_owned(),
        reason,
        key: key.to_owned(),
    };
    if let Some(sa) = &settings.service_account {
        return Ok(MoverCredentials::WorkloadIdentity {
            service_account: sa.clone(),
        });
    }
    // (environment name in the pod, where this process reads it)
    let sources: Vec<(String, Option<&SecretSource>, &str)> = match azure.auth {
        AzureAuth::ManagedIdentity => {
            return Ok(MoverCredentials::NotNeeded("the nodes' managed identity"));
        }
        AzureAuth::WorkloadIdentity => {
            return Err(err(
                "its auth is workload-identity, which mover pods get from a federated service account".into(),
                "volumes.serviceAccount",
            ));
        }
        AzureAuth::AzureCli => {
            return Err(err(
                "its auth is azure-cli, an operator's login that pods do not have".into(),
                "volumes.serviceAccount (workload identity) or a location auth the pods can use (sas, account-key)",
            ));
        }
        AzureAuth::Sas => vec![(
            pod_env(azure.sas_token.as_ref(), SAS_ENV),
            azure.sas_token.as_ref(),
            SAS_ENV,
        )],
        AzureAuth::AccountKey => vec![(
            pod_env(azure.account_key.as_ref(), KEY_ENV),
            azure.account_key.as_ref(),
            KEY_ENV,
        )],
        AzureAuth::ClientSecret => CLIENT_SECRET_ENV
            .iter()
            .map(|e| ((*e).to_owned(), None, *e))
            .collect(),
    };
    let keys: Vec<String> = sources.iter().map(|(k, _, _)| k.clone()).collect();
    let configured =
        settings
            .credentials_secret
            .as_ref()
            .map(|secret| MoverCredentials::Configured {
                secret: secret.clone(),
                keys: keys.clone(),
            });
    if !just_in_time {
        return configured.ok_or_else(|| {
            err(
                format!(
                    "its credentials ({}) are in this process's {}, which mover pods do not have",
                    keys.join(", "),
                    if sources
                        .iter()
                        .any(|(_, s, _)| s.is_some_and(|s| s.file.is_some()))
                    {
                        "files"
                    } else {
                        "environment"
                    }
                ),
                "volumes.credentialsSecret (a Secret holding them in each namespace, labelled lifeboat.io/credentials=true) or volumes.serviceAccount (workload identity)",
            )
        });
    }
    // A restore hands over its own (read-only) credentials: the configured Secret is the
    // backed-up cluster's, and lifeboat's credential Secrets are never restored into new
    // namespaces. Only if this process cannot read them is the configured Secret used.
    let mut values = BTreeMap::new();
    for (key, src, default_env) in sources {
        match read(src, default_env) {
            Ok(value) => {
                values.insert(key, value);
            }
            Err(why) => {
                return configured.ok_or_else(|| {
                    err(
                        why,
                        &format!(
                            "locations.{name}.azure (its credential source), volumes.serviceAccount or volumes.credentialsSecret"
                        ),
                    )
                });
            }
        }
    }
    Ok(MoverCredentials::JustInTime {
        values: SecretValues(values),
    })
}

/// The environment name a pod reads a secret from (see [`pod_location`]).
fn pod_env(src: Option<&SecretSource>, default_env: &str) -> String {
    match src {
        Some(SecretSource {
            env: Some(e),
            file: None,
        }) => e.clone(),
        _ => default_env.to_owned(),
    }
}

/// A secret from this process's file or environment, trailing whitespace dropped.
fn read(src: Option<&SecretSource>, default_env: &str) -> Result<String, String> {
    if let Some(file) = src.and_then(|s| s.file.as_ref()) {
        return std::fs::read_to_string(file)
            .map(|s| s.trim_end().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", file.display()));
    }
    let var = src.and_then(|s| s.env.as_deref()).unwrap_or(default_env);
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(format!("environment variable {var} is not set")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(auth: &str, extra: serde_json::Value) -> Location {
        let mut v = serde_json::json!({"azure": {"account": "a", "container": "c", "auth": auth}});
        for (k, x) in extra.as_object().unwrap() {
            v["azure"][k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn credentials_only_in_the_environment_name_the_key_to_set_for_a_backup() {
        let loc = azure(
            "sas",
            serde_json::json!({"sasToken": {"env": "LB_TEST_SAS_NOWHERE"}}),
        );
        let e = resolve("prod", &loc, &VolumesConfig::default(), false).unwrap_err();
        assert!(e.key.starts_with("volumes.credentialsSecret"), "{e}");
        assert!(e.to_string().contains("LB_TEST_SAS_NOWHERE"), "{e}");
        // With the Secret configured, it must hold that key.
        let settings = VolumesConfig {
            credentials_secret: Some("lifeboat-credentials".into()),
            ..VolumesConfig::default()
        };
        assert_eq!(
            resolve("prod", &loc, &settings, false).unwrap(),
            MoverCredentials::Configured {
                secret: "lifeboat-credentials".into(),
                keys: vec!["LB_TEST_SAS_NOWHERE".into()]
            }
        );
    }

    #[test]
    fn a_restore_hands_over_a_file_secret_under_an_environment_name_and_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sas");
        std::fs::write(&file, "sv=2024&sp=rl&sig=SECRET\n").unwrap();
        let loc = azure("sas", serde_json::json!({"sasToken": {"file": file}}));
        let c = resolve("dr", &loc, &VolumesConfig::default(), true).unwrap();
        let MoverCredentials::JustInTime { values } = &c else {
            panic!("{c:?}")
        };
        assert_eq!(values.expose()[SAS_ENV], "sv=2024&sp=rl&sig=SECRET");
        assert!(!format!("{c:?}").contains("SECRET") && !c.describe().contains("SECRET"));
        let pod = pod_location(&loc, &VolumesConfig::default());
        assert_eq!(
            pod.azure.unwrap().sas_token.unwrap().env.as_deref(),
            Some(SAS_ENV)
        );
        // Workload identity and local directories need nothing handed over.
        let sa = VolumesConfig {
            service_account: Some("lifeboat".into()),
            ..VolumesConfig::default()
        };
        assert!(matches!(
            resolve("dr", &loc, &sa, true).unwrap(),
            MoverCredentials::WorkloadIdentity { .. }
        ));
        assert!(matches!(
            resolve(
                "dr",
                &Location::local("/x"),
                &VolumesConfig::default(),
                false
            )
            .unwrap(),
            MoverCredentials::NotNeeded(_)
        ));
    }
}
