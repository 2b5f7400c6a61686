//! The `backup` command: one backup taken and published ([`crate::backup::take`], where the
//! order of the checks lives), then a prune, only after a successful upload and never of the
//! object just written, then the run's metrics pushed (success or failure) when a Pushgateway
//! is set.

use std::time::{Duration, Instant};

use super::prune::{prune, PruneArgs, Pruning};
use super::Context;
use crate::backup::{take, Taken};
use crate::config::BackupConfig;
use crate::etcd::{self, MemberStatus};
use crate::metrics;
use crate::store::Store;

/// The summary of a whole `backup` run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// What was published, from which member, against the cluster.
    pub taken: Taken,
    pub pruned: usize,
    pub prune_time: Duration,
    pub prune_error: Option<String>,
    /// Why the metrics push failed, if it did (it never fails the run).
    pub metrics_error: Option<String>,
}

impl Summary {
    /// The run's one summary line: what was published, from which member, how long each part
    /// took, and whether the prune and the manifest went through.
    pub fn log(&self) {
        let Taken {
            published: p,
            member,
            cluster,
        } = &self.taken;
        tracing::info!(
            key = %p.url,
            raw_bytes = p.raw_bytes,
            stored_bytes = p.stored_bytes,
            ratio = format!("{:.2}", p.raw_bytes as f64 / p.stored_bytes.max(1) as f64),
            revision = p.verified.status.revision,
            hash = p.verified.status.hash,
            hash_kv = p.verified.status.hash_kv.map(|h| h.hash),
            members = cluster.as_ref().map(|c| c.members()).unwrap_or_else(|| "unchecked".into()),
            total_keys = p.verified.status.total_key,
            member = %member.member_id,
            stream_s = format!("{:.2}", p.stream_time.as_secs_f64()),
            verify_s = format!("{:.2}", p.verify_time.as_secs_f64()),
            finish_s = format!("{:.2}", p.finish_time.as_secs_f64()),
            prune_s = format!("{:.2}", self.prune_time.as_secs_f64()),
            pruned = self.pruned,
            prune_failed = self.prune_error.is_some(),
            manifest_failed = p.manifest_error.is_some(),
            metrics_failed = self.metrics_error.is_some(),
            "backup complete"
        );
    }
}

/// The `backup` command against `store`. `now` names the object and anchors retention. The
/// run's metrics are pushed at the end, whatever the outcome.
pub async fn run(store: &Store, cfg: &BackupConfig, ctx: &Context) -> anyhow::Result<Summary> {
    let now = ctx.now;
    crate::scratch::sweep_logged(&cfg.pipeline.tmp_dir);
    let started = Instant::now();
    if let Some(w) = cfg
        .etcd
        .identity
        .as_ref()
        .and_then(|id| etcd::cert_warning(id, now))
    {
        tracing::warn!("{w}");
    }
    let mut used = None;
    let result = back_up(store, cfg, ctx, &mut used).await;
    let report = metrics::RunMetrics {
        finished: now + started.elapsed(),
        duration: started.elapsed(),
        success: result.is_ok(),
        published: result.as_ref().ok().map(|s| metrics::Published {
            snapshot_bytes: s.taken.published.raw_bytes,
            stored_bytes: s.taken.published.stored_bytes,
            revision: s.taken.published.verified.status.revision,
            members_differing: s.taken.cluster.as_ref().map_or(0, |c| c.differing().len()),
            members_unchecked: s.taken.cluster.as_ref().map_or(0, |c| c.unchecked().len()),
        }),
        db: used.map(|m: MemberStatus| metrics::DbSizes {
            size: m.db_size,
            in_use: m.db_size_in_use,
        }),
        quota: Some(cfg.etcd.quota),
        client_cert_not_after: cfg.etcd.identity.as_ref().map(|id| id.not_after),
    };
    let metrics_error = metrics::push(&cfg.metrics, &report).await;
    result.map(|s| Summary { metrics_error, ..s })
}

/// The backup, then the prune: `used` is the last member chosen, for the metrics.
async fn back_up(
    store: &Store,
    cfg: &BackupConfig,
    ctx: &Context,
    used: &mut Option<MemberStatus>,
) -> anyhow::Result<Summary> {
    let taken = take(cfg, store, ctx.now, &ctx.shutdown, used).await?;
    let key = taken.published.key;
    // The backup is published: a prune failure is reported but does not undo or fail it.
    let t = Instant::now();
    let by = Pruning {
        policy: &cfg.policy,
        protect: Some(&key),
        verify: cfg.verify_keys.as_ref(),
    };
    let pruning = prune(store, &by, PruneArgs::default(), ctx);
    let (pruned, prune_error) = match pruning.await {
        Ok(p) => (p.deleted.len(), None),
        Err(e) => {
            tracing::warn!("the backup was published, but pruning failed: {e:#}");
            (0, Some(format!("{e:#}")))
        }
    };
    Ok(Summary {
        taken,
        pruned,
        prune_time: t.elapsed(),
        prune_error,
        metrics_error: None,
    })
}
