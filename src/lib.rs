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
//! [`backup`] is the only module that knows this order; [`restore`] runs the way back.

pub mod backup;
pub mod bbolt;
pub mod compress;
pub mod config;
pub mod etcd;
pub mod key;
pub mod output;
pub mod pgzip;
pub mod restore;
pub mod retention;
pub mod shutdown;
pub mod store;
pub mod verify;

/// An error and its sources on one line, each cause once: tonic hides the TLS cause two levels
/// down, and object_store repeats its sources in its own message.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}
