//! `lifeboat demo`

use anyhow::Context as _;

use crate::cli::args::{DemoArgs, OutputFormat};
use crate::cli::output;
use crate::cli::{Context, Exit, UsageError};
use crate::demo::{self, DemoError, DemoOptions};

/// Runs the region-loss drill and prints its report; exit 0 only if every check passed.
pub async fn run(ctx: &Context, a: DemoArgs) -> anyhow::Result<Exit> {
    // The drill runs this very binary: the commands it teaches and the simulated kubelet's
    // lifeboat pods (the volume mover) must be the build being demonstrated.
    let bin = std::env::current_exe().context("locating the lifeboat executable to run")?;
    let opts = DemoOptions {
        keep: a.keep,
        azurite: a.azurite.clone(),
        workdir: a.workdir.clone(),
        lifeboat_bin: bin,
        encrypted: a.encrypted,
    };
    if let Some(url) = &a.azurite {
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(UsageError(format!(
                    "--azurite {url:?}: expected Azurite's base URL, e.g. http://127.0.0.1:10000"
                ))
                .into());
            }
        }
    }
    let say = |line: &str| eprintln!("{line}");
    // Ctrl-C drops the drill: its clusters stop, its commands are killed and a temporary
    // workdir is removed, instead of being left behind by the default signal handling.
    let result = tokio::select! {
        r = demo::run(&opts, &say) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: the drill was stopped before its checks"),
    };
    let finished = match result {
        Ok(f) => f,
        Err(e @ DemoError::WorkdirNotEmpty(_)) => return Err(UsageError(e.to_string()).into()),
        Err(e @ DemoError::AzuriteUnreachable { .. }) => return Err(e.into()),
        Err(e) => {
            let mut hint = "the demo stopped before its checks".to_owned();
            if !a.keep && a.workdir.is_none() {
                hint.push_str(" (run it with --workdir DIR to keep its files for a look)");
            }
            return Err(anyhow::Error::new(e).context(hint));
        }
    };
    let report = &finished.report;
    match ctx.output {
        OutputFormat::Json => output::json(report)?,
        OutputFormat::Text => print!("{}", report.render_text()),
    }
    let code = if report.ok { Exit::Ok } else { Exit::Failed };
    if a.keep {
        let kc = finished.secondary_kubeconfig().display().to_string();
        let hint = format!(
            "\nThe secondary region is still running (the primary stays lost). Look around:\n\
             \x20 export KUBECONFIG={kc}\n\
             \x20 kubectl get statefulsets,deployments,services,pvc,pods -n shop -o wide\n\
             \x20 kubectl get storageclass,pv\n\
             \x20 kubectl get configmap shop-settings -n shop -o yaml\n\
             \x20 cd {} && lifeboat list --config lifeboat.yaml -l secondary\n\
             Files (config, locations, cluster state, expected data): {}\n\
             Press Ctrl-C to stop.",
            finished.workdir().display(),
            finished.workdir().display()
        );
        // The report owns stdout in JSON mode; the hint is for the person at the terminal.
        match ctx.output {
            OutputFormat::Json => eprintln!("{hint}"),
            OutputFormat::Text => println!("{hint}"),
        }
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        eprintln!("stopping the secondary cluster; the workdir stays");
    }
    finished
        .close()
        .await
        .context("stopping the simulated cluster")?;
    Ok(code)
}
