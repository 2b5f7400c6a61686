//! The `restore` command: a backup to a checked file ([`crate::restore`]), or with
//! `--to-revision`/`--to-time` the database rebuilt from the stream ([`super::pitr`]), and the
//! `etcdutl snapshot restore` command to run next.

use std::path::PathBuf;

use anyhow::anyhow;
use chrono::{DateTime, Utc};

use serde::Serialize;

use super::pitr::{PointRestored, Target};
use super::{Context, Outcome};
use crate::config::RestoreConfig;
use crate::key::BackupKey;
use crate::pitr::archive::{Archive, Choice};
use crate::pitr::plan::Point;
use crate::restore::{
    choose, etcdutl_command, restore, Destination, RestoreFlags, Restored, Which,
};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::trust::Trust;
use crate::Usage;

/// `restore`'s command line: which backup, where to, and the etcdutl command's details.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// A backup name (20260529-060000.db.gz, with or without the prefix) or `latest`.
    #[arg(default_value = "latest")]
    pub backup: Which,
    /// Where to write the snapshot.
    #[arg(long, short = 'O')]
    pub output: PathBuf,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// With BACKUP_VERIFY_KEY set: restore this unsigned backup anyway (one taken before
    /// signing was set up). Repeat for several; a backup with a bad signature is never allowed.
    #[arg(long, value_name = "NAME", value_parser = parse_key)]
    pub allow_unsigned: Vec<BackupKey>,
    #[command(flatten)]
    pub flags: RestoreFlags,
    #[command(flatten)]
    pub point: PointArgs,
}

/// A backup name, with or without the prefix.
fn parse_key(s: &str) -> Result<BackupKey, crate::key::NotOurs> {
    s.rsplit('/').next().unwrap_or(s).parse()
}

/// `restore --to-revision R | --to-time T`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PointArgs {
    /// Rebuild the database at this revision from the stream (instead of restoring a backup).
    #[arg(long, value_name = "R", conflicts_with_all = ["backup", "to_time", "files", "allow_unsigned"],
        value_parser = clap::value_parser!(i64).range(1..))]
    pub to_revision: Option<i64>,
    /// Rebuild the database as the stream had received it at this time (RFC 3339): the last
    /// revision received at or before T (receipt time, not etcd's commit time).
    #[arg(long, value_name = "T", conflicts_with_all = ["backup", "files", "allow_unsigned"])]
    pub to_time: Option<DateTime<Utc>>,
    /// Also mark every revision up to R+N compacted, so that etcd restored from the file
    /// continues at R+N+1 and every watch from before is refused, as `etcdutl snapshot restore
    /// --bump-revision N --mark-compacted` does (for etcdutl older than 3.5.10). The file's
    /// HashKV then no longer matches revision R.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub bump_revision: Option<i64>,
    #[command(flatten)]
    pub history: Choice,
}

impl PointArgs {
    pub fn point(&self) -> Option<Point> {
        self.to_revision
            .map(Point::Revision)
            .or(self.to_time.map(Point::Time))
    }
}

/// What `restore` did: a backup restored, or the database rebuilt at a point of the stream.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Restoring {
    Backup(Restoration),
    Point(PointRestored),
}

impl Outcome for Restoring {}

/// The `restore` command: with `--to-revision` or `--to-time` the database rebuilt from the
/// stream ([`super::pitr::restore_to`]), else [`backup`].
pub async fn run(
    store: &Store,
    cfg: &RestoreConfig,
    args: &RestoreArgs,
    ctx: &Context,
) -> anyhow::Result<Restoring> {
    let Some(point) = args.point.point() else {
        if args.point.bump_revision.is_some() {
            return Err(Usage(
                "--bump-revision goes with --to-revision or --to-time (a backup's file is restored as it was taken; pass --bump-revision to etcdutl instead)".into(),
            )
            .into());
        }
        return backup(store, cfg, args, &ctx.shutdown)
            .await
            .map(Restoring::Backup);
    };
    let way = Archive::new(store, cfg, &ctx.shutdown, &args.point.history);
    let to = Target {
        output: &args.output,
        force: args.force,
        bump: args.point.bump_revision,
        flags: &args.flags,
    };
    super::pitr::restore_to(&way, point, &to)
        .await
        .map(Restoring::Point)
}

/// A backup to `output`, then, with `--files`, its files archive.
async fn backup(
    store: &Store,
    cfg: &RestoreConfig,
    args: &RestoreArgs,
    shutdown: &Shutdown,
) -> anyhow::Result<Restoration> {
    let keys = cfg.verify_keys.as_ref();
    let (key, trust, passed_over) = shutdown
        .or_interrupted(choose(store, args.backup, keys, &args.allow_unsigned))
        .await?;
    match trust.vouched() {
        Some(v) => {
            tracing::info!(key = %store.url(&key), output = %args.output.display(), signed_by = %v.signer, "restoring")
        }
        None => {
            tracing::info!(key = %store.url(&key), output = %args.output.display(), "restoring")
        }
    }
    let ids = cfg.identities.clone();
    let to = Destination {
        path: args.output.clone(),
        force: args.force,
    };
    let r = restore(store, key, &to, shutdown, cfg.progress, ids.clone(), &trust).await?;
    let files = match &args.flags.files {
        Some(dir) => {
            let (expect_sha256, expect_size) = match &trust {
                Trust::Vouched(v) => {
                    let (_, sha) = v.files.clone().ok_or_else(|| anyhow!("the signed manifest of {} names no files archive, so --files has nothing to restore (backups taken without BACKUP_INCLUDE_PATHS have none)", store.url(&key)))?;
                    (Some(sha), v.get("files-size").and_then(|s| s.parse().ok()))
                }
                _ => (None, None),
            };
            let to = crate::files::Target {
                dir,
                force: args.force,
                expect_sha256,
                expect_size,
            };
            Some(crate::files::restore(store, key, &to, ids, shutdown).await?)
        }
        None => None,
    };
    Ok(Restoration {
        next: etcdutl_command(&r.path, &args.flags),
        restored: r,
        files,
        signed_by: trust.vouched().map(|v| v.signer.clone()),
        passed_over: passed_over
            .into_iter()
            .map(|(k, why)| (format!("{}{k}", store.prefix()), why.to_string()))
            .collect(),
    })
}

/// What `restore` did: the checked file, the command to run next, and the files extracted.
#[derive(Debug, Clone)]
pub struct Restoration {
    pub restored: Restored,
    /// The `etcdutl snapshot restore` command for this file.
    pub next: String,
    pub files: Option<crate::files::FilesRestored>,
    /// The fingerprint of the key that signed the backup, when verify keys are set.
    pub signed_by: Option<String>,
    /// With verify keys, `latest`: the newer backups refused, with why.
    pub passed_over: Vec<(String, String)>,
}
