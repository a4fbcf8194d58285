//! Encrypted backups with rustic, the restore drill and recovery.
pub mod state;
