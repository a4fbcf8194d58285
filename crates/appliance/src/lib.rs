//! The Immich appliance library: config, the seams for every side effect
//! (LUKS, mounts, systemd, sysfs, HTTP, child processes) and their real
//! implementations, and the logic of the `immich-server` and
//! `immich-throttle` binaries, which stay thin.

pub mod alerts;
pub mod backup;
pub mod blockdev;
pub mod cipher;
pub mod cli;
pub mod config;
pub mod drive;
pub mod exit;
pub mod fs_tools;
pub mod host;
pub mod immich;
pub mod init;
pub mod interrupt;
pub mod layout;
pub mod lifecycle;
pub mod logging;
pub mod luks;
pub mod machine;
pub mod net;
pub mod sd_notify;
pub mod secret;
pub mod smart;
pub mod status;
pub mod systemd;
pub mod throttle;
pub mod units;
