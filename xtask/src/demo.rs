//! `cargo xtask demo`: the seed's flow against the running stack.

use anyhow::Result;

/// Runs the demo flow.
pub fn run() -> Result<()> {
    anyhow::bail!("the demo is not written yet")
}
