//! Additive-increase, multiplicative-decrease limit on requests in flight.
//!
//! Every request a restore sends (copies, parts, HEADs) holds one [`Slot`]; S3's 503
//! SlowDown halves the limit (at most once per cool-down), and each limit's worth of
//! successes raises it by one, up to `--concurrency` (S3-NOTES 23).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared limit.
#[derive(Debug)]
pub struct Aimd {
    sem: Arc<Semaphore>,
    /// Permits to retire as slots come back, after a decrease found them in use.
    debt: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: usize,
    max: usize,
    successes: usize,
    last_decrease: Option<Instant>,
    min_seen: usize,
    max_seen: usize,
    throttled: u64,
}

/// Minimum, maximum and final limit of a run, for `summary.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStats {
    /// Lowest limit.
    pub min: usize,
    /// Highest limit.
    pub max: usize,
    /// Limit at the end.
    pub last: usize,
    /// Throttled answers seen.
    pub throttled: u64,
}

/// One request's place in flight.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    owner: Arc<Aimd>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            let retire = self
                .owner
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                .is_ok();
            if retire {
                p.forget();
            }
        }
    }
}

/// How long after a decrease the next one may come: throttling answers to requests sent
/// before the decrease must not halve the limit again.
const COOL_DOWN: Duration = Duration::from_millis(500);

impl Aimd {
    /// A limit starting at `initial`, never above `max`.
    pub fn new(initial: usize, max: usize) -> Arc<Self> {
        let max = max.max(1);
        let initial = initial.clamp(1, max);
        Arc::new(Aimd {
            sem: Arc::new(Semaphore::new(initial)),
            debt: AtomicUsize::new(0),
            state: Mutex::new(State {
                limit: initial,
                max,
                successes: 0,
                last_decrease: None,
                min_seen: initial,
                max_seen: initial,
                throttled: 0,
            }),
        })
    }

    /// Waits for a place in flight.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        let permit = self.sem.clone().acquire_owned().await.ok();
        Slot {
            permit,
            owner: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a success; a limit's worth of them adds one place.
    pub fn on_success(&self) {
        let mut s = self.lock();
        s.successes += 1;
        if s.successes >= s.limit && s.limit < s.max {
            s.successes = 0;
            s.limit += 1;
            s.max_seen = s.max_seen.max(s.limit);
            // Pay back retired permits first, then grow.
            if self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                .is_err()
            {
                self.sem.add_permits(1);
            }
        }
    }

    /// Counts a throttled answer; halves the limit unless it did so moments ago.
    pub fn on_throttle(&self) {
        let mut s = self.lock();
        s.throttled += 1;
        s.successes = 0;
        let now = Instant::now();
        if s.last_decrease.is_some_and(|t| now.duration_since(t) < COOL_DOWN) || s.limit == 1 {
            return;
        }
        s.last_decrease = Some(now);
        let new = (s.limit / 2).max(1);
        let cut = s.limit - new;
        s.limit = new;
        s.min_seen = s.min_seen.min(new);
        // Retire free permits now; the rest as their slots come back.
        let mut retired = 0;
        while retired < cut {
            match self.sem.try_acquire() {
                Ok(p) => {
                    p.forget();
                    retired += 1;
                }
                Err(_) => break,
            }
        }
        self.debt.fetch_add(cut - retired, Ordering::AcqRel);
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// The run's figures.
    pub fn stats(&self) -> LimitStats {
        let s = self.lock();
        LimitStats {
            min: s.min_seen,
            max: s.max_seen,
            last: s.limit,
            throttled: s.throttled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn halves_on_throttle_and_climbs_back() {
        let a = Aimd::new(16, 16);
        a.on_throttle();
        assert_eq!(a.limit(), 8);
        // A second throttle inside the cool-down does not halve again.
        a.on_throttle();
        assert_eq!(a.limit(), 8);
        for _ in 0..8 {
            a.on_success();
        }
        assert_eq!(a.limit(), 9);
        let s = a.stats();
        assert_eq!((s.min, s.max, s.throttled), (8, 16, 2));
    }

    #[tokio::test]
    async fn in_flight_never_exceeds_the_limit_after_a_decrease() {
        let a = Aimd::new(4, 4);
        let held: Vec<Slot> = futures::future::join_all((0..4).map(|_| a.acquire())).await;
        a.on_throttle();
        assert_eq!(a.limit(), 2);
        drop(held);
        // Two permits were retired as the slots came back: only two can be held now.
        let s1 = a.acquire().await;
        let s2 = a.acquire().await;
        assert!(a.sem.try_acquire().is_err());
        drop((s1, s2));
    }

    #[tokio::test]
    async fn never_below_one() {
        let a = Aimd::new(1, 8);
        a.on_throttle();
        assert_eq!(a.limit(), 1);
        let _slot = a.acquire().await;
    }
}
