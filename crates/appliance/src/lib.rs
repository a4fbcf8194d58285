//! The Immich appliance library: config, the seams for every side effect
//! (LUKS, mounts, systemd, sysfs, HTTP, child processes) and their real
//! implementations, and the logic of the `immich-server` and
//! `immich-throttle` binaries, which stay thin.

pub mod config;
pub mod systemd;
pub mod throttle;
