//! Running a Job to its end: create, wait for `Complete` or `Failed`, read its pod's log. The
//! caller deletes the Job (its pods follow) whatever the outcome.

use std::time::Duration;

use serde_json::Value;

use super::ClusterError;
use super::objects::{self, JOBS, PODS};

/// How a Job ended.
#[derive(Debug, Clone)]
pub struct JobRun {
    /// It reached `Complete`.
    pub succeeded: bool,
    /// Why it did not, when it did not (condition message, container exit, timeout).
    pub failure: Option<String>,
    /// Its last pod's log (empty if unreadable).
    pub log: String,
}

fn condition<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

/// Creates `job` in `ns` and waits up to `timeout` for it to finish.
pub async fn run_to_completion(
    client: &kube::Client,
    ns: &str,
    job: &Value,
    timeout: Duration,
) -> Result<JobRun, ClusterError> {
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    objects::create(client, JOBS, ns, job).await?;
    let outcome = wait(client, ns, &name, timeout).await?;
    let pods = objects::list(client, PODS, ns, Some(&format!("job-name={name}"))).await?;
    let last = pods
        .iter()
        .max_by_key(|p| p["metadata"]["creationTimestamp"].as_str().unwrap_or(""))
        .cloned();
    let mut log = String::new();
    let mut exit = None;
    if let Some(pod) = &last {
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
        log = objects::pod_log(client, ns, pod_name)
            .await
            .unwrap_or_default();
        exit = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|s| {
                let t = &s["state"]["terminated"];
                (t["exitCode"].as_i64().unwrap_or(0) != 0).then(|| {
                    format!(
                        "container {} exited {}{}",
                        s["name"].as_str().unwrap_or(""),
                        t["exitCode"],
                        t["message"]
                            .as_str()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    )
                })
            });
    }
    Ok(match outcome {
        Ok(()) => JobRun {
            succeeded: true,
            failure: None,
            log,
        },
        Err(why) => JobRun {
            succeeded: false,
            failure: Some(match exit {
                Some(e) => format!("{why}; {e}"),
                None => why,
            }),
            log,
        },
    })
}

/// Container waiting reasons that never resolve by themselves: the Job's pod will not run.
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Polls the Job (and its pods, so a pod that can never start fails fast instead of at the
/// timeout) until it ends.
async fn wait(
    client: &kube::Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<Result<(), String>, ClusterError> {
    let mut poll = objects::Poll::new(timeout);
    loop {
        let Some(j) = objects::get(client, JOBS, ns, name).await? else {
            return Ok(Err(format!("Job {ns}/{name} was deleted while it ran")));
        };
        if condition(&j, "Complete").is_some() {
            return Ok(Ok(()));
        }
        if let Some(c) = condition(&j, "Failed") {
            return Ok(Err(format!(
                "{}: {}",
                c["reason"].as_str().unwrap_or("Failed"),
                c["message"].as_str().unwrap_or("")
            )));
        }
        let pods = objects::list(client, PODS, ns, Some(&format!("job-name={name}"))).await?;
        for p in &pods {
            for s in p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let w = &s["state"]["waiting"];
                if let Some(reason) = w["reason"].as_str().filter(|r| STUCK.contains(r)) {
                    return Ok(Err(format!(
                        "its pod cannot start: {reason}: {} (image {})",
                        w["message"].as_str().unwrap_or(""),
                        s["image"].as_str().unwrap_or("?")
                    )));
                }
            }
        }
        if poll.expired() {
            return Ok(Err(format!(
                "Job {ns}/{name} did not finish within {}s",
                timeout.as_secs()
            )));
        }
        poll.next().await;
    }
}

/// The last `n` lines of a log that are not a JSON report, for error messages.
pub fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('{'))
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Object names derived from several parts must stay valid DNS labels (Jobs: ≤ 63 characters,
/// leaving room for the pod suffix): a readable prefix plus a digest keeps them unique.
pub fn short_name(prefix: &str, parts: &[&str], readable: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest = hex::encode(&h.finalize()[..4]);
    let tail: String = readable
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!("{prefix}-{digest}-{tail}")
        .trim_end_matches('-')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_valid_unique_and_readable() {
        let a = short_name("lifeboat", &["b1", "shop", "data-db-0"], "data-db-0");
        let b = short_name("lifeboat", &["b2", "shop", "data-db-0"], "data-db-0");
        assert_ne!(a, b);
        assert!(
            a.starts_with("lifeboat-") && a.ends_with("-data-db-0"),
            "{a}"
        );
        let long = short_name("lifeboat", &["x"], &"Very_Long.Name-".repeat(10));
        assert!(long.len() <= 57, "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(!long.ends_with('-'));
    }
}
