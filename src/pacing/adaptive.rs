//! The adaptive rate: a delay-based controller in the spirit of LEDBAT (RFC 6817). The member
//! being read answers a cheap probe; its fastest answer is the base delay, and what it takes
//! beyond that is queueing, ours or a writer's. While the queueing stays under the target the
//! rate grows, in proportion to how far under it is (doubling until the first time it is
//! over, as a slow start); once it is over, the rate halves, at most once per [`HOLD`] probes
//! so that a cut can show before the next one. A probe that fails or times out counts as over.
//!
//! The rate is a ceiling the reader may not reach (compression, the upload or etcd itself
//! may be slower), so the controller also sees what was read since the last probe, as TCP's
//! congestion window validation (RFC 7661) does: the rate never grows past twice that, and a
//! cut halves the lesser of the two. Without it, slow start ran the rate up to 8 GiB/s and
//! beyond while the reader took 50-80 MiB/s, and the seven cuts it then needed before any of
//! them slowed etcd took a second of unpaced reading.
//!
//! Queueing matters only while someone writes: the probe's answer carries the member's
//! revision, and when it has not moved since the last probe, no write waited on us, however
//! slow the probe was (our own compression and etcd's sending share the CPU with it). Such a
//! probe counts as under the target, so with no writers the read runs as fast as pacing off.
//!
//! The controller is pure: it sees probe times and gives rates, so its behaviour is tested
//! against a model of a member without a clock or a cluster.

use std::time::Duration;

/// The rate reading starts at, before any probe has spoken: about what etcd's own snapshot
/// path costs a tenth of a core on this bench (4-5 CPU-seconds per GB).
pub const START: u64 = 32 << 20;
/// The lowest rate a cut goes to, unless the deadline needs more ([`deadline_floor`]).
pub const FLOOR: u64 = 2 << 20;
/// The share of `ETCD_SNAPSHOT_TIMEOUT` pacing may plan to use; the rest is margin for etcd's
/// own slow stretches and the stages downstream, so that politeness never fails a backup.
pub const DEADLINE_SHARE: f64 = 0.8;
/// What one probe interval with no queueing at all adds to the rate: at most 80 MiB/s a
/// second, so that a halved rate comes back within about a second rather than at once (with
/// 16 MiB a probe, the bench saw the rate swing from 21 to 586 MiB/s and p99 stay at 85 ms).
pub const STEP: u64 = 4 << 20;
/// Probes after a cut during which no other cut is made (LEDBAT cuts at most once per
/// round trip; our round trip is the time a cut takes to drain etcd's send buffers).
pub const HOLD: u32 = 2;

/// The controller's state. Rates are bytes a second.
#[derive(Debug, Clone, PartialEq)]
pub struct Controller {
    target: Duration,
    cap: u64,
    base: Option<Duration>,
    rate: u64,
    slow_start: bool,
    hold: u32,
    cuts: u32,
    /// The rate the deadline needs now (0: none).
    deadline: u64,
}

impl Controller {
    /// A controller that keeps the probe within `target` of its base delay and never reads
    /// faster than `cap` (`ETCD_SNAPSHOT_RATE`; `None` for no cap).
    pub fn new(target: Duration, cap: Option<u64>) -> Controller {
        let cap = cap.unwrap_or(u64::MAX);
        Controller {
            target,
            cap,
            base: None,
            rate: START.min(cap),
            slow_start: true,
            hold: 0,
            cuts: 0,
            deadline: 0,
        }
    }

    /// The rate the read needs from now on to finish in time ([`deadline_floor`]): no cut goes
    /// below it, though the cap (the operator's word, checked against the timeout before the
    /// snapshot) still does.
    pub fn need(&mut self, rate: u64) {
        self.deadline = rate;
    }

    /// A probe taken before reading: it sets the base delay and leaves the rate.
    pub fn baseline(&mut self, sample: Duration) {
        self.base = Some(self.base.map_or(sample, |b| b.min(sample)));
    }

