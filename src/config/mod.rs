//! The config file (`lifeboat.yaml`): clusters, locations, restore profiles.
//!
//! Loading is two steps: serde parses the YAML (errors carry the key path, line and column),
//! then [`Config::validate`] checks what types cannot say (exactly one location kind, references
//! between sections). Both report `file: key.path: what is wrong; what is expected`. No network
//! I/O happens here.

mod location;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use location::*;
pub use volumes::VolumesConfig;

/// The file name looked for in the working directory when `--config` is not given.
pub const DEFAULT_FILE: &str = "lifeboat.yaml";
/// Environment variable naming the config file when `--config` is not given and
/// `./lifeboat.yaml` does not exist.
pub const ENV_VAR: &str = "LIFEBOAT_CONFIG";
/// The location name of the embedded default.
pub const DEFAULT_LOCATION: &str = "default";
/// The directory of the embedded default location (relative to the working directory).
pub const DEFAULT_LOCATION_PATH: &str = "lifeboat-backups";

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Named Kubernetes clusters.
    #[serde(default)]
    pub clusters: BTreeMap<String, Cluster>,
    /// Named backup locations.
    #[serde(default)]
    pub locations: BTreeMap<String, Location>,
    /// Named restore profiles (`restore --to NAME`).
    #[serde(default)]
    pub restore: BTreeMap<String, RestoreProfile>,
    /// Which cluster and location commands use when none is named.
    #[serde(default)]
    pub defaults: Defaults,
    /// Default filters of `lifeboat backup` (flags override them field by field).
    #[serde(default)]
    pub backup: crate::filter::Filters,
    /// How volume data is moved.
    #[serde(default)]
    pub volumes: VolumesConfig,
    /// Where the config came from (not part of the file).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// A Kubernetes cluster: a kubeconfig context, or the cluster lifeboat runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// Context name in the kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Kubeconfig file; default: `$KUBECONFIG`, then `~/.kube/config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Use the in-cluster service account (the CronJob case).
    #[serde(default)]
    pub in_cluster: bool,
}

/// `defaults:`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    /// Cluster used when `--cluster` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Location used when `--to`/`--location` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// What to do with objects that already exist in the target cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ExistingPolicy {
    /// Leave them and report them.
    #[default]
    Skip,
    /// Patch them to the backed-up spec.
    Update,
}

/// A restore profile: where to read, which cluster to write, how to map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreProfile {
    /// Target cluster (a key of `clusters`).
    pub cluster: String,
    /// Location read (a key of `locations`); always opened read-only.
    pub from: String,
    /// Storage class renames, primary name → secondary name.
    #[serde(default)]
    pub storage_class_map: BTreeMap<String, String>,
    /// VolumeAttributesClass renames, primary name → secondary name.
    #[serde(default)]
    pub volume_attributes_class_map: BTreeMap<String, String>,
    /// Storage account renames for restored pre-provisioned volumes (Azure Files, Blob, NFS on
    /// Azure), primary account → the secondary's.
    #[serde(default)]
    pub storage_account_map: BTreeMap<String, String>,
    /// Zone renames, e.g. `eastus2-1: centralus-1`.
    #[serde(default)]
    pub zone_map: BTreeMap<String, String>,
    /// Namespace renames.
    #[serde(default)]
    pub namespace_map: BTreeMap<String, String>,
    /// Namespaces to restore (globs); empty means all.
    #[serde(default)]
    pub include_namespaces: Vec<String>,
    /// Namespaces not to restore (globs).
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// Resources to restore (`deployments.apps`, globs); empty means all.
    #[serde(default)]
    pub include_resources: Vec<String>,
    /// Resources not to restore.
    #[serde(default)]
    pub exclude_resources: Vec<String>,
    /// Objects that already exist.
    #[serde(default)]
    pub existing: ExistingPolicy,
}

/// A config problem, always naming the file and the key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not match the schema.
    #[error("{file}: {key_path}: {message}{}", position.map(|(l, c)| format!(" (line {l}, column {c})")).unwrap_or_default())]
    Parse {
        /// The file.
        file: String,
        /// Dotted path of the offending key (`locations.dr.azure.auth`), `.` for the root.
        key_path: String,
        /// What is wrong and what is expected.
        message: String,
        /// Line and column, where known.
        position: Option<(usize, usize)>,
    },
    /// The YAML parses but is inconsistent.
    #[error("{file}: {key_path}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// Dotted path of the offending key.
        key_path: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

impl Config {
    /// The config used when no file is found: one writable local location,
    /// `./lifeboat-backups`, and the current kubeconfig context.
    pub fn embedded_default() -> Self {
        let mut locations = BTreeMap::new();
        locations.insert(
            DEFAULT_LOCATION.to_owned(),
            Location::local(DEFAULT_LOCATION_PATH),
        );
        Self {
            locations,
            ..Self::default()
        }
    }

