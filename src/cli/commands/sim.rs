//! `lifeboat sim serve`

use crate::cli::args::SimCommand;
use crate::cli::{Context, Exit};
use crate::sim::{self, ServeOptions};

/// Runs the simulator until interrupted.
pub async fn run(_ctx: &Context, cmd: SimCommand) -> anyhow::Result<Exit> {
    match cmd {
        SimCommand::Serve(a) => {
            let opts = ServeOptions {
                name: a.name,
                port: a.port,
                state: a.state,
                kubeconfig_out: a.kubeconfig_out,
                zones: a.zones,
                service_cidr: a.service_cidr,
                lifeboat_image: a.lifeboat_image,
                crd_established_delay_ms: a.crd_established_delay_ms,
                throttle_every: a.throttle_every,
                retry_after_secs: a.retry_after_secs,
                latency_ms: a.latency_ms,
                ..ServeOptions::default()
            };
            sim::serve(opts).await?;
            Ok(Exit::Ok)
        }
        SimCommand::Agent(a) => {
            let opts = sim::agent::AgentOptions {
                node_prefix: a.node_prefix,
                zones: a.zones,
                region: a.region,
                state_dir: a.state,
                lifeboat_image: a.lifeboat_image,
                lifeboat_bin: std::env::current_exe()?,
                serving: a.serving_cert.zip(a.serving_key),
                kubelet_port: a.kubelet_port,
            };
            sim::agent::serve(&a.kubeconfig, a.context, opts).await?;
            Ok(Exit::Ok)
        }
    }
}
