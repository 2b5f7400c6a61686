//! `defrag`: give the free pages of each member's database back to the disk, one member at a
//! time, without stalling the cluster.
//!
//! A defrag blocks every read and write of its member while it copies the database (etcd copies
//! about 10 s per GB), and it is not replicated: each member is done on its own. So:
//!
//! 1. every voting member must be reachable through ETCD_ENDPOINTS (deduplicated by member id,
//!    learners skipped), answer a linearizable read, and have no alarm but NOSPACE; otherwise
//!    nothing is touched;
//! 2. [`plan`] (pure, [`crate::etcd::defrag`]) orders the members, followers first and the leader last, and decides each
//!    by the rule: defragment when `dbSize - dbSizeInUse >= ETCD_DEFRAG_MIN_FREE` or the
//!    database is past 80% of the quota;
//! 3. one member at a time: defragment with a timeout scaled to its size, then wait until it
//!    answers and has applied what the leader had committed before moving on. The first failure
//!    stops the run. A client timeout does not stop a defrag on the server, so after one we wait
//!    for the member to answer before giving up;
//! 4. a NOSPACE alarm is disarmed once every member is below 80% of the quota.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, CompactionOptions};
use serde::Serialize;

use super::{Context as Run, Outcome};
use crate::config::DefragConfig;
use crate::etcd::defrag::{defrag_timeout, plan, rule, Facts, Step, Verdict};
use crate::etcd::{
    linearizable, probe, Member, MemberId, MemberStatus, Members, ProbeError, QUOTA_WARN,
};

/// `defrag`'s command line.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct DefragArgs {
    /// Print the plan (per member: sizes, the rule's result, the order) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What a run did to one member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Done {
    #[serde(flatten)]
    pub step: Step,
    /// The database size after the defrag, when it ran.
    pub db_size_after: Option<u64>,
    pub seconds: Option<f64>,
}

/// The report of a run: what was planned and done, and whether a NOSPACE alarm was disarmed.
#[derive(Debug, Clone, Serialize)]
pub struct Defragged {
    pub dry_run: bool,
    pub members: Vec<Done>,
    pub disarmed: bool,
}

/// Why a member is not ready for (or back from) its defrag.
#[derive(Debug, thiserror::Error)]
enum Unready {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("{0:?} is not a URL: {1}")]
    NotAUrl(String, url::ParseError),
    #[error("not caught up within {}: {last}", humantime::format_duration(*.limit))]
    Behind { limit: Duration, last: String },
}

/// The member's status again, within the dial timeout.
async fn status(cfg: &crate::config::EtcdConfig, endpoint: &str) -> Result<MemberStatus, Unready> {
    let url = url::Url::parse(endpoint).map_err(|e| Unready::NotAUrl(endpoint.into(), e))?;
    Ok(probe(cfg, &url).await.map(|m| m.status)?)
}

