//! Where backups live: a local directory or an Azure Blob container.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One named location of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Location {
    /// Open this location read-only whatever the command (a restore always does).
    #[serde(default)]
    pub read_only: bool,
    /// A local directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalLocation>,
    /// An Azure Blob container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureLocation>,
    /// The keys of an encrypted repository (references to files or environment variables,
    /// never the keys themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionKeys>,
}

/// `encryption:` of a location: where its keys are. A writer (the backup CronJob, CI) is given
/// `writerKey` only; a reader (the DR side's restore) `identity` only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionKeys {
    /// The writer key: encrypts to the recipients and names chunks; reads nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_key: Option<KeySource>,
    /// The identity: decrypts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<KeySource>,
}

/// Where a key's text is: `{ file: PATH }` or `{ env: VAR }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, untagged)]
pub enum KeySource {
    /// A file (e.g. a Secret or a Key Vault secret mounted into the pod).
    File {
        /// Its path.
        file: PathBuf,
    },
    /// An environment variable (e.g. from a Secret through `envFrom`).
    Env {
        /// Its name.
        env: String,
    },
}

impl KeySource {
    /// Where it is, for messages (never the key).
    pub fn describe(&self) -> String {
        match self {
            Self::File { file } => format!("file {}", file.display()),
            Self::Env { env } => format!("environment variable {env}"),
        }
    }

    /// The key's text; the error says where it looked.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Self::File { file } => std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read the key file {}: {e}", file.display())),
            Self::Env { env } => std::env::var(env)
                .map_err(|_| format!("the environment variable {env} holding the key is not set")),
        }
    }
}

/// The kind of a location, once validated (exactly one of `local` / `azure`).
#[derive(Debug, Clone, Copy)]
pub enum LocationKind<'a> {
    /// A directory.
    Local(&'a LocalLocation),
    /// A blob container.
    Azure(&'a AzureLocation),
}

impl Location {
    /// A local directory location.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self {
            read_only: false,
            local: Some(LocalLocation { path: path.into() }),
            azure: None,
            encryption: None,
        }
    }

    /// The location's kind. Config validation guarantees exactly one is set; a hand-built
    /// `Location` with both prefers `local`.
    pub fn kind(&self) -> Option<LocationKind<'_>> {
        match (&self.local, &self.azure) {
            (Some(l), _) => Some(LocationKind::Local(l)),
            (None, Some(a)) => Some(LocationKind::Azure(a)),
            (None, None) => None,
        }
    }
}

/// `local: { path }`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalLocation {
    /// The directory holding the repository (created on first write). Relative paths are
    /// relative to the config file's directory.
    pub path: PathBuf,
}

/// `azure: { account, container, prefix?, endpoint?, auth, ... }`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureLocation {
    /// Storage account name.
    pub account: String,
    /// Blob container.
    pub container: String,
    /// Prefix inside the container (no leading or trailing `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `primary` (default), `secondary` (the RA-GRS read-only endpoint), or a URL such as
    /// `http://127.0.0.1:10000/devstoreaccount1-secondary` for Azurite.
    #[serde(default)]
    pub endpoint: Endpoint,
    /// How to authenticate.
    pub auth: AzureAuth,
    /// For `auth: sas`: where the SAS token is. Default `{ env: AZURE_STORAGE_SAS_TOKEN }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token: Option<SecretSource>,
    /// For `auth: account-key`: where the account key is. Default `{ env: AZURE_STORAGE_KEY }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key: Option<SecretSource>,
    /// For `managed-identity` (user-assigned) and `workload-identity`: the client id, if not
    /// taken from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Which blob endpoint of the account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Endpoint {
    /// `https://<account>.blob.core.windows.net`
    #[default]
    Primary,
    /// `https://<account>-secondary.blob.core.windows.net` (RA-GRS, read-only)
    Secondary,
    /// An explicit account URL (Azurite, sovereign clouds, private endpoints).
    Url(String),
}

impl Endpoint {
    /// The account URL (no container), without a trailing `/`.
    pub fn account_url(&self, account: &str) -> String {
        match self {
            Endpoint::Primary => format!("https://{account}.blob.core.windows.net"),
            Endpoint::Secondary => format!("https://{account}-secondary.blob.core.windows.net"),
            Endpoint::Url(u) => u.trim_end_matches('/').to_owned(),
        }
    }

    /// Returns true if and only if this endpoint is an RA-GRS secondary (named or by URL).
    pub fn is_secondary(&self, account: &str) -> bool {
        match self {
            Endpoint::Primary => false,
            Endpoint::Secondary => true,
            Endpoint::Url(u) => u.contains(&format!("{account}-secondary")),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Endpoint::Primary => s.serialize_str("primary"),
            Endpoint::Secondary => s.serialize_str("secondary"),
            Endpoint::Url(u) => s.serialize_str(u),
        }
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "primary" => Ok(Endpoint::Primary),
            "secondary" => Ok(Endpoint::Secondary),
            u if u.starts_with("http://") || u.starts_with("https://") => {
                Ok(Endpoint::Url(u.to_owned()))
            }
            other => Err(serde::de::Error::custom(format!(
                "unknown value {other:?}; expected `primary`, `secondary` or an http(s) URL"
            ))),
        }
    }
}

/// `auth:` of an Azure location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AzureAuth {
    /// AKS workload identity (federated token file from the environment).
    WorkloadIdentity,
    /// The VM's or node pool's managed identity.
    ManagedIdentity,
    /// The logged-in Azure CLI (`az login`), for operators.
    AzureCli,
    /// A service principal from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// A SAS token (see `sasToken`).
    Sas,
    /// The storage account key, signed with SharedKey (see `accountKey`).
    AccountKey,
}

/// Where a secret value is read from. Never inline in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file (trailing whitespace ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}
