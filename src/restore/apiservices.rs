//! Aggregated APIs: an APIService is only useful once its Service answers. The restore creates
//! them after the Services and workloads behind them and waits, bounded, for the aggregator to
//! report them Available; one that does not is a failure of the restore, with the aggregator's
//! own reason, since the application's API is not back.

use std::time::Duration;

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::runtime::wait::await_condition;

fn available(a: Option<&APIService>) -> bool {
    a.and_then(|a| a.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        })
}

/// Waits until APIService `name` is Available, or says why not after `timeout`.
pub async fn wait_available(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let api: kube::Api<APIService> = kube::Api::all(client.clone());
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, available)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("waiting for the APIService to be Available: {e}")),
        Err(_) => {
            let why = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|a| a.status)
                .and_then(|s| s.conditions)
                .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Available"))
                .map(|c| {
                    format!(
                        ": {} ({})",
                        c.reason.unwrap_or_default(),
                        c.message.unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            Err(format!(
                "the APIService was not Available within {}s{why}; its Service and pods must answer",
                timeout.as_secs()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_means_the_aggregators_condition_is_true() {
        let with = |status: &str| -> APIService {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "v1beta1.metrics.k8s.io"},
                "status": {"conditions": [{"type": "Available", "status": status}]}
            }))
            .unwrap()
        };
        assert!(available(Some(&with("True"))));
        assert!(!available(Some(&with("False"))));
        assert!(!available(None));
    }
}
