//! Additive-increase, multiplicative-decrease limit on requests in flight.
//!
//! Every request a restore sends (copies, parts, HEADs) holds one [`Slot`]; S3's 503
//! SlowDown halves the limit, once per round: only a request sent at the current limit
//! (after the last decrease) can lower it again. Each limit's worth of successes raises
//! it by one, up to `--concurrency` (S3-NOTES 23).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// Decreases so far: a slot taken in an earlier epoch was sent at a higher limit.
    epoch: u64,
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
    epoch: u64,
}

impl Slot {
    /// The limit's epoch when the slot was taken; give it to [`Aimd::on_throttle`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
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
                epoch: 0,
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
            epoch: self.lock().epoch,
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

    /// Counts a throttled answer to a request sent in `epoch` (its [`Slot::epoch`]); halves
    /// the limit unless the request was sent before the last decrease. Answers to requests
    /// sent at the old limit say nothing about the new one; a request sent at the new limit
    /// and throttled says it is still too high, however soon after the decrease.
    pub fn on_throttle(&self, epoch: u64) {
        let mut s = self.lock();
        s.throttled += 1;
        s.successes = 0;
        if epoch < s.epoch || s.limit == 1 {
            return;
        }
        s.epoch += 1;
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
        let before = a.acquire().await;
        let also_before = a.acquire().await;
        a.on_throttle(before.epoch());
        assert_eq!(a.limit(), 8);
        // A throttle of a request sent before the decrease does not halve again.
        a.on_throttle(also_before.epoch());
        assert_eq!(a.limit(), 8);
        drop((before, also_before));
        for _ in 0..8 {
            a.on_success();
        }
        assert_eq!(a.limit(), 9);
        let s = a.stats();
        assert_eq!((s.min, s.max, s.throttled), (8, 16, 2));
    }

    #[tokio::test]
    async fn a_request_sent_after_a_decrease_can_halve_again_at_once() {
        let a = Aimd::new(16, 16);
        let first = a.acquire().await;
        a.on_throttle(first.epoch());
        drop(first);
        let after = a.acquire().await;
        a.on_throttle(after.epoch());
        assert_eq!(a.limit(), 4);
        let s = a.stats();
        assert_eq!((s.min, s.last, s.throttled), (4, 4, 2));
    }

    #[tokio::test]
    async fn in_flight_never_exceeds_the_limit_after_a_decrease() {
        let a = Aimd::new(4, 4);
        let held: Vec<Slot> = futures::future::join_all((0..4).map(|_| a.acquire())).await;
        a.on_throttle(held[0].epoch());
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
        a.on_throttle(0);
        assert_eq!(a.limit(), 1);
        let _slot = a.acquire().await;
    }
}
