mod quiet;
pub use quiet::QuietHours;
