//! etcd-backup: streamed, verified etcd snapshots to S3-compatible storage.
//!
//! **Stages.** One `backup` run passes a snapshot through these, each a module:
//!
//! 1. [`config`]: the environment becomes a validated, typed configuration, every problem
//!    reported at once ([`config::Key`] names every variable);
//! 2. [`etcd`]: [`etcd::Members`] chooses a member (over mTLS, [`etcd::tls`], failing over
//!    across endpoints) and [`etcd::Snapshot`] streams its snapshot, at most as fast as
//!    [`pacing`] allows;
//! 3. [`pipeline`]: the streaming engine. Each chunk is checked against the SHA-256 trailer
//!    ([`snapshot::verify`]), spooled to [`scratch`] for the walk ([`snapshot::bbolt`]),
//!    compressed ([`compress`]), encrypted with age when recipients are set ([`crypt`]), and cut
//!    into parts that [`store`] uploads whole-or-nothing under a [`key::BackupKey`]; before the
//!    upload completes, [`consistency`] compares the snapshot's HashKV
//!    ([`snapshot::hashkv`]) with every member's; the [`files`] archive goes up beside it;
//!    with a signing key, [`sign`] signs the manifest that names the object;
//! 4. [`retention`]: decide, purely, which backups to delete.
//!
//! **Continuous backup** ([`stream`]): `stream` takes a base through the stages above, then
//! follows etcd's watch into chained segments beside it, one writer per prefix, with its own
//! retention of that history ([`stream::retention`]) and `/metrics`.
//!
//! **Commands** ([`commands`], one module each): `backup` (the only place that knows the order
//! above), `stream` (generations: bases, resuming, ending), `prune`, `list`, `restore` (the way back, through [`download`] and [`files`], relying
//! only on what [`trust`] accepts when verify keys are set), `status`, `verify`, `check` (is the
//! newest backup fresh; with `--max-lag`, is the stream keeping up, from `generations`, which
//! also draws `list --generations`), `defrag` (one member at a time), `doctor` (a first install, one check a
//! line), `keygen` (a signing key). Each takes its options as one struct and
//! returns data; [`output`] draws it, and the binary prints it and picks the exit code.
//!
//! **Support**: [`output`] (every table and JSON form), [`shutdown`] (SIGTERM as a value passed
//! in), [`scratch`] (scratch files and free space), [`metrics`] (the Pushgateway report of a
//! run), [`progress`] (progress lines of long transfers), [`download`] (a download read on a
//! blocking thread), [`describe`] (an error and its sources on one line).

pub mod commands;
pub mod compress;
pub mod config;
pub mod consistency;
pub mod crypt;
pub mod download;
pub mod etcd;
pub mod files;
pub mod key;
pub mod metrics;
pub mod output;
pub mod pacing;
pub mod pipeline;
pub mod pitr;
pub mod progress;
pub mod retention;
pub mod scratch;
pub mod shutdown;
pub mod sign;
pub mod snapshot;
pub mod store;
pub mod stream;
pub mod trust;

/// A failure that is the operator's input, not the world (an unreadable file named on the
/// command line): the binary exits 2 for it, as for configuration problems.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// An error and its sources on one line, each printed once.
///
/// Our errors either name their cause in their message or return it from `source()`, never
/// both, so the chain is joined as it is. object_store's errors are the exception among the
/// libraries we use: they print their sources in their own message too, so the walk ends at
/// one of them.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut at = e;
    while let Some(inner) = at.source() {
        if at.is::<object_store::Error>() {
            break;
        }
        s.push_str(": ");
        s.push_str(&inner.to_string());
        at = inner;
    }
    s
}
