//! The binary's command line: subcommands and flags (clap). Settings are environment variables
//! (`etcd_backup::config`); flags are only what differs between one invocation and the next.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use etcd_backup::commands::defrag::DefragArgs;
use etcd_backup::commands::diff::DiffArgs;
use etcd_backup::commands::get::GetArgs;
use etcd_backup::commands::history::HistoryArgs;
use etcd_backup::commands::prune::PruneArgs;
use etcd_backup::commands::restore::RestoreArgs;
use etcd_backup::config;
use etcd_backup::output::Format;
use etcd_backup::pitr::archive::Choice;

#[derive(Parser)]
#[command(name = "etcd-backup", version, about = "Streamed, verified etcd snapshots to S3-compatible storage.",
    after_help = config::help_table() + "\nExit codes: 0 success, 1 runtime failure, 2 configuration or usage error.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The time to run at (RFC 3339) instead of the clock's: a backup's name and every age are
    /// reckoned from it. For tests, which must not wait a second for a new backup name.
    #[arg(long, global = true, hide = true)]
    pub now: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Snapshot etcd, verify, compress, upload, then prune (the default).
    Backup,
    /// Continuous backup: a base snapshot, then every revision from etcd's watch as segments in
    /// the bucket, until SIGTERM (which uploads what is buffered and exits 0).
    Stream,
    /// Delete backups past retention, keeping the newest BACKUP_KEEP_LAST.
    Prune {
        #[command(flatten)]
        args: PruneArgs,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// List the backups under the prefix, newest first, with what retention would do.
    List {
        /// List the stream's generations instead: revisions, bases, segments, and any gap.
        #[arg(long)]
        generations: bool,
        /// With --generations: rebuild each base from the base before it and compare their
        /// HashKV (downloads both bases and the segments between; exit 1 if any differs).
        #[arg(long, requires = "generations")]
        check: bool,
        /// With --check: which history to trust and read.
        #[command(flatten)]
        history: Choice,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Download a backup, check it, and write a file ready for `etcdutl snapshot restore`; or,
    /// with --to-revision or --to-time, rebuild the database at that point from the stream.
    Restore(RestoreArgs),
    /// Every change of a key (or of the keys under a prefix) in the stream's segments: revision,
    /// time received, put or delete, size, lease, and for Kubernetes objects kind, namespace,
    /// name and whether their deletion had begun.
    History {
        #[command(flatten)]
        args: HistoryArgs,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// One key's value as it was at a revision or time, from the stream, without a restore.
    Get {
        #[command(flatten)]
        args: GetArgs,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// The keys that changed between two points (revisions or RFC 3339 times) of the stream.
    Diff {
        #[command(flatten)]
        args: DiffArgs,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Health, member, leader, raft index, revision and DB size of every endpoint.
    Status {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Defragment etcd members one at a time, followers first, when the rule says it pays.
    Defrag {
        #[command(flatten)]
        args: DefragArgs,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Exit 1 unless the newest verified backup is younger than --max-age (reads the bucket only);
    /// with --max-lag, unless the stream's newest segment is younger than that instead.
    Check {
        /// Default: BACKUP_MAX_AGE (13h: two 6-hour periods and an hour's slack).
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "max_lag")]
        max_age: Option<Duration>,
        /// Judge `stream` instead: its newest generation must be open, without a gap, and its
        /// newest segment younger than this (e.g. 2m).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_lag: Option<Duration>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Check a first install: etcd endpoints and certificates, the bucket (write, read, delete,
    /// multipart, versioning, object lock, lifecycle), scratch space, encryption, Pushgateway.
    Doctor {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Write a new Ed25519 signing key to FILE (for BACKUP_SIGNING_KEY_FILE) and its public key
    /// to FILE.pub (for BACKUP_VERIFY_KEY), as `ssh-keygen -t ed25519` does. Never replaces a key.
    Keygen {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Check a snapshot file (raw, .gz or .zst, each also as .age): SHA-256 trailer and bbolt walk.
    Verify {
        path: PathBuf,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}
