//! Laps on the start path, logged at debug level (`HANGAR_LOG=hangar_agent=debug`):
//! how docs/BENCHMARKS.md's "where the time goes" is measured.

use std::time::Instant;

/// Named laps since the last mark.
pub struct Stopwatch {
    last: Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch {
            last: Instant::now(),
            laps: vec![],
        }
    }

    /// Ends a lap: the time since the previous mark goes to `name`.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps
            .push((name, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }

    /// `name=1.23ms name=4.56ms`, for a log line.
    pub fn laps(&self) -> String {
        self.laps
            .iter()
            .map(|(n, ms)| format!("{n}={ms:.2}ms"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
