//! Nix module unit tests.
use anyhow::{Result, bail};
pub fn test() -> Result<()> {
    bail!("nix tests: written next")
}
