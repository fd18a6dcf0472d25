//! A `kube::Client` per configured cluster.

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::ClusterError;
use crate::config::Cluster;

/// A client and where it points.
#[derive(Clone)]
pub struct Connected {
    /// The client.
    pub client: kube::Client,
    /// Host of the API server URL (recorded in manifests; never credentials).
    pub api_host: Option<String>,
}

/// Connects to a configured cluster: its kubeconfig context, or in-cluster credentials.
/// `None` uses kube's inference (`$KUBECONFIG` / `~/.kube/config` current context, else
/// in-cluster).
pub async fn connect(name: &str, cluster: Option<&Cluster>) -> Result<Connected, ClusterError> {
    let config_err = |detail: String| ClusterError::Config {
        cluster: name.to_owned(),
        detail,
    };
    let config = match cluster {
        None => kube::Config::infer()
            .await
            .map_err(|e| config_err(e.to_string()))?,
        Some(c) if c.in_cluster => {
            kube::Config::incluster().map_err(|e| config_err(e.to_string()))?
        }
        Some(c) => {
            let opts = KubeConfigOptions {
                context: c.context.clone(),
                ..Default::default()
            };
            match &c.kubeconfig {
                Some(path) => {
                    let kc = Kubeconfig::read_from(path)
                        .map_err(|e| config_err(format!("{}: {e}", path.display())))?;
                    kube::Config::from_custom_kubeconfig(kc, &opts)
                        .await
                        .map_err(|e| config_err(e.to_string()))?
                }
                None => kube::Config::from_kubeconfig(&opts)
                    .await
                    .map_err(|e| config_err(e.to_string()))?,
            }
        }
    };
    // kube's own retry layer retries 503s up to 15 times with back-off of up to 1000 s: one
    // aggregated API that is down (metrics-server, often) then held every discovery for almost
    // four minutes. lifeboat's requests retry with bounds of their own (`request::send`).
    let mut config = config;
    config.default_retry = false;
    let api_host = config.cluster_url.host().map(str::to_owned);
    let client = kube::Client::try_from(config).map_err(|source| ClusterError::Client {
        cluster: name.to_owned(),
        source,
    })?;
    Ok(Connected { client, api_host })
}
