//! Backup schedules (`schedules/<name>.yaml`): when a backup runs, what it takes, where it goes,
//! what retention keeps, and how the in-cluster CronJob that runs it looks.
//!
//! Loading is parse (serde, errors carry the key path, line and column) then [`Schedule::validate`]
//! (the cron expression, names, TTL and retention). Errors are [`ConfigError`]s naming the file and
//! the key, so the CLI reports them with exit code 2 like config-file errors. The manifests that
//! run a schedule in a cluster are built by [`render`]. No I/O beyond reading the file.

pub mod render;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::backup::Filters;
use crate::config::{Config, ConfigError};
use crate::repo::retention::RetentionPolicy;

/// The manifest label that marks a backup as taken by a schedule (its value is the schedule name).
pub const SCHEDULE_LABEL: &str = "lifeboat.io/schedule";
/// The namespace the CronJob runs in when the schedule names none.
pub const DEFAULT_NAMESPACE: &str = "lifeboat";
/// The ServiceAccount the CronJob runs as when the schedule names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "lifeboat";
/// Where the rendered CronJob mounts its ConfigMap (the config and the schedule file).
pub const CONFIG_MOUNT: &str = "/etc/lifeboat";
/// The longest schedule name: the CronJob is `lifeboat-<name>` and Kubernetes caps CronJob names
/// at 52 characters (the controller appends 11 for its Jobs).
pub const MAX_NAME_LEN: usize = 52 - "lifeboat-".len();

/// One schedule file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    /// The schedule's name: the file is `<name>.yaml`, backups are `<name>-<UTC time>`.
    pub name: String,
    /// Five-field cron expression (minute hour day-of-month month day-of-week) or a macro such as
    /// `@daily`, as Kubernetes CronJobs read it.
    pub schedule: String,
    /// Cluster to back up (a key of `clusters` in the config); default: the config's default.
    /// In the rendered CronJob it becomes the cluster the pod runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Location written (a key of `locations`); default: the config's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// What to take, as the config's `backup:`; fields set here win over the config's.
    #[serde(default)]
    pub backup: Filters,
    /// Whether volume data is backed up (`false`: configuration only).
    #[serde(default = "yes")]
    pub volumes: bool,
    /// Labels recorded in each backup's manifest (besides `lifeboat.io/schedule`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Each backup's own expiry (`720h`, `30d`, `90m`, `3600s`), as `backup --ttl`: such a
    /// backup is kept until then and deleted after, whatever `retention` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Which of this schedule's backups retention keeps after each run.
    #[serde(default)]
    pub retention: RetentionPolicy,
    /// How the in-cluster CronJob runs.
    #[serde(default)]
    pub cron_job: CronJobSpec,
}

fn yes() -> bool {
    true
}

/// `cronJob:` of a schedule: the in-cluster bits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CronJobSpec {
    /// Namespace of the CronJob, its ServiceAccount and the `lifeboat-status` ConfigMap.
    pub namespace: String,
    /// Container image; default `ghcr.io/lifeboat/lifeboat:<this version>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// IANA time zone of the cron expression (`Etc/UTC`); default: the controller's (UTC on AKS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Render the CronJob suspended.
    pub suspend: bool,
    /// The pod's identity.
    pub service_account: ServiceAccountSpec,
    /// Container resource requests and limits.
    pub resources: ResourcesSpec,
    /// Seconds after the scheduled time during which a missed run may still start.
    pub starting_deadline_seconds: i64,
    /// Finished Jobs kept for inspection.
    pub successful_jobs_history_limit: i32,
    /// Failed Jobs kept for inspection.
    pub failed_jobs_history_limit: i32,
    /// Retries of a failed run within the same schedule slot (each retry is a new backup name).
    pub backoff_limit: i32,
    /// Seconds after which a run is killed; default: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
}

impl Default for CronJobSpec {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            image: None,
            time_zone: None,
            suspend: false,
            service_account: ServiceAccountSpec::default(),
            resources: ResourcesSpec::default(),
            // A nightly run that the controller missed by up to an hour still beats none.
            starting_deadline_seconds: 3600,
            successful_jobs_history_limit: 3,
            failed_jobs_history_limit: 3,
            backoff_limit: 0,
            active_deadline_seconds: None,
        }
    }
}

