//! The last backup's outcome, kept in the cluster: ConfigMap `lifeboat-status` (in lifeboat's
//! namespace) holds it as data, and each backup adds a core/v1 Event on that ConfigMap, so
//! `kubectl describe configmap lifeboat-status` shows the recent runs and alerting can watch
//! either. Knows nothing of repositories: the caller says what happened.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Name of the status ConfigMap.
pub const CONFIGMAP: &str = "lifeboat-status";
/// The component Events are reported by.
pub const COMPONENT: &str = "lifeboat";

/// How a backup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed without warnings.
    Succeeded,
    /// Committed with warnings (or a follow-up step, such as retention, did not complete).
    Partial,
    /// Nothing was committed.
    Failed,
}

impl Outcome {
    /// The value of `data.outcome`: `succeeded`, `partial` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
        }
    }

    /// The Event reason: `BackupSucceeded`, `BackupPartial` or `BackupFailed`.
    pub fn reason(self) -> &'static str {
        match self {
            Outcome::Succeeded => "BackupSucceeded",
            Outcome::Partial => "BackupPartial",
            Outcome::Failed => "BackupFailed",
        }
    }

    /// The Event type: `Normal` for a success, `Warning` otherwise (what alerting filters on).
    pub fn event_type(self) -> &'static str {
        match self {
            Outcome::Succeeded => "Normal",
            Outcome::Partial | Outcome::Failed => "Warning",
        }
    }
}

/// What the status records about one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStatus {
    /// The backup's name (attempted, if it failed).
    pub backup: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When it ended.
    pub time: jiff::Timestamp,
    /// Stored bytes, if committed.
    pub size: Option<u64>,
    /// Objects backed up, if committed.
    pub objects: Option<u64>,
    /// The schedule that took it, if any.
    pub schedule: Option<String>,
    /// The location written.
    pub location: Option<String>,
    /// One line for people: the Event message and `data.message`.
    pub message: String,
}

impl BackupStatus {
    /// The ConfigMap's data. Every key is always written (empty when unknown) so a merge patch
    /// never leaves a previous run's value behind.
    pub fn data(&self) -> BTreeMap<String, String> {
        let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        BTreeMap::from([
            ("lastBackup".to_owned(), self.backup.clone()),
            ("outcome".to_owned(), self.outcome.as_str().to_owned()),
            ("time".to_owned(), self.time.to_string()),
            ("size".to_owned(), opt(self.size)),
            ("objects".to_owned(), opt(self.objects)),
            (
                "schedule".to_owned(),
                self.schedule.clone().unwrap_or_default(),
            ),
            (
                "location".to_owned(),
                self.location.clone().unwrap_or_default(),
            ),
            ("message".to_owned(), self.message.clone()),
        ])
    }
}

/// What a committed backup amounted to, as its status reports it. The caller reads these from
/// the manifest: this part knows nothing of repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// When the manifest was written.
    pub time: jiff::Timestamp,
    /// Stored bytes the backup needs.
    pub size: u64,
    /// Kubernetes objects backed up.
    pub objects: u64,
    /// Warnings met while taking it.
    pub warnings: usize,
}

impl BackupStatus {
    /// The status of backup `backup` written to `location`: committed, or failed with `error`.
    /// `incomplete` marks a committed backup whose follow-up (retention) was not done.
    pub fn of(
        backup: &str,
        schedule: Option<&str>,
        location: &str,
        result: Result<&Committed, &(dyn std::error::Error + 'static)>,
        incomplete: bool,
    ) -> Self {
        match result {
            Ok(c) => {
                let outcome = if c.warnings == 0 && !incomplete {
                    Outcome::Succeeded
                } else {
                    Outcome::Partial
                };
                let mut message = format!(
                    "Backup {backup} {}: {}, {} objects, to location {location}",
                    outcome.as_str(),
                    crate::units::human_bytes(c.size),
                    c.objects
                );
                if c.warnings > 0 {
                    message.push_str(&format!("; {} warning(s)", c.warnings));
                }
                if incomplete {
                    message.push_str("; retention not applied");
                }
                BackupStatus {
                    backup: backup.to_owned(),
                    outcome,
                    time: c.time,
                    size: Some(c.size),
                    objects: Some(c.objects),
                    schedule: schedule.map(str::to_owned),
                    location: Some(location.to_owned()),
                    message,
                }
            }
            Err(e) => BackupStatus {
                backup: backup.to_owned(),
                outcome: Outcome::Failed,
                time: jiff::Timestamp::now(),
                size: None,
                objects: None,
                schedule: schedule.map(str::to_owned),
                location: Some(location.to_owned()),
                message: format!("Backup {backup} failed: {}", one_line(e)),
            },
        }
    }
}

/// Where a pod's ServiceAccount token mount names the pod's namespace.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The namespace `lifeboat backup` records its outcome in: `--status-namespace` /
/// `$LIFEBOAT_NAMESPACE`, else the pod's namespace when lifeboat runs in a pod and backs up
/// that same cluster. A CI runner that happens to be a pod backs up another cluster, where its
/// own namespace means nothing, so in-pod detection needs an in-cluster target.
pub fn status_namespace(explicit: Option<&str>, in_cluster: bool) -> Option<String> {
    if let Some(ns) = explicit.filter(|n| !n.is_empty()) {
        return Some(ns.to_owned());
    }
    if in_cluster && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return std::fs::read_to_string(POD_NAMESPACE_FILE)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
    }
    None
}