/// Waits until the member at `endpoint` answers and has applied `index`, for at most `limit`.
async fn caught_up(
    cfg: &crate::config::EtcdConfig,
    endpoint: &str,
    index: u64,
    limit: Duration,
) -> Result<MemberStatus, Unready> {
    let url = url::Url::parse(endpoint).map_err(|e| Unready::NotAUrl(endpoint.into(), e))?;
    let until = Instant::now() + limit;
    let mut last = String::from("no answer yet");
    while Instant::now() < until {
        match probe(cfg, &url).await {
            Ok(mut m) if m.status.raft_applied_index >= index => {
                linearizable(&mut m.client, cfg.dial_timeout).await?;
                return Ok(m.status);
            }
            Ok(m) => {
                last = format!(
                    "applied index {} < the leader's {index}",
                    m.status.raft_applied_index
                )
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(Unready::Behind { limit, last })
}

/// The members to work on, each once, with a connected client; refuses (changing nothing) when
/// a voting member is missing, unreachable, not in a quorum, or has an alarm other than NOSPACE.
async fn healthy_members(
    cfg: &DefragConfig,
) -> anyhow::Result<(Vec<Member>, Vec<(u64, AlarmType)>)> {
    let nothing = "nothing was changed";
    let probed = Members::new(&cfg.etcd).probe_all().await;
    let mut members: Vec<Member> = Vec::new();
    for (endpoint, r) in probed {
        let m = r.map_err(|why| anyhow!("{endpoint} is unusable: {why}; {nothing}"))?;
        // One member may be listed under two endpoints: once is enough.
        if !members
            .iter()
            .any(|o| o.status.member_id == m.status.member_id)
        {
            members.push(m);
        }
    }
    let first = members
        .first_mut()
        .ok_or_else(|| anyhow!("no endpoint in ETCD_ENDPOINTS"))?;
    let list = first
        .client
        .member_list()
        .await
        .context("listing the members")?;
    let alarms: Vec<(u64, AlarmType)> = first
        .client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .context("listing the alarms")?
        .alarms()
        .iter()
        .map(|a| (a.member_id(), a.alarm()))
        .collect();
    for m in list.members() {
        let id = MemberId(m.id());
        let reached = members.iter().any(|o| o.status.member_id == id);
        if m.is_learner() {
            members.retain(|o| o.status.member_id != id);
            tracing::info!("member {id} ({}) is a learner: skipped", m.name());
        } else if !reached {
            bail!(
                "member {id} ({}, client URLs {}) is not among ETCD_ENDPOINTS, or did not answer: every voting member must be reachable to defragment safely; add its client URL; {nothing}",
                m.name(),
                m.client_urls().join(", ")
            );
        }
    }
    // An endpoint of another cluster must not be defragmented along with this one.
    if let Some(stray) = members.iter().find(|o| {
        !list
            .members()
            .iter()
            .any(|m| MemberId(m.id()) == o.status.member_id)
    }) {
        bail!(
            "{} is member {} of cluster {}, which is not in this cluster's member list: ETCD_ENDPOINTS must name one cluster; {nothing}",
            stray.status.endpoint, stray.status.member_id, stray.status.cluster_id
        );
    }
    for (id, alarm) in &alarms {
        if *alarm != AlarmType::Nospace {
            bail!("member {id:x} has the alarm {alarm:?}: fix it first (a CORRUPT alarm means a diverged member); {nothing}");
        }
    }
    for m in &mut members {
        linearizable(&mut m.client, cfg.etcd.dial_timeout)
            .await
            .map_err(|why| anyhow!("member {} at {} fails a linearizable read ({why}): the cluster is not healthy; {nothing}", m.status.member_id, m.status.endpoint))?;
    }
    Ok((members, alarms))
}

/// The `defrag` command: [`defrag`], then its metrics pushed (not for a dry run). A shutdown
/// stops it between members, never inside a defrag (the server would go on regardless).
pub async fn run(cfg: &DefragConfig, args: DefragArgs, ctx: &Run) -> anyhow::Result<Defragged> {
    let (now, shutdown) = (ctx.now, &ctx.shutdown);
    let started = Instant::now();
    let result = defrag(cfg, args, shutdown).await;
    if !args.dry_run {
        let done = result
            .as_ref()
            .map(|r| r.members.as_slice())
            .unwrap_or_default();
        let ran = || done.iter().filter(|d| d.db_size_after.is_some());
        let report = crate::metrics::DefragMetrics {
            finished: now + started.elapsed(),
            success: result.is_ok(),
            defragmented: ran().count() as u64,
            size_before: ran().map(|d| d.step.member.db_size).sum(),
            size_after: ran().filter_map(|d| d.db_size_after).sum(),
        };
        crate::metrics::push_text(&cfg.metrics, crate::metrics::encode_defrag(&report)).await;
    }
    result
}

/// Checks, plans and defragments (see the module's doc).
pub async fn defrag(
    cfg: &DefragConfig,
    args: DefragArgs,
    shutdown: &crate::shutdown::Shutdown,
) -> anyhow::Result<Defragged> {
    let dry_run = args.dry_run;
    let quota = cfg.etcd.quota;
    let (mut members, _) = healthy_members(cfg).await?;
    if cfg.compact && !dry_run {
        let leader = members
            .iter_mut()
            .find(|m| m.status.is_leader)
            .ok_or_else(|| anyhow!("no member is the leader; nothing was changed"))?;
        let rev = leader
            .client
            .status()
            .await?
            .header()
            .map_or(0, |h| h.revision());
        leader
            .client
            .compact(rev, Some(CompactionOptions::new().with_physical()))
            .await
            .with_context(|| format!("compacting to revision {rev} (ETCD_DEFRAG_COMPACT)"))?;
        tracing::info!(revision = rev, "compacted (ETCD_DEFRAG_COMPACT=true)");
        for m in &mut members {
            m.status = status(&cfg.etcd, &m.status.endpoint.clone())
                .await
                .map_err(|e| anyhow!(e))?;
        }
    }
    let facts: Vec<Facts> = members.iter().map(|m| Facts::of(&m.status)).collect();
    let steps = plan(&facts, cfg.min_free, quota);
    for s in &steps {
        tracing::info!(
            member = %s.member.member_id, endpoint = %s.member.endpoint,
            leader = s.member.is_leader, defrag = s.defrag, "plan: {}", s.reason
        );
    }
    if dry_run {
        let members = steps
            .into_iter()
            .map(|step| Done {
                step,
                db_size_after: None,
                seconds: None,
            })
            .collect();
        return Ok(Defragged {
            dry_run,
            members,
            disarmed: false,
        });
    }
    let mut done = Vec::new();
    for step in steps {
        if let Some(why) = shutdown.fired() {
            return Err(crate::shutdown::Interrupted(why))
                .context("stopped between two members; the others were not touched");
        }
        let endpoint = step.member.endpoint.clone();
        let id = step.member.member_id;
        if !step.defrag {
            tracing::info!(member = %id, "skipping: {}", step.reason);
            done.push(Done {
                step,
                db_size_after: None,
                seconds: None,
            });
            continue;
        }
        let member = members
            .iter_mut()
            .find(|m| m.status.member_id == id)
            .expect("planned");
        // The rule again, on fresh figures: another member's defrag took a while.
        let now = status(&cfg.etcd, &endpoint).await.map_err(|e| {
            anyhow!("member {id} at {endpoint} stopped answering before its turn ({e}); stopped")
        })?;
        if let Verdict::Skip(why) = rule(&Facts::of(&now), cfg.min_free, quota) {
            tracing::info!(member = %id, "skipping at its turn: {why}");
            done.push(Done {
                step: Step {
                    reason: why,
                    ..step
                },
                db_size_after: None,
                seconds: None,
            });
            continue;
        }
        let timeout = defrag_timeout(now.db_size_in_use.max(now.db_size));
        tracing::info!(member = %id, endpoint = %endpoint, leader = now.is_leader, db_size = now.db_size, timeout_s = timeout.as_secs(), "defragmenting");
        let started = Instant::now();
        match tokio::time::timeout(timeout, member.client.defragment()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("defragmenting member {id} at {endpoint} failed: {}; check the member's log and disk space (a defrag needs about its in-use size free); stopped before the next member", crate::describe(&e)),
            Err(_) => {
                // The server goes on after a client timeout: never start the next one meanwhile.
                let r = caught_up(&cfg.etcd, &endpoint, 0, timeout).await;
                bail!("defragmenting member {id} at {endpoint} took longer than {} ({}); stopped before the next member: check its disk and load",
                    humantime::format_duration(timeout),
                    match r { Ok(_) => "it answers again".to_string(), Err(e) => e.to_string() })
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        // Caught up: it has applied what the leader had committed when its defrag ended.
        let leader = members_leader_index(cfg, &members).await?;
        let after = caught_up(&cfg.etcd, &endpoint, leader, timeout)
            .await
            .map_err(|e| anyhow!("member {id} at {endpoint} after its defrag: {e}; stopped before the next member"))?;
        tracing::info!(member = %id, before = now.db_size, after = after.db_size, seconds = format!("{seconds:.1}"), "defragmented");
        done.push(Done {
            step,
            db_size_after: Some(after.db_size),
            seconds: Some(seconds),
        });
    }
    let disarmed = disarm_nospace(cfg, &mut members).await?;
    Ok(Defragged {
        dry_run,
        members: done,
        disarmed,
    })
}

/// The leader's committed raft index, from a fresh status of each member until one is the leader.
async fn members_leader_index(cfg: &DefragConfig, members: &[Member]) -> anyhow::Result<u64> {
    for m in members {
        if let Ok(s) = status(&cfg.etcd, &m.status.endpoint).await {
            if s.is_leader {
                return Ok(s.raft_index);
            }
        }
    }
    bail!("no member reports being the leader: stopped; check the cluster's health")
}

/// Disarms NOSPACE when every member is below 80% of the quota now; etcd stays read-only until
/// then.
async fn disarm_nospace(cfg: &DefragConfig, members: &mut [Member]) -> anyhow::Result<bool> {
    let Some(first) = members.first_mut() else {
        return Ok(false);
    };
    let alarms = first
        .client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await?;
    let nospace: Vec<u64> = alarms
        .alarms()
        .iter()
        .filter(|a| a.alarm() == AlarmType::Nospace)
        .map(|a| a.member_id())
        .collect();
    if nospace.is_empty() {
        return Ok(false);
    }
    for m in members.iter() {
        let s = status(&cfg.etcd, &m.status.endpoint)
            .await
            .map_err(|e| anyhow!(e))?;
        if s.db_size as f64 > cfg.etcd.quota as f64 * QUOTA_WARN {
            tracing::warn!(member = %s.member_id, db_size = s.db_size, "a NOSPACE alarm stays: this member is still past 80% of the quota; compact (ETCD_DEFRAG_COMPACT=true) or raise the quota");
            return Ok(false);
        }
    }
    let first = members.first_mut().expect("checked");
    for id in nospace {
        let mut opts = AlarmOptions::new();
        opts.with_member(id);
        first
            .client
            .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(opts))
            .await
            .with_context(|| format!("disarming the NOSPACE alarm of member {id:x}"))?;
        tracing::warn!("disarmed the NOSPACE alarm of member {id:x}: every member is below 80% of the quota; etcd accepts writes again");
    }
    Ok(true)
}

impl Outcome for Defragged {}