    /// Finds the config file: `explicit` if given, else `./lifeboat.yaml` if it exists, else
    /// `$LIFEBOAT_CONFIG` if set. `None` means the embedded default applies.
    pub fn discover(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return Some(p.to_owned());
        }
        let local = PathBuf::from(DEFAULT_FILE);
        if local.is_file() {
            return Some(local);
        }
        std::env::var_os(ENV_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }

    /// Reads, parses and validates a config file. Relative `local.path`s are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::parse(&text, &path.display().to_string())?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        for loc in cfg.locations.values_mut() {
            if let Some(local) = &mut loc.local
                && local.path.is_relative()
            {
                local.path = base.join(&local.path);
            }
        }
        cfg.source = Some(path.to_owned());
        Ok(cfg)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: Config = match serde_path_to_error::deserialize(de) {
            Ok(cfg) => cfg,
            Err(e) => {
                let key_path = e.path().to_string();
                let inner = e.into_inner();
                let position = inner.location().map(|l| (l.line(), l.column()));
                let message = describe_yaml_error(&inner, &key_path);
                return Err(ConfigError::Parse {
                    file: file.to_owned(),
                    key_path,
                    message,
                    position,
                });
            }
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Checks what the types cannot: one kind per location, names and references.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key_path: String, message: String| {
            Err(ConfigError::Invalid {
                file: file.to_owned(),
                key_path,
                message,
            })
        };
        if !(1..=64).contains(&self.volumes.parallelism) {
            return invalid(
                "volumes.parallelism".into(),
                format!(
                    "{} is out of range; expected 1 to 64",
                    self.volumes.parallelism
                ),
            );
        }
        if self.volumes.lease_seconds < 3 {
            return invalid(
                "volumes.leaseSeconds".into(),
                format!(
                    "{} is too short; expected at least 3 seconds",
                    self.volumes.lease_seconds
                ),
            );
        }
        if self.volumes.timeout_seconds == 0 {
            return invalid(
                "volumes.timeoutSeconds".into(),
                "0; expected the seconds one volume may take".into(),
            );
        }
        for (name, c) in &self.clusters {
            match (&c.context, c.in_cluster) {
                (Some(_), true) => {
                    return invalid(
                        format!("clusters.{name}"),
                        "both `context` and `inCluster: true` are set; expected one of them".into(),
                    );
                }
                (Some(ctx), false) if ctx.is_empty() => {
                    return invalid(
                        format!("clusters.{name}.context"),
                        "empty; expected a kubeconfig context name".into(),
                    );
                }
                _ => {}
            }
        }
        for (name, loc) in &self.locations {
            let at = format!("locations.{name}");
            if !is_valid_name(name) {
                return invalid(
                    at,
                    "invalid name; expected lowercase letters, digits and '-'".into(),
                );
            }
            match (&loc.local, &loc.azure) {
                (Some(_), Some(_)) => {
                    return invalid(
                        at,
                        "both `local` and `azure` are set; expected exactly one".into(),
                    );
                }
                (None, None) => {
                    return invalid(
                        at,
                        "no kind; expected exactly one of `local: { path }` or `azure: { ... }`"
                            .into(),
                    );
                }
                (Some(l), None) if l.path.as_os_str().is_empty() => {
                    return invalid(
                        format!("{at}.local.path"),
                        "empty; expected a directory path".into(),
                    );
                }
                (None, Some(a)) => validate_azure(a)
                    .or_else(|(key, msg)| invalid(format!("{at}.azure.{key}"), msg))?,
                _ => {}
            }
        }
        for (name, r) in &self.restore {
            let at = format!("restore.{name}");
            if !self.clusters.contains_key(&r.cluster) {
                return invalid(
                    format!("{at}.cluster"),
                    unknown_ref("cluster", &r.cluster, self.clusters.keys()),
                );
            }
            if !self.locations.contains_key(&r.from) {
                return invalid(
                    format!("{at}.from"),
                    unknown_ref("location", &r.from, self.locations.keys()),
                );
            }
            for (field, map) in [
                ("storageClassMap", &r.storage_class_map),
                ("volumeAttributesClassMap", &r.volume_attributes_class_map),
                ("storageAccountMap", &r.storage_account_map),
                ("zoneMap", &r.zone_map),
                ("namespaceMap", &r.namespace_map),
            ] {
                if let Some((k, _)) = map.iter().find(|(k, v)| k.is_empty() || v.is_empty()) {
                    return invalid(
                        format!("{at}.{field}.{k}"),
                        "empty name; expected `from: to` with both names set".into(),
                    );
                }
            }
        }
        if let Some(c) = &self.defaults.cluster
            && !self.clusters.contains_key(c)
        {
            return invalid(
                "defaults.cluster".into(),
                unknown_ref("cluster", c, self.clusters.keys()),
            );
        }
        if let Some(l) = &self.defaults.location
            && !self.locations.contains_key(l)
        {
            return invalid(
                "defaults.location".into(),
                unknown_ref("location", l, self.locations.keys()),
            );
        }
        Ok(())
    }

    /// The location named `name`, or the default one (`defaults.location`, else the only one).
    pub fn location(&self, name: Option<&str>) -> Result<(&str, &Location), ConfigError> {
        let file = self.file_name();
        let wanted = match name.or(self.defaults.location.as_deref()) {
            Some(n) => n,
            None if self.locations.len() == 1 => self
                .locations
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or_default(),
            None => {
                return Err(ConfigError::Invalid {
                    file,
                    key_path: "defaults.location".into(),
                    message: format!(
                        "no location named and no default; pass --location NAME (one of {}) or set defaults.location",
                        join_names(self.locations.keys())
                    ),
                });
            }
        };
        self.locations
            .get_key_value(wanted)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| ConfigError::Invalid {
                file,
                key_path: format!("locations.{wanted}"),
                message: unknown_ref("location", wanted, self.locations.keys()),
            })
    }

    /// The cluster named `name`, or the default one (`defaults.cluster`, else the only one).
    /// `Ok(None)` when the config names no cluster at all: the current kubeconfig context applies.
    pub fn cluster(&self, name: Option<&str>) -> Result<Option<(&str, &Cluster)>, ConfigError> {
        let wanted = match name.or(self.defaults.cluster.as_deref()) {
            Some(n) => n,
            None if self.clusters.is_empty() => return Ok(None),
            None if self.clusters.len() == 1 => self
                .clusters
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or_default(),
            None => {
                return Err(ConfigError::Invalid {
                    file: self.file_name(),
                    key_path: "defaults.cluster".into(),
                    message: format!(
                        "no cluster named and no default; pass --cluster NAME (one of {}) or set defaults.cluster",
                        join_names(self.clusters.keys())
                    ),
                });
            }
        };
        self.clusters
            .get_key_value(wanted)
            .map(|(k, v)| Some((k.as_str(), v)))
            .ok_or_else(|| ConfigError::Invalid {
                file: self.file_name(),
                key_path: format!("clusters.{wanted}"),
                message: unknown_ref("cluster", wanted, self.clusters.keys()),
            })
    }

    /// The file name for messages (`<embedded default>` when there is none).
    pub fn file_name(&self) -> String {
        self.source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<embedded default config>".into())
    }
}