/// An error and its causes on one line (`a: b: c`), as anyhow's `{:#}` prints them: an Event
/// message is one line.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Why the status could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The ConfigMap could not be created or updated.
    #[error(
        "writing ConfigMap {namespace}/{CONFIGMAP}: {detail} (does namespace {namespace:?} exist, \
         and may lifeboat's ServiceAccount create/patch the ConfigMap there?)"
    )]
    ConfigMap {
        /// The namespace.
        namespace: String,
        /// What the API server (or the transport) said.
        detail: String,
    },
    /// The Event could not be created.
    #[error("creating an Event on ConfigMap {namespace}/{CONFIGMAP}: {detail}")]
    Event {
        /// The namespace.
        namespace: String,
        /// What the API server (or the transport) said.
        detail: String,
    },
}

/// One line for a kube error: the API's own status message, or the transport error's chain
/// (kube's `Display` of an API error embeds the whole `Status` debug dump).
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "the API server answered {} {}: {}",
            s.code, s.reason, s.message
        ),
        other => {
            let mut out = other.to_string();
            let mut cur = std::error::Error::source(other);
            while let Some(c) = cur {
                out.push_str(": ");
                out.push_str(&c.to_string());
                cur = c.source();
            }
            out
        }
    }
}

/// Creates or updates ConfigMap `lifeboat-status` in `namespace` with `status`, then adds an
/// Event on it. Returns the ConfigMap as written.
pub async fn record(
    client: &kube::Client,
    namespace: &str,
    status: &BackupStatus,
) -> Result<ConfigMap, StatusError> {
    let cm_err = |e: kube::Error| StatusError::ConfigMap {
        namespace: namespace.to_owned(),
        detail: describe(&e),
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "lifeboat".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "lifeboat".to_owned(),
        ),
    ]);
    let patch = json!({"metadata": {"labels": labels}, "data": status.data()});
    // Patch first: after the first run the ConfigMap exists, and a merge patch needs no read
    // and cannot conflict with a concurrent writer.
    let written = match api
        .patch(CONFIGMAP, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(cm) => cm,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIGMAP.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                data: Some(status.data()),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(cm) => cm,
                // Another run created it between our patch and create: patch that one.
                Err(kube::Error::Api(s)) if s.code == 409 => api
                    .patch(CONFIGMAP, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(cm_err)?,
                Err(e) => return Err(cm_err(e)),
            }
        }
        Err(e) => return Err(cm_err(e)),
    };
    tracing::info!(
        namespace,
        outcome = status.outcome.as_str(),
        "status ConfigMap written"
    );

    let now = jiff::Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            // As the kubelet names its events: `<object>.<unique hex>`.
            name: Some(format!(
                "{CONFIGMAP}.{:x}",
                now.as_nanosecond().unsigned_abs()
            )),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(CONFIGMAP.into()),
            namespace: Some(namespace.to_owned()),
            uid: written.metadata.uid.clone(),
            resource_version: written.metadata.resource_version.clone(),
            field_path: None,
        },
        reason: Some(status.outcome.reason().into()),
        message: Some(status.message.clone()),
        type_: Some(status.outcome.event_type().into()),
        action: Some("Backup".into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| COMPONENT.into()),
        ),
        first_timestamp: Some(Time(status.time)),
        last_timestamp: Some(Time(status.time)),
        count: Some(1),
        ..Event::default()
    };
    Api::<Event>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &event)
        .await
        .map_err(|e| StatusError::Event {
            namespace: namespace.to_owned(),
            detail: describe(&e),
        })?;
    Ok(written)
}
