//! Benchmarks.
use anyhow::{Result, bail};
pub fn bench(name: &str, _args: &[String]) -> Result<()> {
    bail!("bench {name}: written next")
}