    /// One probe during the read (`None`: it failed or timed out), whether the member's
    /// revision moved since the last one (`wrote`), and the bytes a second read since the
    /// last one (0 when nothing was: the reader waits on its downstream, or the stream has
    /// not begun, which says nothing of the rate); the rate to read at now.
    pub fn observe(&mut self, sample: Option<Duration>, wrote: bool, delivered: u64) -> u64 {
        let queued = sample.map(|s| {
            self.baseline(s);
            if wrote {
                s.saturating_sub(self.base.unwrap_or(s))
            } else {
                // Nobody to slow down: as if there were no queue.
                Duration::ZERO
            }
        });
        // What the reader took, and the most the rate may grow to: twice that (a rate nobody
        // reaches is no brake), not below the start. With nothing read, the rate itself: a cut
        // still halves it, and growth waits until reading shows the rate is used.
        let (taken, ceiling) = match delivered {
            0 => (self.rate, self.rate),
            d => {
                let taken = d.min(self.rate);
                (taken, taken.saturating_mul(2).max(START))
            }
        };
        self.hold = self.hold.saturating_sub(1);
        match queued {
            Some(q) if q <= self.target => {
                let grown = if self.slow_start {
                    self.rate.saturating_mul(2)
                } else {
                    // In proportion to the room left: near the target, growth slows.
                    let room = (self.target - q).as_nanos() * u128::from(STEP)
                        / self.target.as_nanos().max(1);
                    self.rate.saturating_add(room as u64)
                };
                self.rate = grown.min(ceiling);
            }
            _ if self.hold > 0 => {}
            _ => {
                self.slow_start = false;
                self.rate = taken / 2;
                self.hold = HOLD;
                self.cuts += 1;
            }
        }
        self.rate = self
            .rate
            .clamp(FLOOR.max(self.deadline).min(self.cap), self.cap);
        self.rate
    }

    /// Whether the deadline, not the member or the cap, sets the rate now.
    pub fn at_deadline(&self) -> bool {
        self.deadline > FLOOR && self.deadline <= self.cap && self.rate == self.deadline
    }

    /// The rate to read at now.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// How many times the rate was cut.
    pub fn cuts(&self) -> u32 {
        self.cuts
    }

    /// The base delay: the fastest probe seen.
    pub fn base(&self) -> Option<Duration> {
        self.base
    }
}

