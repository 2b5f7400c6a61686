//! etcd-backup: streamed, verified etcd snapshots to S3-compatible storage, a stream of every
//! revision beside them, and the way back to any point of it.
//!
//! **Stages.** One backup ([`backup::take`]) passes a snapshot through these, each a module:
//!
//! 1. [`config`]: the environment becomes a validated, typed configuration, every problem
//!    reported at once ([`config::Key`] names every variable; [`credentials`] holds what must
//!    never be printed);
//! 2. [`etcd`]: [`etcd::Members`] chooses a member (over mTLS, failing over across endpoints)
//!    and [`etcd::Snapshot`] streams its snapshot, at most as fast as [`pacing`] allows;
//! 3. [`pipeline`]: the streaming engine. Each chunk is checked against the SHA-256 trailer
//!    ([`snapshot::verify`]), spooled to [`scratch`] for the walk ([`snapshot::bbolt`]),
//!    compressed ([`compress`]), encrypted with age when recipients are set ([`crypt`]), and cut
//!    into parts that [`store`] uploads whole-or-nothing under a [`key::BackupKey`]; before the
//!    upload completes, [`consistency`] compares the snapshot's HashKV
//!    ([`snapshot::hashkv`]) with every member's; the [`files`] archive goes up beside it;
//!    with a signing key, [`sign`] signs the manifest that names the object;
//! 4. [`retention`]: decide, purely, which backups to delete.
//!
//! **The stream** ([`stream`]): [`stream::run`] takes a base through the stages above, then
//! follows etcd's watch into chained segments beside it ([`stream::follow`]), one writer per
//! prefix ([`stream::lock`]), with its records and the one read of the prefix
//! ([`stream::records::StreamView`]), its own retention ([`stream::retention`]) and `/metrics`.
//!
//! **The way back**: a backup to a checked file ([`restore`], relying only on what [`trust`]
//! accepts when verify keys are set, through [`download`] and [`files`]); a point of the stream
//! ([`pitr`]): the plan of base and segments ([`pitr::plan`]), the segments fetched and checked
//! ([`pitr::feed`]), a database rebuilt at any revision ([`pitr::rebuild`]), one key's past
//! (`get`, `history`) and what changed (`diff`, [`pitr::changes`]), decoded for Kubernetes
//! ([`pitr::k8s`]).
//!
//! **Commands** ([`commands`], one module each, one shape: `run(store or what it needs,
//! options, &Context) -> Result<outcome>`): `backup`, `stream`, `prune`, `list` (and
//! `--generations`, `--check`), `restore` (and `--to-revision`, `--to-time`), `get`, `history`,
//! `diff`, `status`, `verify`, `check` (and `--max-lag`), `defrag`, `doctor`, `keygen`. Each
//! outcome has a typed [`commands::Verdict`]; [`output`] draws it, and the binary builds the
//! store once, prints the outcome and picks the exit code.
//!
//! **Support**: [`output`] (every table and JSON form), [`shutdown`] (SIGTERM as a value passed
//! in), [`scratch`] (scratch files and free space), [`metrics`] (the Pushgateway report of a
//! run), [`progress`] (progress lines of long transfers), [`download`] (a download read on a
//! blocking thread), [`describe`] (an error and its sources on one line).

pub mod backup;
pub mod commands;
pub mod compress;
pub mod config;
pub mod consistency;
pub mod credentials;
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
pub mod restore;
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
