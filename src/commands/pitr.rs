//! `restore --to-revision/--to-time` (the database rebuilt offline from a base and the
//! segments after it, then checked as any restore is) and `list --generations --check` (each
//! later base rebuilt from the one before and compared by HashKV), over [`Archive`].

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;

use super::{Context, Outcome, Verdict};
use crate::config::RestoreConfig;
use crate::pitr::archive::{base_name, Archive, Choice};
use crate::pitr::plan::{self, Plan, Point};
use crate::pitr::rebuild::Rebuilt;
use crate::restore::{etcdutl_command, part_file, publish, Destination, RestoreFlags};
use crate::snapshot::verify::{self, Verified};
use crate::store::Store;

/// The margin added to `--bump-revision` beyond the newest revision the stream saw: writes
/// after its last segment are not known. A million is over ten minutes at 1,500 writes/s
/// (etcd's own recovery guide sizes a week's bump from that rate).
pub const BUMP_MARGIN: i64 = 1_000_000;

/// Where `restore --to-revision` writes, and what the etcdutl command it prints says.
pub struct Target<'a> {
    pub output: &'a std::path::Path,
    pub force: bool,
    /// `--bump-revision`: written into the file when given; else printed for etcdutl.
    pub bump: Option<i64>,
    pub flags: &'a RestoreFlags,
}

/// What `restore --to-revision` did.
#[derive(Debug, Clone)]
pub struct PointRestored {
    pub path: PathBuf,
    pub plan: Plan,
    pub rebuilt: Rebuilt,
    pub verified: Verified,
    /// The bump the printed etcdutl command uses (or the one written into the file).
    pub bump: i64,
    pub bumped_in_file: bool,
    /// The newest revision the stream holds.
    pub newest: i64,
    pub next: String,
    pub seconds: f64,
}

