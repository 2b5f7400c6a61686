//! Pacing the snapshot read. Not reading is what slows etcd down: gRPC's flow control stops
//! its sender once the window (`ETCD_SNAPSHOT_WINDOW`) fills, so a reader that waits between
//! chunks paces the member's own goroutines, which our niceness and cgroup weight cannot.
//!
//! The schedule is a pure function ([`pace`]); [`Pacer`] sleeps by it, at a [`Rate`] that is
//! either fixed (`ETCD_SNAPSHOT_RATE`) or set as it goes by [`adaptive`]'s controller, which
//! [`probe`] feeds with the member's response times.

pub mod adaptive;
pub mod probe;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The rate a [`Pacer`] reads at, in bytes a second; shared, so that the adaptive controller
/// can change it while the stream is read, and counting the bytes read, so that the controller
/// knows what the reader really took. `u64::MAX` reads unpaced.
#[derive(Debug, Clone)]
pub struct Rate(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    bytes_per_second: AtomicU64,
    read: AtomicU64,
}

impl Rate {
    pub fn new(bytes_per_second: u64) -> Rate {
        Rate(Arc::new(Shared {
            bytes_per_second: AtomicU64::new(bytes_per_second),
            read: AtomicU64::new(0),
        }))
    }

    pub fn get(&self) -> u64 {
        self.0.bytes_per_second.load(Ordering::Relaxed)
    }

    pub fn set(&self, bytes_per_second: u64) {
        self.0
            .bytes_per_second
            .store(bytes_per_second, Ordering::Relaxed);
    }

    /// The bytes read through pacers at this rate so far.
    pub fn bytes_read(&self) -> u64 {
        self.0.read.load(Ordering::Relaxed)
    }
}

/// How far ahead of the schedule reading may get before it sleeps. Sleeps are taken only once
/// this much is due: the timer rounds each sleep up to the next millisecond, and a wait for
/// every 32 KiB chunk would cap the rate near 16 MiB/s whatever was asked.
pub const SLACK: Duration = Duration::from_millis(50);

/// Paces one stream at its [`Rate`].
pub struct Pacer {
    rate: Rate,
    start: tokio::time::Instant,
    /// When the next read is due, as time since `start`.
    due: Duration,
}

impl Pacer {
    pub fn new(rate: Rate) -> Pacer {
        Pacer {
            rate,
            start: tokio::time::Instant::now(),
            due: Duration::ZERO,
        }
    }

    /// `len` bytes were just read: waits while reading is more than [`SLACK`] ahead of the
    /// schedule.
    pub async fn read(&mut self, len: u64) {
        self.rate.0.read.fetch_add(len, Ordering::Relaxed);
        let rate = self.rate.get();
        if rate == u64::MAX {
            return;
        }
        let now = self.start.elapsed();
        self.due = pace(self.due, now, len, rate);
        if self.due > now + SLACK {
            tokio::time::sleep(self.due - now).await;
        }
    }
}

/// When the next chunk may be read, as time since the stream started: `len` bytes were just
/// read at `now`, and the previous read was due at `due`. Each chunk buys `len / rate` of time
/// from the later of the two, so the rate is not exceeded (beyond [`SLACK`]'s worth) and no
/// credit is saved up: after a slow stretch of etcd's, reading does not burst to catch up,
/// which would defeat the limit.
pub fn pace(due: Duration, now: Duration, len: u64, rate: u64) -> Duration {
    // Saturating: `len` may be a size etcd reported, and no size may panic.
    let cost =
        Duration::try_from_secs_f64(len as f64 / rate.max(1) as f64).unwrap_or(Duration::MAX);
    due.max(now).saturating_add(cost)
}

