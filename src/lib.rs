//! etcd-backup: streamed, verified etcd snapshots to S3-compatible storage.
//!
//! The pipeline of one `backup` run, stage by stage (each a module):
//!
//! 1. [`config`]: the environment becomes a validated, typed configuration, every problem
//!    reported at once;
//! 2. [`etcd`]: connect to a member over mTLS, with failover across endpoints, and stream its
//!    snapshot;
//! 3. [`verify`] (with [`bbolt`]): check the snapshot's SHA-256 trailer as it streams, then walk
//!    the database like `etcdutl snapshot status`;
//! 4. [`compress`]: gzip, zstd or none;
//! 5. [`store`]: upload whole-or-nothing under a [`key::BackupKey`];
//! 6. [`retention`]: decide, purely, which backups to delete.
//!
//! [`backup`] is the only module that knows this order.

pub mod backup;
pub mod bbolt;
pub mod compress;
pub mod config;
pub mod etcd;
pub mod key;
pub mod retention;
pub mod store;
pub mod verify;
