//! The probe behind adaptive pacing, and the task that runs the controller. The probe is a
//! serializable read of a key nobody writes, sent to the member being read over a connection
//! of its own: served from that member alone, it waits where that member's work waits (its
//! goroutines for the CPU, its backend's read transaction), and it writes nothing, so it adds
//! no revision to the history a stream records. A connection of its own keeps it out of the
//! snapshot's HTTP/2 flow control, which our own pauses fill.

use std::time::Duration;

use etcd_client::{Client, GetOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::adaptive::{deadline_floor, Controller};
use super::Rate;

/// The key read: under our own prefix, never written.
pub const KEY: &str = "/etcd-backup/pacing-probe";
/// How often the member is probed while the snapshot is read.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// A probe slower than this counts as failed (so as over the target).
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// Probes taken before reading, for the base delay.
pub const BASELINE: usize = 5;

/// How one run of adaptive pacing went, for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub base: Option<Duration>,
    pub probes: u32,
    pub failed: u32,
    pub cuts: u32,
    pub lowest: u64,
    pub highest: u64,
    pub last: u64,
    /// Probes after which the deadline, not the member, set the rate.
    pub at_deadline: u32,
}

/// What the read must finish within: the snapshot's size as the member reported it, and
/// `ETCD_SNAPSHOT_TIMEOUT`.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub size: u64,
    pub timeout: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |r: u64| r as f64 / (1 << 20) as f64;
        write!(
            f,
            "adaptive pacing: base delay {:.1} ms, {} probes ({} failed), {} cuts, rate {:.0}-{:.0} MiB/s, last {:.0}",
            self.base.map_or(f64::NAN, |b| b.as_secs_f64() * 1e3),
            self.probes,
            self.failed,
            self.cuts,
            mib(self.lowest),
            mib(self.highest),
            mib(self.last)
        )?;
        if self.at_deadline > 0 {
            write!(
                f,
                "; the deadline (ETCD_SNAPSHOT_TIMEOUT) set the rate after {} probes",
                self.at_deadline
            )?;
        }
        Ok(())
    }
}

/// One timed probe and the member's revision it answered at (if its answer said); `None` when
/// it failed or took longer than [`TIMEOUT`].
async fn time(client: &mut Client) -> Option<(Duration, Option<i64>)> {
    let opts = GetOptions::new()
        .with_serializable()
        .with_keys_only()
        .with_limit(1);
    let start = tokio::time::Instant::now();
    match tokio::time::timeout(TIMEOUT, client.get(KEY, Some(opts))).await {
        Ok(Ok(r)) => Some((start.elapsed(), r.header().map(|h| h.revision()))),
        Ok(Err(e)) => {
            tracing::debug!("pacing probe failed: {e}");
            None
        }
        Err(_) => None,
    }
}

/// The controller at work: a [`Rate`] for the pacer, changed after every probe until
/// [`Running::finish`].
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Summary>,
}

impl Running {
    /// Stops probing; how it went.
    pub async fn finish(self) -> Option<Summary> {
        let _ = self.stop.send(());
        self.task.await.ok()
    }
}

/// Takes the base delay with [`BASELINE`] probes, then probes every [`INTERVAL`] and sets the
/// returned rate from `controller`, never so slow that the rest of the snapshot would miss
/// `deadline` (counted from here, a little before the stream starts).
pub async fn start(
    mut client: Client,
    mut controller: Controller,
    deadline: Deadline,
) -> (Rate, Running) {
    let mut revision = None;
    for _ in 0..BASELINE {
        if let Some((d, r)) = time(&mut client).await {
            controller.baseline(d);
            revision = r.or(revision);
        }
    }
    let rate = Rate::new(controller.rate());
    let (stop, mut stopped) = oneshot::channel();
    let shared = rate.clone();
    let task = tokio::spawn(async move {
        let mut s = Summary {
            base: controller.base(),
            probes: 0,
            failed: 0,
            cuts: 0,
            lowest: controller.rate(),
            highest: controller.rate(),
            last: controller.rate(),
            at_deadline: 0,
        };
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let (mut read, mut since) = (shared.bytes_read(), tokio::time::Instant::now());
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            let probe = time(&mut client).await;
            let sample = probe.map(|(d, _)| d);
            // A revision not known, before or now, counts as written.
            let now_revision = probe.and_then(|(_, r)| r);
            let wrote = match (revision, now_revision) {
                (Some(before), Some(now)) => before != now,
                _ => true,
            };
            revision = now_revision.or(revision);
            // Bytes a second read since the last probe (the probe's own time included).
            let (now_read, now) = (shared.bytes_read(), tokio::time::Instant::now());
            let secs = now.duration_since(since).as_secs_f64().max(1e-3);
            let delivered = (now_read.saturating_sub(read) as f64 / secs) as u64;
            (read, since) = (now_read, now);
            controller.need(deadline_floor(
                deadline.size,
                now_read,
                now.duration_since(started),
                deadline.timeout,
            ));
            let r = controller.observe(sample, wrote, delivered);
            s.at_deadline += u32::from(controller.at_deadline());
            shared.set(r);
            tracing::debug!(
                probe_ms = sample.map(|d| d.as_secs_f64() * 1e3),
                rate_mib = r >> 20,
                read_mib = delivered >> 20,
                wrote,
                "pacing"
            );
            s.probes += 1;
            s.failed += u32::from(sample.is_none());
            s.lowest = s.lowest.min(r);
            s.highest = s.highest.max(r);
            s.last = r;
        }
        s.base = controller.base();
        s.cuts = controller.cuts();
        s
    });
    (rate, Running { stop, task })
}