fn validate_azure(a: &AzureLocation) -> Result<(), (&'static str, String)> {
    let account_ok = (3..=24).contains(&a.account.len())
        && a.account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !account_ok {
        return Err((
            "account",
            format!(
                "{:?} is not a storage account name; expected 3-24 lowercase letters and digits",
                a.account
            ),
        ));
    }
    let c = &a.container;
    let container_ok = (3..=63).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !c.starts_with('-')
        && !c.ends_with('-')
        && !c.contains("--");
    if !container_ok {
        return Err((
            "container",
            format!(
                "{c:?} is not a container name; expected 3-63 lowercase letters, digits and single '-'"
            ),
        ));
    }
    if let Some(p) = &a.prefix
        && (p.starts_with('/')
            || p.ends_with('/')
            || p.split('/').any(|s| s.is_empty() || s == ".."))
    {
        return Err((
            "prefix",
            format!("{p:?}: expected a relative path without leading or trailing '/' or '..'"),
        ));
    }
    for (key, src) in [("sasToken", &a.sas_token), ("accountKey", &a.account_key)] {
        if let Some(s) = src
            && s.env.is_some() == s.file.is_some()
        {
            return Err((
                key,
                "expected exactly one of `env: VAR` or `file: PATH`".into(),
            ));
        }
    }
    match a.auth {
        AzureAuth::Sas if a.account_key.is_some() => Err((
            "accountKey",
            "set, but auth is `sas`; remove it or use `auth: account-key`".into(),
        )),
        AzureAuth::AccountKey if a.sas_token.is_some() => Err((
            "sasToken",
            "set, but auth is `account-key`; remove it or use `auth: sas`".into(),
        )),
        _ => Ok(()),
    }
}

fn is_valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn join_names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none defined".into()
    } else {
        v.join(", ")
    }
}

fn unknown_ref<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    format!(
        "unknown {what} {name:?}; expected one of: {}",
        join_names(known)
    )
}

/// serde_yaml's messages say "unknown variant `key`"; users write values, not variants.
fn describe_yaml_error(e: &serde_yaml_ng::Error, key_path: &str) -> String {
    let msg = e.to_string();
    // serde_yaml_ng prefixes some messages with the same key path we report ourselves.
    let msg = msg
        .strip_prefix(&format!("{key_path}: "))
        .map(str::to_owned)
        .unwrap_or(msg);
    // Drop the trailing " at line L column C": the position is reported separately.
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    };
    msg.replace("unknown variant", "unknown value")
        .replace("unknown field", "unknown key")
}

#[cfg(test)]
mod tests;
