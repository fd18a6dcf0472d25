//! `lifeboat sim serve`

use crate::cli::args::SimCommand;
use crate::cli::{Context, Exit};

/// Runs the simulator until interrupted.
pub async fn run(_ctx: &Context, cmd: SimCommand) -> anyhow::Result<Exit> {
    match cmd {
        SimCommand::Serve(a) => {
            let _ = a;
            anyhow::bail!("the simulator is being wired")
        }
    }
}
