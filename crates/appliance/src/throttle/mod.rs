//! The thermal-aware throttler: the controller (pure), the simulator that
//! runs it against a thermal model, and the daemon that runs it on a Pi.
pub mod cli;
pub mod controller;
pub mod daemon;
mod quiet;
pub mod sim;
pub mod sysfs;
pub use quiet::QuietHours;
