//! One backup taken and published, the work both the `backup` command and each base of a
//! `stream` generation do:
//!
//! 1. check the bucket (a missing bucket fails before any snapshot is taken);
//! 2. archive the extra files, if any (deleted again unless the snapshot is published too);
//! 3. choose a member ([`Members`]) and start its snapshot, paced ([`crate::pacing`]);
//! 4. check the scratch space against the database size the member reports;
//! 5. stream, verify and publish ([`pipeline::publish`]); before the upload completes, the
//!    snapshot's HashKV is checked against every member ([`consistency`]); a stream that
//!    breaks midway, or a snapshot whose member diverged from the majority, starts over from
//!    the next member, since the failed attempt published nothing.
//!
//! Prune and the metrics push are the command's ([`crate::commands::backup`]).

use chrono::{DateTime, Utc};

use crate::config::{BackupConfig, Pacing};
use crate::consistency::{self, NotTheCluster, Verdict};
use crate::etcd::{self, MemberStatus, Members, Snapshot};
use crate::key::BackupKey;
use crate::pacing::adaptive::Controller;
use crate::pacing::{probe, Rate};
use crate::pipeline::{self, Limits, Published};
use crate::scratch;
use crate::shutdown::Shutdown;
use crate::snapshot::hashkv;
use crate::snapshot::verify::{Verified, TRAILER_LEN};
use crate::store::Store;

/// A published backup: what went up, from which member, and how it compared with the cluster.
#[derive(Debug, Clone)]
pub struct Taken {
    pub published: Published,
    pub member: MemberStatus,
    /// The snapshot against every member; `None` when its HashKV could not be computed.
    pub cluster: Option<consistency::Comparison>,
}

impl Taken {
    /// The base's one line in a stream's log.
    pub fn log(&self) {
        let p = &self.published;
        tracing::info!(
            key = %p.url,
            raw_bytes = p.raw_bytes,
            stored_bytes = p.stored_bytes,
            revision = p.verified.status.revision,
            hash_kv = p.verified.status.hash_kv.map(|h| h.hash),
            members = self.cluster.as_ref().map(|c| c.members()).unwrap_or_else(|| "unchecked".into()),
            member = %self.member.member_id,
            stream_s = format!("{:.2}", p.stream_time.as_secs_f64()),
            "base published"
        );
    }
}

/// Takes and publishes one backup named by `now`. `used` is the last member chosen, for the
/// metrics, whatever the outcome.
pub async fn take(
    cfg: &BackupConfig,
    store: &Store,
    now: DateTime<Utc>,
    shutdown: &Shutdown,
    used: &mut Option<MemberStatus>,
) -> anyhow::Result<Taken> {
    tracing::debug!(bucket = %store.url_prefix(), "checking the bucket");
    tokio::select! {
        r = store.check() => r?,
        i = shutdown.requested() => return Err(i.into()),
    };
    let key =
        BackupKey::new(now, cfg.pipeline.codec).encrypted(!cfg.pipeline.recipients.is_empty());
    // The files archive goes first, and is deleted again unless the snapshot is published too:
    // a backup and its files appear together or not at all.
    let mut extra = Vec::new();
    if !cfg.include.is_empty() {
        let stored =
            crate::files::publish(&cfg.include, store, &key, &cfg.pipeline, shutdown).await?;
        tracing::info!(key = %store.files_url(&key), stored_bytes = stored.len, "files archived");
        extra.push(("files-archive", key.files_name()));
        extra.push(("files-size", stored.len.to_string()));
        if let Some(sha) = stored.sha256 {
            extra.push(("files-sha256", crate::snapshot::verify::hex(&sha)));
        }
    }
    let snapshot = snapshot(cfg, store, key, extra, shutdown, used).await;
    if snapshot.is_err() && !cfg.include.is_empty() {
        if let Err(e) = store.delete_files(&key).await {
            tracing::error!("the snapshot failed and its files archive could not be deleted: {e}; delete {} by hand", store.files_url(&key));
        }
    }
    let (published, status, cluster) = snapshot?;

    Ok(Taken {
        published,
        member: status,
        cluster,
    })
}

/// The snapshot, from the first member that serves it whole: a stream that breaks midway is
/// started over from the next member (the failed attempt published nothing: its upload was
/// aborted, so the same key is still free).
async fn snapshot(
    cfg: &BackupConfig,
    store: &Store,
    key: BackupKey,
    extra: crate::store::Metadata,
    shutdown: &Shutdown,
    used: &mut Option<MemberStatus>,
) -> anyhow::Result<(Published, MemberStatus, Option<consistency::Comparison>)> {
    let mut members = Members::new(&cfg.etcd);
    loop {
        let (member, snapshot) = tokio::select! {
            m = members.start_snapshot() => m?,
            i = shutdown.requested() => return Err(i.into()),
        };
        let status = member.status.clone();
        *used = Some(status.clone());
        let attempted = attempt(cfg, store, key, &status, snapshot, extra.clone(), shutdown).await;
        match attempted {
            Ok((p, report)) => return Ok((p, status, report)),
            Err(e) if etcd::is_broken_stream(&e) => {
                tracing::warn!(
                    "{e:#}; nothing was published; starting over from the next endpoint"
                );
                members.fail(&status.endpoint, format!("{e:#}"));
            }
            Err(e) if consistency::diverged_source(&e).is_some() => {
                tracing::error!("{e:#}; starting over from the next endpoint");
                members.fail(
                    &status.endpoint,
                    format!("member {} diverged from the majority of the cluster (its HashKV differs); nothing from it was published", status.member_id),
                );
            }
            Err(e) => return Err(e),
        }
    }
}