/// `cronJob.serviceAccount:`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceAccountSpec {
    /// ServiceAccount name.
    pub name: String,
    /// Client id of the Azure managed identity (or app) federated with this ServiceAccount, for
    /// AKS workload identity; required when the location uses `auth: workload-identity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Default for ServiceAccountSpec {
    fn default() -> Self {
        Self {
            name: DEFAULT_SERVICE_ACCOUNT.to_owned(),
            client_id: None,
        }
    }
}

/// `cronJob.resources:` (Kubernetes quantities; numbers may be written unquoted).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResourcesSpec {
    /// Requests, e.g. `cpu: 250m`, `memory: 256Mi`.
    #[serde(deserialize_with = "quantities")]
    pub requests: BTreeMap<String, String>,
    /// Limits, e.g. `memory: 1Gi`.
    #[serde(deserialize_with = "quantities")]
    pub limits: BTreeMap<String, String>,
}

impl Default for ResourcesSpec {
    fn default() -> Self {
        // Listing and archiving stream, so memory stays flat whatever the cluster size; the
        // limit leaves room for zstd's multithreaded compression.
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Self {
            requests: map(&[("cpu", "250m"), ("memory", "256Mi")]),
            limits: map(&[("memory", "1Gi")]),
        }
    }
}

/// A map of quantities where `cpu: 2` (a YAML number) means the quantity `"2"`.
fn quantities<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Quantity {
        Text(String),
        Int(i64),
        Float(f64),
    }
    let raw = BTreeMap::<String, Quantity>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, q)| {
            let v = match q {
                Quantity::Text(s) => s,
                Quantity::Int(i) => i.to_string(),
                Quantity::Float(f) => f.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// The cron fields, in order, as errors name them, with their ranges.
const CRON_FIELDS: [(&str, u8, u8); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// The macros Kubernetes accepts in place of five fields.
const CRON_MACROS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

impl Schedule {
    /// Reads, parses and validates a schedule file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let schedule = Self::parse(&text, &path.display().to_string())?;
        // `schedule run NAME` finds a schedule by its file name, so the two must agree.
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            && stem != schedule.name
        {
            return Err(ConfigError::Invalid {
                file: path.display().to_string(),
                key_path: "name".into(),
                message: format!(
                    "{:?} differs from the file name {stem:?}; expected the file to be {}.yaml \
                     (`lifeboat schedule run NAME` looks schedules up by file name)",
                    schedule.name, schedule.name
                ),
            });
        }
        Ok(schedule)
    }

    /// Parses and validates schedule text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let schedule: Schedule = serde_path_to_error::deserialize(de).map_err(|e| {
            let key_path = e.path().to_string();
            let inner = e.into_inner();
            ConfigError::Parse {
                file: file.to_owned(),
                position: inner.location().map(|l| (l.line(), l.column())),
                message: describe_yaml_error(&inner, &key_path),
                key_path,
            }
        })?;
        schedule.validate(file)?;
        Ok(schedule)
    }

    /// Checks what the types cannot: the name, the cron expression, the TTL, the retention
    /// policy, labels and the CronJob's numbers.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key_path: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key_path: key_path.to_owned(),
            message,
        };
        if !is_dns_label(&self.name, MAX_NAME_LEN) {
            return Err(invalid(
                "name",
                format!(
                    "{:?}: expected 1-{MAX_NAME_LEN} lowercase letters, digits and '-', starting \
                     and ending with a letter or digit",
                    self.name
                ),
            ));
        }
        validate_cron(&self.schedule).map_err(|why| {
            invalid(
                "schedule",
                format!("invalid cron {:?}: {why}", self.schedule),
            )
        })?;
        if let Some(ttl) = &self.ttl {
            crate::units::parse_duration(ttl).map_err(|e| invalid("ttl", e.to_string()))?;
        }
        // RetentionError messages start with the field as written here (`keepDaily: ...`).
        self.retention.validate().map_err(|e| {
            let msg = e.to_string();
            match msg.split_once(": ") {
                Some((field, why)) => invalid(&format!("retention.{field}"), why.to_owned()),
                None => invalid("retention", msg),
            }
        })?;
        for key in self.labels.keys() {
            if key.is_empty() || key == SCHEDULE_LABEL {
                return Err(invalid(
                    &format!("labels.{key}"),
                    format!("{key:?} is set by lifeboat; expected another label key"),
                ));
            }
        }
        let cj = &self.cron_job;
        if !is_dns_label(&cj.namespace, 63) {
            return Err(invalid(
                "cronJob.namespace",
                format!("{:?} is not a namespace name", cj.namespace),
            ));
        }
        if !is_dns_label(&cj.service_account.name, 63) {
            return Err(invalid(
                "cronJob.serviceAccount.name",
                format!("{:?} is not a ServiceAccount name", cj.service_account.name),
            ));
        }
        if let Some(id) = &cj.service_account.client_id
            && id.trim().is_empty()
        {
            return Err(invalid(
                "cronJob.serviceAccount.clientId",
                "empty; expected the client id (a GUID) of the federated identity".into(),
            ));
        }
        if cj.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
            return Err(invalid("cronJob.image", "empty; expected an image".into()));
        }
        for (key, n) in [
            ("startingDeadlineSeconds", cj.starting_deadline_seconds),
            (
                "activeDeadlineSeconds",
                cj.active_deadline_seconds.unwrap_or(1),
            ),
        ] {
            if n <= 0 {
                return Err(invalid(
                    &format!("cronJob.{key}"),
                    format!("{n}: expected a positive number of seconds"),
                ));
            }
        }
        for (key, n) in [
            (
                "successfulJobsHistoryLimit",
                cj.successful_jobs_history_limit,
            ),
            ("failedJobsHistoryLimit", cj.failed_jobs_history_limit),
            ("backoffLimit", cj.backoff_limit),
        ] {
            if n < 0 {
                return Err(invalid(
                    &format!("cronJob.{key}"),
                    format!("{n}: expected zero or more"),
                ));
            }
        }
        for (section, map) in [
            ("requests", &cj.resources.requests),
            ("limits", &cj.resources.limits),
        ] {
            if let Some((k, _)) = map.iter().find(|(_, v)| v.trim().is_empty()) {
                return Err(invalid(
                    &format!("cronJob.resources.{section}.{k}"),
                    "empty; expected a quantity such as 250m or 1Gi".into(),
                ));
            }
        }
        Ok(())
    }

    /// Checks the schedule against the config it runs with: the cluster and location exist and
    /// the location can be written. `file` names the schedule in errors.
    pub fn check_config(&self, config: &Config, file: &str) -> Result<(), ConfigError> {
        let invalid = |key_path: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key_path: key_path.to_owned(),
            message,
        };
        if let Some(c) = &self.cluster
            && !config.clusters.contains_key(c)
        {
            return Err(invalid(
                "cluster",
                format!(
                    "unknown cluster {c:?} in {}; expected one of: {}",
                    config.file_name(),
                    names(config.clusters.keys())
                ),
            ));
        }
        let (loc_name, loc) = config.location(self.location.as_deref()).map_err(|e| {
            invalid(
                "location",
                format!("{e}; a schedule needs a location to write"),
            )
        })?;
        if loc.read_only {
            return Err(invalid(
                "location",
                format!(
                    "location {loc_name:?} is read-only in {}; a schedule writes backups, expected a writable location",
                    config.file_name()
                ),
            ));
        }
        Ok(())
    }

    /// The TTL of each backup, parsed (validation guarantees it parses).
    pub fn ttl(&self) -> Option<jiff::SignedDuration> {
        self.ttl
            .as_deref()
            .and_then(|t| crate::units::parse_duration(t).ok())
    }

    /// The labels of each backup's manifest: the schedule's, plus `lifeboat.io/schedule`.
    pub fn backup_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert(SCHEDULE_LABEL.to_owned(), self.name.clone());
        labels
    }

    /// The name of the backup this schedule takes at `at`: `<name>-<yyyymmdd-hhmmss>` in UTC.
    pub fn backup_name(&self, at: jiff::Timestamp) -> String {
        format!("{}-{}", self.name, at.strftime("%Y%m%d-%H%M%S"))
    }

    /// The container image the CronJob runs.
    pub fn image(&self) -> String {
        self.cron_job
            .image
            .clone()
            .unwrap_or_else(|| format!("ghcr.io/lifeboat/lifeboat:{}", env!("CARGO_PKG_VERSION")))
    }
}

