//! `kompakt inspect` (work in progress).
use clap::Args;

#[derive(Args)]
pub struct InspectArgs {
    /// The .kpk file
    pub file: std::path::PathBuf,
}

pub fn run(_args: InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("inspect is not implemented yet")
}
