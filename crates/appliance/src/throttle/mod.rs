//! The thermal-aware throttler.
mod quiet;
pub mod sysfs;
pub use quiet::QuietHours;