/// Why a cron expression is not one a Kubernetes CronJob accepts, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates a cron expression as a Kubernetes CronJob reads it (five fields or a macro), with
/// `croner` doing the parsing. Each field is first checked on its own so the error names it.
pub fn validate_cron(expr: &str) -> Result<(), CronError> {
    let err = |s: String| Err(CronError(s));
    let expr = expr.trim();
    if expr.is_empty() {
        return err("empty; expected five fields (minute hour day-of-month month day-of-week) or a macro such as @daily".into());
    }
    if expr.starts_with("TZ=") || expr.starts_with("CRON_TZ=") {
        return err("time zones are not allowed in the expression; set cronJob.timeZone".into());
    }
    if expr.starts_with('@') {
        return if CRON_MACROS.contains(&expr.to_ascii_lowercase().as_str()) {
            Ok(())
        } else {
            err(format!(
                "unknown macro; expected one of {}",
                CRON_MACROS.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build();
    for (i, field) in fields.iter().enumerate() {
        let (what, min, max) = CRON_FIELDS[i];
        // Kubernetes' parser (robfig/cron) has no L, W or # in the day fields, which croner
        // accepts; weekday names (WED, SAT) are fine, so look past them.
        if i == 2 || i == 4 {
            let mut bare = field.to_ascii_uppercase();
            for day in ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"] {
                bare = bare.replace(day, "");
            }
            if let Some(c) = bare.chars().find(|c| matches!(c, 'L' | 'W' | '#')) {
                return err(format!(
                    "{what} {field}: {c:?} is not supported by Kubernetes CronJobs"
                ));
            }
        }
        let mut probe = ["*"; 5];
        probe[i] = field;
        if let Err(e) = parser.parse(&probe.join(" ")) {
            return err(format!(
                "{what} {}",
                describe_cron_error(field, min, max, &e)
            ));
        }
    }
    parser
        .parse(expr)
        .map(|_| ())
        .map_err(|e| CronError(e.to_string()))
}

/// croner says "Number out of bounds" or "Position 61 is out of bounds for the current range";
/// users wrote a field, so say "61 out of range (0-59)".
fn describe_cron_error(field: &str, min: u8, max: u8, e: &croner::errors::CronError) -> String {
    let msg = match e {
        croner::errors::CronError::ComponentError(m)
        | croner::errors::CronError::InvalidPattern(m)
        | croner::errors::CronError::IllegalCharacters(m) => m.clone(),
        other => other.to_string(),
    };
    if msg.contains("out of bounds") {
        return format!("{field} out of range ({min}-{max})");
    }
    format!("{field:?}: {}", msg.trim_end_matches('.'))
}

fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none defined".into()
    } else {
        v.join(", ")
    }
}

/// serde's wording ("unknown variant", "unknown field") and trailing positions, reworded for
/// people editing a file (the position is reported separately).
fn describe_yaml_error(e: &serde_yaml_ng::Error, key_path: &str) -> String {
    let msg = e.to_string();
    // serde_yaml_ng prefixes some messages with (part of) the key path we report ourselves.
    let msg = match msg.split_once(": ") {
        Some((prefix, rest)) if key_path.starts_with(prefix) => rest.to_owned(),
        _ => msg,
    };
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    };
    msg.replace("unknown variant", "unknown value")
        .replace("unknown field", "unknown key")
}

#[cfg(test)]
mod tests;