/// `restore --to-revision/--to-time`: the plan, the base restored and checked as `restore`
/// checks a backup, the segments, the rebuild, then our own check of the file (trailer, walk,
/// revision) before it is renamed into place.
pub async fn restore_to(
    way: &Archive<'_>,
    point: Point,
    to: &Target<'_>,
) -> anyhow::Result<PointRestored> {
    let started = std::time::Instant::now();
    let (bump, output, flags) = (to.bump, to.output, to.flags);
    let to = Destination {
        path: output.to_path_buf(),
        force: to.force,
    };
    // Before anything is read: a file in the way is known at once.
    let (part, out) = part_file(&to)?;
    let sources = way.sources().await?;
    let plan = way.plan(&sources, point).await?;
    let revision = plan.revision;
    tracing::info!(revision, generation = %plan.generation, base = %plan.base, base_revision = plan.base_revision, segments = plan.segments.len(), "rebuilding");
    let (_, (file, rebuilt)) = way
        .rebuild(&plan, bump, out, part.display().to_string())
        .await?;
    // The trailer was hashed from the pages as they are on disk; the walk checks the rest.
    let check_started = std::time::Instant::now();
    let len = rebuilt.db_len;
    let status = tokio::task::spawn_blocking(move || verify::walk(&file, len))
        .await?
        .map_err(|e| anyhow!("the rebuilt file does not pass our own check ({e}); this is a bug in etcd-backup, please report it with the output of `list --generations`"))?;
    let verified = Verified {
        sha256: rebuilt.sha256,
        status,
    };
    tracing::info!(
        copy_seconds = rebuilt.copy_seconds,
        replay_seconds = rebuilt.replay_seconds,
        finish_seconds = rebuilt.finish_seconds,
        check_seconds = check_started.elapsed().as_secs_f64(),
        "rebuilt"
    );
    // A bump written into the file moves where etcd opens it on by the bump.
    let opens_at = revision + bump.unwrap_or(0);
    if verified.status.opened_at() != opens_at {
        bail!(
            "the rebuilt file opens at revision {}, not {opens_at}; this is a bug in etcd-backup",
            verified.status.opened_at()
        );
    }
    publish(part, output).await?;
    let newest = sources
        .iter()
        .flat_map(|s| s.segments.iter().map(|g| g.last))
        .max()
        .unwrap_or(revision)
        .max(revision);
    let b = bump.unwrap_or(newest - revision + BUMP_MARGIN);
    let mut next = etcdutl_command(output, flags);
    if bump.is_none() {
        next.push_str(&format!(" \\\n  --bump-revision {b} --mark-compacted"));
    }
    Ok(PointRestored {
        path: output.to_path_buf(),
        plan,
        rebuilt,
        verified,
        bump: b,
        bumped_in_file: bump.is_some(),
        newest,
        next,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One base of a generation rebuilt from the base before it, against the later base itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrossCheck {
    pub generation: String,
    pub from: i64,
    pub to: i64,
    /// The later base's HashKV at its revision, and the rebuilt file's with the same compact
    /// revision.
    pub base_hash_kv: Option<u32>,
    pub rebuilt_hash_kv: Option<u32>,
    pub compact_revision: Option<i64>,
    /// `ok`, or what differs or could not be computed.
    pub verdict: String,
    /// Whether the two hashes were computed and are equal.
    #[serde(skip)]
    pub agrees: bool,
}

impl CrossCheck {
    pub fn ok(&self) -> bool {
        self.agrees
    }
}

/// `list --generations --check`.
pub async fn check(
    store: &Store,
    cfg: &RestoreConfig,
    history: &Choice,
    ctx: &Context,
) -> anyhow::Result<Vec<CrossCheck>> {
    let way = Archive::new(store, cfg, &ctx.shutdown, history);
    cross_check(&way).await
}

/// Exit 1 when any base differs from its rebuild, or could not be compared.
impl Outcome for Vec<CrossCheck> {
    fn verdict(&self) -> Verdict {
        match self.iter().filter(|c| !c.ok()).count() {
            0 => Verdict::Pass,
            bad => Verdict::Fail(format!(
                "{bad} of {} cross-checks failed (see above)",
                self.len()
            )),
        }
    }
}

/// `list --generations --check`: every base that the base before it reaches through whole
/// segments is rebuilt offline from that base and compared with itself by HashKV: a proof,
/// without etcd, that the segments between them hold every change.
pub async fn cross_check(way: &Archive<'_>) -> anyhow::Result<Vec<CrossCheck>> {
    use crate::snapshot::hashkv;
    let sources = way.sources().await?;
    let mut out = Vec::new();
    for plan in plan::pairs(&sources) {
        let later = Plan {
            base_revision: plan.revision,
            base: base_name(&sources, &plan),
            ..plan.clone()
        };
        let (_later_file, later_verified) = way.restore_base(&later).await?;
        let scratch = tempfile::tempfile_in(&way.cfg.tmp_dir)
            .with_context(|| format!("creating a scratch file in {}", way.cfg.tmp_dir.display()))?;
        let (_, (file, _)) = way
            .rebuild(&plan, None, scratch, "a scratch file".into())
            .await?;
        let theirs = later_verified.status.hash_kv;
        let ours = match theirs {
            Some(t) => {
                let len = file.metadata()?.len() - verify::TRAILER_LEN as u64;
                let (rev, compact) = (plan.revision, t.compact_revision);
                tokio::task::spawn_blocking(move || hashkv::hash_at(&file, len, rev, compact))
                    .await??
                    .ok()
            }
            None => None,
        };
        let agrees = matches!((theirs, ours), (Some(t), Some(o)) if t.hash == o.hash);
        let verdict = match (theirs, ours) {
            (Some(t), Some(o)) if t.hash == o.hash => "ok".to_string(),
            (Some(t), Some(o)) => format!(
                "HashKV differs: the base at {} has {}, rebuilt from the base at {} it is {}: the segments between them do not hold every change",
                plan.revision, t.hash, plan.base_revision, o.hash
            ),
            _ => format!(
                "not compared: a HashKV could not be computed ({})",
                later_verified
                    .status
                    .hash_kv_skipped
                    .unwrap_or_else(|| "too many keys since the last compaction".into())
            ),
        };
        out.push(CrossCheck {
            generation: plan.generation.to_string(),
            from: plan.base_revision,
            to: plan.revision,
            base_hash_kv: theirs.map(|t| t.hash),
            rebuilt_hash_kv: ours.map(|o| o.hash),
            compact_revision: theirs.map(|t| t.compact_revision),
            verdict,
            agrees,
        });
    }
    Ok(out)
}
