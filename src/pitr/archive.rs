//! [`Archive`]: the bucket as the way back reads it, one handle for the commands over the
//! stream's history. It reads the [`StreamView`] once into [`Source`]s, resolves points,
//! restores a plan's base (checked as `restore` checks any backup: trailer, walk, HashKV
//! against its manifest, signature with BACKUP_VERIFY_KEY), reads segments through
//! [`super::feed`], and rebuilds a database at a revision ([`super::rebuild`]).

use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, Context};

use super::feed::{self, Reading};
use super::plan::{self, Plan, Point, Source, Unreachable};
use super::rebuild::{self, Rebuild, Rebuilt};
use crate::config::RestoreConfig;
use crate::restore::{choose, restore, Destination, Which};
use crate::shutdown::Shutdown;
use crate::snapshot::verify::{self, Verified};
use crate::store::Store;
use crate::stream::kv::KeyValue;
use crate::stream::records::StreamView;
use crate::stream::segment::Record;

/// The bucket, the settings of the way back, and the shutdown that stops it.
#[derive(Clone, Copy)]
pub struct Archive<'a> {
    pub store: &'a Store,
    pub cfg: &'a RestoreConfig,
    pub shutdown: &'a Shutdown,
}

impl<'a> Archive<'a> {
    pub fn new(store: &'a Store, cfg: &'a RestoreConfig, shutdown: &'a Shutdown) -> Archive<'a> {
        Archive {
            store,
            cfg,
            shutdown,
        }
    }

    /// Every generation the bucket holds, as the plan reads them.
    pub async fn sources(&self) -> anyhow::Result<Vec<Source>> {
        let view = self
            .shutdown
            .or_interrupted(async { Ok(StreamView::read(self.store).await?) })
            .await?;
        Ok(plan::sources(&view))
    }

    fn reading(&self) -> Reading<'a> {
        Reading {
            tmp_dir: &self.cfg.tmp_dir,
            identities: &self.cfg.identities,
            shutdown: self.shutdown,
        }
    }

    /// A point as a revision ([`feed::resolve`]).
    pub async fn resolve(&self, sources: &[Source], point: Point) -> anyhow::Result<i64> {
        feed::resolve(self.store, sources, point, &self.reading()).await
    }

    /// The plan that reaches `point`, and the revision it resolved to.
    pub async fn plan(&self, sources: &[Source], point: Point) -> anyhow::Result<Plan> {
        let revision = self.resolve(sources, point).await?;
        plan::plan(sources, revision).map_err(|u: Unreachable| anyhow!("{u}"))
    }

    /// Runs `work` over the records of `names`, checked against `plan` ([`feed::over_segments`]).
    pub async fn over<T: Send + 'static>(
        &self,
        plan: &Plan,
        names: Vec<crate::stream::names::Name>,
        work: impl FnOnce(&mut dyn FnMut() -> anyhow::Result<Option<Record>>) -> anyhow::Result<T>
            + Send
            + 'static,
    ) -> anyhow::Result<T> {
        feed::over_segments(self.store, plan, names, &self.reading(), work).await
    }

    /// Writes the database at `plan.revision` into `out` (`shown` names it in errors): the base
    /// restored to a scratch file (gone on return), then the segments read beside the writer.
    /// Returns the base's own check and the written file with what went into it.
    pub async fn rebuild(
        &self,
        plan: &Plan,
        bump: Option<i64>,
        out: File,
        shown: String,
    ) -> anyhow::Result<(Verified, (File, Rebuilt))> {
        let (base, base_verified) = self.restore_base(plan).await?;
        let base_file = File::open(&base).with_context(|| format!("opening {}", base.display()))?;
        let base_len = base_file.metadata()?.len() - verify::TRAILER_LEN as u64;
        let (base_revision, revision) = (plan.base_revision, plan.revision);
        let written = self
            .over(plan, plan.segments.clone(), move |next| {
                let r = Rebuild {
                    base: &base_file,
                    base_len,
                    base_revision,
                    revision,
                    bump,
                };
                rebuild::rebuild(&r, next, out).with_context(|| format!("writing {shown}"))
            })
            .await?;
        drop(base);
        Ok((base_verified, written))
    }

    /// Restores the plan's base (checked as `restore` checks any backup: trailer, walk, HashKV
    /// against its manifest, signature with BACKUP_VERIFY_KEY) to a scratch file, removed on drop.
    pub async fn restore_base(
        &self,
        plan: &Plan,
    ) -> anyhow::Result<(tempfile::TempPath, Verified)> {
        let Archive {
            store,
            cfg,
            shutdown,
        } = *self;
        let which: Which = plan.base.parse().map_err(|e| {
            anyhow!(
                "the base {:?} named by generation {}: {e}",
                plan.base,
                plan.generation
            )
        })?;
        let (key, trust, _) = shutdown
            .or_interrupted(choose(store, which, cfg.verify_keys.as_ref(), &[]))
            .await?;
        let path = tempfile::Builder::new()
            .prefix(".etcd-backup-base-")
            .tempfile_in(&cfg.tmp_dir)
            .with_context(|| format!("creating a scratch file in {}", cfg.tmp_dir.display()))?
            .into_temp_path();
        let to = Destination {
            path: path.to_path_buf(),
            force: true,
        };
        let restored = restore(
            store,
            key,
            &to,
            shutdown,
            cfg.progress,
            cfg.identities.clone(),
            &trust,
        )
        .await
        .with_context(|| format!("restoring the base {}", plan.base))?;
        Ok((path, restored.verified))
    }
}

/// The newest state of `key` in a snapshot file: a scan of the whole `key` bucket (it is
/// ordered by revision, not by key).
pub fn latest_in_base(path: &Path, key: &[u8]) -> anyhow::Result<Option<KeyValue>> {
    use crate::snapshot::hashkv::{parse_key, user_key};
    let file = File::open(path)?;
    let len = file.metadata()?.len() - verify::TRAILER_LEN as u64;
    let mut db = crate::snapshot::bbolt::Db::open(&file, len)?;
    let mut latest: Option<(bool, Vec<u8>)> = None;
    db.scan(b"key", b"", &mut |k, v| {
        let bad = |e: crate::snapshot::hashkv::BadEntry| crate::snapshot::bbolt::Corruption::Page {
            page: 0,
            offset: 0,
            what: format!("key bucket: {e}"),
        };
        if user_key(v).map_err(bad)? == key {
            let (_, tomb) = parse_key(k).map_err(bad)?;
            latest = Some((tomb, v.to_vec()));
        }
        Ok(())
    })?;
    match latest {
        Some((false, v)) => Ok(Some(KeyValue::decode(&v)?)),
        _ => Ok(None),
    }
}

/// The backup name of the base at `plan.revision` in its generation.
pub fn base_name(sources: &[Source], plan: &Plan) -> String {
    sources
        .iter()
        .filter(|s| s.generation == plan.generation)
        .flat_map(|s| &s.bases)
        .find(|b| b.0 == plan.revision)
        .map(|b| b.1.clone())
        .unwrap_or_default()
}