/// The lowest rate that reads the rest of a `size`-byte snapshot, `read` bytes of it done
/// `elapsed` into the stream, within [`DEADLINE_SHARE`] of `timeout`: 0 when nothing is left
/// (or the size is unknown: 0), unpaced (`u64::MAX`) once that share is spent.
pub fn deadline_floor(size: u64, read: u64, elapsed: Duration, timeout: Duration) -> u64 {
    let left = size.saturating_sub(read);
    let time_left = timeout.mul_f64(DEADLINE_SHARE).saturating_sub(elapsed);
    if left == 0 {
        0
    } else if time_left.is_zero() {
        u64::MAX
    } else {
        // `as` saturates: a huge size over a tiny time is u64::MAX, never a panic.
        (left as f64 / time_left.as_secs_f64()).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    /// A reader that kept up with every rate it was given.
    const KEPT_UP: u64 = u64::MAX;
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn each_probe_moves_the_rate_by_the_rule() {
        let target = ms(5);
        // (probes before, this probe) -> rate, from a controller with base 1 ms and no cap;
        // probes in ms, None for one that failed.
        type Case = (&'static [Option<u64>], Option<u64>, u64);
        let cases: &[Case] = &[
            // Slow start doubles while under the target.
            (&[], Some(1), 2 * START),
            (&[Some(1)], Some(3), 4 * START),
            // Over the target: halved, and slow start ends.
            (&[], Some(7), START / 2),
            // A failed probe counts as over.
            (&[], None, START / 2),
            // Within HOLD probes of a cut, no second cut.
            (&[Some(7)], Some(9), START / 2),
            (&[Some(7)], None, START / 2),
            // After the hold, the next cut.
            (&[Some(7), Some(9)], Some(9), START / 4),
            // After slow start, growth is STEP times the room left under the target.
            (&[Some(7)], Some(1), START / 2 + STEP),
            (&[Some(7)], Some(5), START / 2 + STEP / 5),
            (&[Some(7)], Some(6), START / 2),
            (&[Some(7)], Some(3), START / 2 + STEP * 3 / 5),
            // A faster probe lowers the base: 0 ms base, 4 ms is within 5.
            (&[Some(7)], Some(0), START / 2 + STEP),
        ];
        for (before, now, want) in cases {
            let mut c = Controller::new(target, None);
            c.baseline(ms(1));
            for b in *before {
                c.observe(b.map(ms), true, KEPT_UP);
            }
            assert_eq!(
                c.observe(now.map(ms), true, KEPT_UP),
                *want,
                "{before:?} then {now:?}: {} MiB/s",
                c.rate() / MIB
            );
        }
    }

    #[test]
    fn the_rate_follows_what_the_reader_took() {
        // (rate before, delivered, probe ms) -> rate, base 1 ms, target 5 ms, after slow start
        // (except where said).
        let cases = [
            // The reader took 80 MiB/s of a 1 GiB/s rate: the cut halves what it took.
            (1024 * MIB, 80 * MIB, 9, 40 * MIB),
            // It took more than the rate (reads run ahead by the pacer's slack): the rate.
            (64 * MIB, 100 * MIB, 9, 32 * MIB),
            // Nothing read since the last probe: the rate is what is cut.
            (64 * MIB, 0, 9, 32 * MIB),
            // Under the target: growth, but not past twice what was taken...
            (100 * MIB, 30 * MIB, 1, 60 * MIB),
            (40 * MIB, 40 * MIB, 1, 40 * MIB + STEP),
            // ...nor below the start; with nothing read (after the stream, or while the upload
            // holds the reader), no growth.
            (40 * MIB, MIB, 1, START),
            (40 * MIB, 0, 1, 40 * MIB),
        ];
        for (before, delivered, probe, want) in cases {
            let mut c = Controller::new(ms(5), None);
            c.baseline(ms(1));
            c.rate = before;
            c.slow_start = false;
            assert_eq!(
                c.observe(Some(ms(probe)), true, delivered) / MIB,
                want / MIB,
                "{} MiB/s, {} MiB/s taken, probe {probe} ms",
                before / MIB,
                delivered / MIB
            );
        }
        // Slow start doubles only up to twice what was taken.
        let mut c = Controller::new(ms(5), None);
        c.baseline(ms(1));
        assert_eq!(c.observe(Some(ms(1)), true, 20 * MIB), 40 * MIB);
        assert_eq!(c.observe(Some(ms(1)), true, 40 * MIB), 80 * MIB);
        assert_eq!(c.observe(Some(ms(1)), true, 50 * MIB), 100 * MIB);
    }

    #[test]
    fn a_slow_probe_with_no_writes_since_the_last_is_no_queue() {
        let mut c = Controller::new(ms(5), None);
        c.baseline(ms(1));
        c.observe(Some(ms(9)), true, KEPT_UP);
        let cut = c.rate();
        // The revision did not move: grown as if the probe were at its base...
        assert_eq!(c.observe(Some(ms(40)), false, KEPT_UP), cut + STEP);
        assert_eq!(c.cuts(), 1);
        // ...but a probe that failed is over, writers or not (after the hold).
        c.observe(None, false, KEPT_UP);
        assert_eq!(c.cuts(), 2);
        // With writes, the same slow probe is a cut.
        c.observe(Some(ms(1)), true, KEPT_UP);
        c.observe(Some(ms(1)), true, KEPT_UP);
        c.observe(Some(ms(40)), true, KEPT_UP);
        assert_eq!(c.cuts(), 3);
    }

    #[test]
    fn the_rate_stays_between_the_floor_and_the_cap() {
        let mut c = Controller::new(ms(5), Some(40 * MIB));
        c.baseline(ms(1));
        assert_eq!(c.rate(), 32 * MIB);
        assert_eq!(
            c.observe(Some(ms(1)), true, KEPT_UP),
            40 * MIB,
            "the cap holds in slow start"
        );
        for _ in 0..50 {
            c.observe(None, true, KEPT_UP);
        }
        assert_eq!(c.rate(), FLOOR);
        // A cap below the floor is the operator's word: it wins.
        let mut c = Controller::new(ms(5), Some(MIB));
        assert_eq!(c.rate(), MIB);
        assert_eq!(c.observe(None, true, KEPT_UP), MIB);
        assert_eq!(c.observe(Some(ms(0)), true, KEPT_UP), MIB);
        // Unbounded growth saturates instead of overflowing.
        let mut c = Controller::new(ms(5), None);
        for _ in 0..100 {
            c.observe(Some(ms(0)), true, KEPT_UP);
        }
        assert_eq!(c.rate(), u64::MAX);
    }

    #[test]
    fn the_deadline_floor_is_what_the_rest_needs_in_the_time_left() {
        let min = |m: u64| Duration::from_secs(60 * m);
        // (size, read, elapsed, timeout) -> bytes a second
        let cases = [
            // 8 GiB in 30 minutes: 24 of them planned, 5.7 MiB/s.
            (8192 * MIB, 0, min(0), min(30), 8192 * MIB / (24 * 60) + 1),
            // Half read after 12 minutes: the other half in the 12 left, the same rate.
            (
                8192 * MIB,
                4096 * MIB,
                min(12),
                min(30),
                8192 * MIB / (24 * 60) + 1,
            ),
            // Behind: a quarter read after 20 minutes needs three quarters in 4.
            (
                8192 * MIB,
                2048 * MIB,
                min(20),
                min(30),
                6144 * MIB / (4 * 60) + 1,
            ),
            // All read, or a size not known: nothing needed.
            (MIB, MIB, min(1), min(30), 0),
            (0, 0, min(0), min(30), 0),
            // Read past the size etcd reported (the file grew): nothing needed.
            (MIB, 2 * MIB, min(1), min(30), 0),
            // The planned share spent: as fast as it goes.
            (MIB, 0, min(24), min(30), u64::MAX),
            (
                u64::MAX,
                0,
                Duration::ZERO,
                Duration::from_nanos(1),
                u64::MAX,
            ),
        ];
        for (size, read, elapsed, timeout, want) in cases {
            assert_eq!(
                deadline_floor(size, read, elapsed, timeout),
                want,
                "{size} bytes, {read} read, {elapsed:?} of {timeout:?}"
            );
        }
    }

    #[test]
    fn no_cut_goes_below_what_the_deadline_needs_but_the_cap_still_holds() {
        let mut c = Controller::new(ms(5), None);
        c.baseline(ms(1));
        c.need(12 * MIB);
        for _ in 0..50 {
            c.observe(None, true, KEPT_UP);
        }
        assert_eq!(c.rate(), 12 * MIB);
        assert!(c.at_deadline());
        // Once the member is quick again the rate grows past it as before.
        c.observe(Some(ms(1)), true, KEPT_UP);
        assert_eq!(c.rate(), 12 * MIB + STEP);
        assert!(!c.at_deadline());
        // Spent: unpaced, whatever the probe says.
        c.need(u64::MAX);
        assert_eq!(c.observe(None, true, KEPT_UP), u64::MAX);
        // An operator's cap wins over the deadline.
        let mut c = Controller::new(ms(5), Some(8 * MIB));
        c.need(12 * MIB);
        assert_eq!(c.observe(None, true, KEPT_UP), 8 * MIB);
        assert!(!c.at_deadline(), "the cap, not the deadline, set it");
    }

    /// A model member: it serves `capacity` bytes a second beside its writers, and queueing
    /// grows by 1 ms a probe for every 10% read beyond it and drains when below; the reader
    /// takes at most `reader` bytes a second. The controller must settle near the capacity
    /// rather than at the floor or far above it, and where the reader is slower than the
    /// member, stay within twice the reader instead of growing without end.
    #[test]
    fn against_a_model_member_the_rate_settles_near_its_capacity() {
        // (member capacity, reader's speed, the mean rate's bounds as a share of the capacity)
        let cases = [
            (8u64, KEPT_UP, 0.5, 1.3),
            (40, KEPT_UP, 0.5, 1.3),
            (120, KEPT_UP, 0.5, 1.3),
            (40, 100 * MIB, 0.5, 1.3),
            (120, 30 * MIB, 0.25, 0.5),
        ];
        for (capacity_mib, reader, low, high) in cases {
            let capacity = capacity_mib * MIB;
            let mut c = Controller::new(ms(5), None);
            c.baseline(ms(1));
            let mut queue = 0.0f64;
            let mut rates = Vec::new();
            for _ in 0..400 {
                let read = c.rate().min(reader);
                let over = read as f64 / capacity as f64 - 1.0;
                queue = (queue + over * 10.0).max(0.0);
                let probe = ms(1) + Duration::from_secs_f64(queue / 1000.0);
                rates.push(c.observe(Some(probe), true, read));
            }
            let tail = &rates[200..];
            let mean = tail.iter().sum::<u64>() as f64 / tail.len() as f64 / capacity as f64;
            assert!(
                (low..=high).contains(&mean),
                "capacity {capacity_mib} MiB/s, reader {} MiB/s: the rate settled at {mean:.2} of the capacity",
                reader / MIB
            );
            if reader > capacity {
                assert!(c.cuts() > 0);
            }
        }
    }
}
