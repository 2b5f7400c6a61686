//! Progress lines for long transfers: at most one every `every` (BACKUP_PROGRESS_INTERVAL), with
//! the bytes so far, the rate and, when the total is known, the share done. A transfer shorter
//! than one interval logs none. JSON logs carry the same fields. The decision is [`Progress::at`],
//! a function of the byte count and the time; [`Progress::advance`] reads the clock and logs.

use std::time::{Duration, Instant};

pub struct Progress {
    what: &'static str,
    total: Option<u64>,
    every: Option<Duration>,
    started: Instant,
    next: Option<Instant>,
    bytes: u64,
}

/// One progress line's fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub bytes: u64,
    pub mib_per_s: f64,
    /// Of the known total, to a tenth of a percent.
    pub percent: Option<f64>,
}

impl Progress {
    /// `what` names the transfer in the log line ("snapshot", "download"); `every` of `None`
    /// turns the lines off.
    pub fn new(what: &'static str, total: Option<u64>, every: Option<Duration>) -> Progress {
        Progress::starting_at(what, total, every, Instant::now())
    }

    fn starting_at(
        what: &'static str,
        total: Option<u64>,
        every: Option<Duration>,
        started: Instant,
    ) -> Progress {
        Progress {
            what,
            total,
            every,
            started,
            next: every.map(|e| started + e),
            bytes: 0,
        }
    }

    /// Counts `n` more bytes at `now`; the line to log, if one is due.
    pub fn at(&mut self, n: usize, now: Instant) -> Option<Line> {
        self.bytes += n as u64;
        let (next, every) = (self.next?, self.every?);
        if now < next {
            return None;
        }
        self.next = Some(now + every);
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-3);
        Some(Line {
            bytes: self.bytes,
            mib_per_s: (self.bytes as f64 / secs / (1 << 20) as f64 * 10.0).round() / 10.0,
            percent: self
                .total
                .filter(|t| *t > 0)
                .map(|t| (self.bytes as f64 * 1000.0 / t as f64).round() / 10.0),
        })
    }

    /// Counts `n` more bytes and logs a line if one is due.
    pub fn advance(&mut self, n: usize) {
        let Some(l) = self.at(n, Instant::now()) else {
            return;
        };
        match l.percent {
            Some(p) => tracing::info!(
                bytes = l.bytes,
                total_bytes = self.total,
                percent = p,
                mib_per_s = l.mib_per_s,
                "{} in progress",
                self.what
            ),
            None => tracing::info!(
                bytes = l.bytes,
                mib_per_s = l.mib_per_s,
                "{} in progress",
                self.what
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_line_per_interval_and_none_for_a_short_run() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = Progress::starting_at("snapshot", Some(4 << 20), Some(s(10)), t0);
        // (bytes added, seconds since start, line expected with (bytes, MiB/s, percent))
        type Step = (usize, u64, Option<(u64, f64, f64)>);
        let steps: &[Step] = &[
            (1 << 20, 1, None),
            (1 << 20, 9, None),
            (1 << 20, 10, Some((3 << 20, 0.3, 75.0))),
            (0, 15, None),
            (1 << 20, 20, Some((4 << 20, 0.2, 100.0))),
        ];
        for (n, at, want) in steps {
            let got = p.at(*n, t0 + s(*at));
            let want = want.map(|(bytes, mib_per_s, p)| Line {
                bytes,
                mib_per_s,
                percent: Some(p),
            });
            assert_eq!(got, want, "at {at}s");
        }
        // Off, or without a total.
        let mut off = Progress::starting_at("download", Some(1), None, t0);
        assert_eq!(off.at(1, t0 + s(3600)), None);
        let mut open = Progress::starting_at("download", None, Some(s(1)), t0);
        assert_eq!(open.at(1 << 20, t0 + s(2)).unwrap().percent, None);
    }
}