/// Why a snapshot of `db_size` bytes read at `rate` cannot finish within `timeout`, if it
/// cannot: said before the snapshot is taken rather than after half an hour of it.
pub fn rate_too_slow(db_size: u64, rate: Option<u64>, timeout: Duration) -> Option<String> {
    let rate = rate?;
    let need = pace(Duration::ZERO, Duration::ZERO, db_size, rate);
    (need > timeout).then(|| {
        format!(
            "reading the {} MiB database at ETCD_SNAPSHOT_RATE={} MiB/s takes {}, longer than ETCD_SNAPSHOT_TIMEOUT={}: raise either",
            db_size >> 20,
            rate >> 20,
            humantime::format_duration(Duration::from_secs(need.as_secs())),
            humantime::format_duration(timeout)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate reached, on tokio's paused clock: a version that slept for every chunk was
    /// capped near 16 MiB/s by the timer's rounding, which only a benchmark had found.
    #[tokio::test(start_paused = true)]
    async fn a_pacer_reaches_the_rate_it_aims_at() {
        for rate_mib in [1u64, 16, 64, 256] {
            let rate = rate_mib << 20;
            let mut p = Pacer::new(Rate::new(rate));
            let start = tokio::time::Instant::now();
            // 32 KiB chunks, as etcd sends them, for two seconds' worth.
            let total = 2 * rate;
            for _ in 0..total / (32 << 10) {
                p.read(32 << 10).await;
            }
            let took = start.elapsed().as_secs_f64();
            let reached = total as f64 / took / (1 << 20) as f64;
            assert!(
                (reached - rate_mib as f64).abs() / (rate_mib as f64) < 0.05,
                "aimed at {rate_mib} MiB/s, reached {reached:.1} MiB/s"
            );
        }
    }

    #[test]
    fn pace_spends_len_over_rate_from_the_later_of_due_and_now() {
        let ms = Duration::from_millis;
        // (due, now, len, rate) -> next due
        let cases = [
            // On time: the next read is one chunk's worth later.
            (ms(0), ms(0), 1_000, 10_000, ms(100)),
            (ms(100), ms(100), 1_000, 10_000, ms(200)),
            // Downstream was slow (now is past due): no credit saved up, no burst.
            (ms(100), ms(900), 1_000, 10_000, ms(1_000)),
            // Early (the chunk came fast): wait for what is due.
            (ms(500), ms(120), 1_000, 10_000, ms(600)),
            // An empty chunk costs nothing; a zero rate is taken as 1 B/s, never a panic.
            (ms(50), ms(10), 0, 10_000, ms(50)),
            (ms(0), ms(0), 3, 0, ms(3_000)),
            // A size no etcd has saturates instead of overflowing.
            (ms(5), ms(0), u64::MAX, 1, Duration::MAX),
            (Duration::MAX, ms(0), 1, 1, Duration::MAX),
        ];
        for (due, now, len, rate, want) in cases {
            assert_eq!(
                pace(due, now, len, rate),
                want,
                "{due:?} {now:?} {len} {rate}"
            );
        }
    }

    #[test]
    fn a_rate_that_cannot_finish_in_time_is_refused_before_the_snapshot() {
        let (gib, mib, min) = (1u64 << 30, 1u64 << 20, Duration::from_secs(60));
        // (db size, rate, timeout) -> refused?
        let cases = [
            (gib, None, min, false),
            (gib, Some(30 * mib), 30 * min, false), // 34 s
            (gib, Some(mib), 30 * min, false),      // 17 min
            (8 * gib, Some(mib), 30 * min, true),   // 2 h 16 min
            (gib, Some(mib), 10 * min, true),
        ];
        for (size, rate, timeout, refused) in cases {
            let e = rate_too_slow(size, rate, timeout);
            assert_eq!(e.is_some(), refused, "{size} {rate:?} {timeout:?}: {e:?}");
        }
        let e = rate_too_slow(8 * gib, Some(mib), 30 * min).unwrap();
        assert!(
            e.contains("ETCD_SNAPSHOT_RATE=1 MiB/s takes 2h 16m 32s"),
            "{e}"
        );
        assert!(e.contains("ETCD_SNAPSHOT_TIMEOUT=30m"), "{e}");
        assert!(rate_too_slow(u64::MAX, Some(mib), 30 * min).is_some());
    }
}
