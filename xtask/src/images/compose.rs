//! placeholder
use super::Bases;
use anyhow::Result;
pub fn run(_bases: &Bases) -> Result<()> {
    Ok(())
}