/// The check of [`pipeline::publish`]: the snapshot's HashKV against every member. Publishes
/// (returns the manifest's figures and the report) unless the snapshot's member is in the
/// minority or the members split.
async fn check_cluster(
    cfg: &BackupConfig,
    status: &MemberStatus,
    file: std::fs::File,
    verified: Verified,
) -> anyhow::Result<(crate::store::Metadata, Option<consistency::Comparison>)> {
    let Some(ours) = verified.status.hash_kv else {
        let why = verified.status.hash_kv_skipped.unwrap_or_default();
        tracing::warn!("the snapshot is not compared with the members: {why}");
        return Ok((
            vec![("etcd-hashkv-members", format!("unchecked ({why})"))],
            None,
        ));
    };
    let asked = cfg.etcd.hashkv_members;
    if asked == crate::config::Asked::None {
        tracing::warn!("the snapshot is not compared with the members: ETCD_HASHKV_MEMBERS=none");
        return Ok((
            vec![
                (
                    "etcd-hashkv-members",
                    "unchecked (ETCD_HASHKV_MEMBERS=none)".to_string(),
                ),
                ("etcd-hashkv-asked", asked.to_string()),
            ],
            None,
        ));
    }
    let db_len = file.metadata()?.len().saturating_sub(TRAILER_LEN as u64);
    // Rare (a member compacted between the snapshot and the question), and a scan of the file
    // at about a second per GB: on a thread of its own, as the runtime has only one.
    let file = std::sync::Arc::new(file);
    let rehash = |compact| {
        let file = file.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                hashkv::hash_at(&*file, db_len, ours.revision, compact)
                    .ok()
                    .and_then(Result::ok)
                    .map(|h| h.hash)
            })
            .await
            .ok()
            .flatten()
        }
    };
    let report = consistency::check(&cfg.etcd, status, ours, rehash).await;
    // Only when the snapshot has the majority is a differing member the diverged one; otherwise
    // the error below says what is known.
    if report.verdict == Verdict::Publish {
        for c in report.differing() {
            tracing::error!(
                "member {}'s HashKV at revision {} differs from the snapshot's and the majority's: {c}; that member has diverged from the others; check with `etcdctl endpoint hashkv --cluster --rev={}` and replace its data",
                c.member_id, ours.revision, ours.revision
            );
        }
    }
    for c in report.unchecked() {
        tracing::warn!(
            "the snapshot was not compared with member {}: {c}",
            c.member_id
        );
    }
    if report.verdict != Verdict::Publish {
        return Err(NotTheCluster {
            member: status.member_id.to_string(),
            endpoint: status.endpoint.clone(),
            report,
        }
        .into());
    }
    tracing::info!(
        hash_kv = ours.hash, revision = ours.revision, compact_revision = ours.compact_revision,
        members = %report.members(), "snapshot checked against the members' HashKV"
    );
    Ok((report.figures(asked), Some(report)))
}

/// One try of the backup from the member whose `status` this is: the scratch space check, then
/// the stream into [`pipeline::publish`].
async fn attempt(
    cfg: &BackupConfig,
    store: &Store,
    key: BackupKey,
    status: &MemberStatus,
    snapshot: Snapshot,
    mut extra: crate::store::Metadata,
    shutdown: &Shutdown,
) -> anyhow::Result<(Published, Option<consistency::Comparison>)> {
    tracing::info!("using {status}");
    if let Some(w) = etcd::quota_warning(status, cfg.etcd.quota) {
        tracing::warn!("{w}");
    }
    scratch::ensure_room(&cfg.pipeline.tmp_dir, status.db_size)?;
    if let Some(e) = crate::pacing::rate_too_slow(
        status.db_size,
        cfg.etcd.snapshot_rate,
        cfg.etcd.snapshot_timeout,
    ) {
        anyhow::bail!("{e}");
    }
    extra.extend([
        ("etcd-version", status.version.clone()),
        ("etcd-cluster-id", status.cluster_id.clone()),
        ("etcd-member-id", status.member_id.to_string()),
    ]);
    let (rate, pacing) = pace(&cfg.etcd, status).await;
    let limits = Limits {
        total: cfg.etcd.snapshot_timeout,
        stall: cfg.etcd.stall_timeout,
        rate,
        shutdown: shutdown.clone(),
        expected_size: Some(status.db_size),
    };
    let source = snapshot.into_stream();
    let check = |file, verified| check_cluster(cfg, status, file, verified);
    let published =
        pipeline::publish(source, store, key, &cfg.pipeline, &limits, extra, check).await;
    if let Some(p) = pacing {
        if let Some(summary) = p.finish().await {
            tracing::info!("{summary}");
        }
    }
    published
}

/// The rate the snapshot of `status`'s member is read at: the cap alone, or the adaptive
/// controller's (started here, with its probe on a connection of its own). Without a probe
/// connection the read is paced at the controller's starting rate, not left unpaced.
async fn pace(
    cfg: &crate::config::EtcdConfig,
    status: &MemberStatus,
) -> (Option<Rate>, Option<probe::Running>) {
    let Pacing::Adaptive { target } = cfg.pacing else {
        return (cfg.snapshot_rate.map(Rate::new), None);
    };
    let controller = Controller::new(target, cfg.snapshot_rate);
    match etcd::connect(cfg, &status.endpoint, None).await {
        Ok(client) => {
            let deadline = probe::Deadline {
                size: status.db_size,
                timeout: cfg.snapshot_timeout,
            };
            let (rate, running) = probe::start(client, controller, deadline).await;
            (Some(rate), Some(running))
        }
        Err(e) => {
            tracing::warn!(
                "adaptive pacing cannot probe {} ({e}); reading at a fixed {} MiB/s",
                status.endpoint,
                controller.rate() >> 20
            );
            (Some(Rate::new(controller.rate())), None)
        }
    }
}
