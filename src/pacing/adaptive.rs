//! The adaptive rate: a delay-based controller in the spirit of LEDBAT (RFC 6817). The member
//! being read answers a cheap probe; its fastest answer is the base delay, and what it takes
//! beyond that is queueing, ours or a writer's. While the queueing stays under the target the
//! rate grows, in proportion to how far under it is (doubling until the first time it is
//! over, as a slow start); once it is over, the rate halves, at most once per [`HOLD`] probes
//! so that a cut can show before the next one. A probe that fails or times out counts as over.
//!
//! The controller is pure: it sees probe times and gives rates, so its behaviour is tested
//! against a model of a member without a clock or a cluster.

use std::time::Duration;

/// The rate reading starts at, before any probe has spoken: about what etcd's own snapshot
/// path costs a tenth of a core on this bench (4-5 CPU-seconds per GB).
pub const START: u64 = 32 << 20;
/// The lowest rate a cut goes to: a 8 GiB database still reads in about 70 minutes.
pub const FLOOR: u64 = 2 << 20;
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
        }
    }

    /// A probe taken before reading: it sets the base delay and leaves the rate.
    pub fn baseline(&mut self, sample: Duration) {
        self.base = Some(self.base.map_or(sample, |b| b.min(sample)));
    }

    /// One probe during the read (`None`: it failed or timed out); the rate to read at now.
    pub fn observe(&mut self, sample: Option<Duration>) -> u64 {
        let queued = sample.map(|s| {
            self.baseline(s);
            s.saturating_sub(self.base.unwrap_or(s))
        });
        self.hold = self.hold.saturating_sub(1);
        match queued {
            Some(q) if q <= self.target => {
                self.rate = if self.slow_start {
                    self.rate.saturating_mul(2)
                } else {
                    // In proportion to the room left: near the target, growth slows.
                    let room = (self.target - q).as_nanos() * u128::from(STEP)
                        / self.target.as_nanos().max(1);
                    self.rate.saturating_add(room as u64)
                };
            }
            _ if self.hold > 0 => {}
            _ => {
                self.slow_start = false;
                self.rate /= 2;
                self.hold = HOLD;
                self.cuts += 1;
            }
        }
        self.rate = self.rate.clamp(FLOOR.min(self.cap), self.cap);
        self.rate
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
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
                c.observe(b.map(ms));
            }
            assert_eq!(
                c.observe(now.map(ms)),
                *want,
                "{before:?} then {now:?}: {} MiB/s",
                c.rate() / MIB
            );
        }
    }

    #[test]
    fn the_rate_stays_between_the_floor_and_the_cap() {
        let mut c = Controller::new(ms(5), Some(40 * MIB));
        c.baseline(ms(1));
        assert_eq!(c.rate(), 32 * MIB);
        assert_eq!(
            c.observe(Some(ms(1))),
            40 * MIB,
            "the cap holds in slow start"
        );
        for _ in 0..50 {
            c.observe(None);
        }
        assert_eq!(c.rate(), FLOOR);
        // A cap below the floor is the operator's word: it wins.
        let mut c = Controller::new(ms(5), Some(MIB));
        assert_eq!(c.rate(), MIB);
        assert_eq!(c.observe(None), MIB);
        assert_eq!(c.observe(Some(ms(0))), MIB);
        // Unbounded growth saturates instead of overflowing.
        let mut c = Controller::new(ms(5), None);
        for _ in 0..100 {
            c.observe(Some(ms(0)));
        }
        assert_eq!(c.rate(), u64::MAX);
    }

    /// A model member: it serves `capacity` bytes a second beside its writers, and queueing
    /// grows by 1 ms a probe for every 10% read beyond it and drains when below. The
    /// controller must settle near the capacity rather than at the floor or far above it.
    #[test]
    fn against_a_model_member_the_rate_settles_near_its_capacity() {
        for capacity_mib in [8u64, 40, 120] {
            let capacity = capacity_mib * MIB;
            let mut c = Controller::new(ms(5), None);
            c.baseline(ms(1));
            let mut queue = 0.0f64;
            let mut rates = Vec::new();
            for _ in 0..400 {
                let over = c.rate() as f64 / capacity as f64 - 1.0;
                queue = (queue + over * 10.0).max(0.0);
                let probe = ms(1) + Duration::from_secs_f64(queue / 1000.0);
                rates.push(c.observe(Some(probe)));
            }
            let tail = &rates[200..];
            let mean = tail.iter().sum::<u64>() as f64 / tail.len() as f64 / capacity as f64;
            assert!(
                (0.5..=1.3).contains(&mean),
                "capacity {capacity_mib} MiB/s: the rate settled at {mean:.2} of it"
            );
            assert!(c.cuts() > 0);
        }
    }
}
