//! The system clock: the only place in Meridian that reads the machine's clock.
//!
//! `sleep_until` is precise: tokio's timer has a 1 ms granularity, which alone would put
//! p99 lateness above a millisecond. A dedicated timer thread keeps a heap of
//! deadlines and parks with `park_timeout` (about 50-100 us late on Linux), and a
//! waiter is woken only once the *wall* clock has passed its instant, so a wall-clock
//! step never makes a firing early. Must not hold scheduling logic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::core::Timestamp;
use crate::ports::Clock;

/// Longest the timer thread parks without looking at the wall clock again, so a
/// clock step is noticed promptly.
const PARK_MAX: Duration = Duration::from_millis(50);
/// Waiters the timer thread holds at most; past it, waits fall back to tokio's timer.
const WAITERS_MAX: usize = 1_000_000;

/// Wall-clock time of this machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

#[allow(clippy::disallowed_methods)] // the one sanctioned clock read
fn wall_now() -> Timestamp {
    chrono::Utc::now()
}

/// The monotonic clock, for lease deadlines (a duration since the last renewal, which
/// no wall-clock step may stretch). The one sanctioned monotonic read.
#[allow(clippy::disallowed_methods)]
pub fn monotonic_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

struct Timer {
    heap: Mutex<BinaryHeap<Reverse<(i64, u64)>>>,
    wakers: Mutex<std::collections::HashMap<u64, oneshot::Sender<()>>>,
    next_id: std::sync::atomic::AtomicU64,
    thread: Thread,
}

fn timer() -> &'static Arc<Timer> {
    static TIMER: OnceLock<Arc<Timer>> = OnceLock::new();
    TIMER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Timer>>();
        let handle = thread::Builder::new()
            .name("meridian-timer".into())
            .spawn(move || {
                let timer = rx.recv().expect("timer is sent right after spawn");
                run_timer(&timer);
            })
            .expect("spawn timer thread");
        let timer = Arc::new(Timer {
            heap: Mutex::new(BinaryHeap::new()),
            wakers: Mutex::new(std::collections::HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            thread: handle.thread().clone(),
        });
        tx.send(timer.clone()).expect("timer thread is alive");
        timer
    })
}

fn ns(t: Timestamp) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn run_timer(timer: &Timer) {
    loop {
        let now = ns(wall_now());
        let mut fire = Vec::new();
        let wait = {
            let mut heap = timer.heap.lock().expect("timer heap");
            while let Some(&Reverse((at, id))) = heap.peek() {
                if at > now {
                    break;
                }
                heap.pop();
                fire.push(id);
            }
            heap.peek().map(|&Reverse((at, _))| {
                Duration::from_nanos(u64::try_from(at - now).unwrap_or(0)).min(PARK_MAX)
            })
        };
        if !fire.is_empty() {
            let mut wakers = timer.wakers.lock().expect("timer wakers");
            for id in fire {
                if let Some(w) = wakers.remove(&id) {
                    let _ = w.send(());
                }
            }
        }
        thread::park_timeout(wait.unwrap_or(PARK_MAX));
    }
}

/// Register a waiter with the timer thread; None when it holds WAITERS_MAX already.
fn register(at: i64) -> Option<oneshot::Receiver<()>> {
    let timer = timer();
    let (tx, rx) = oneshot::channel();
    let mut wakers = timer.wakers.lock().expect("timer wakers");
    if wakers.len() >= WAITERS_MAX {
        return None;
    }
    let id = timer
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    wakers.insert(id, tx);
    let mut heap = timer.heap.lock().expect("timer heap");
    let earliest = heap.peek().is_none_or(|&Reverse((first, _))| at < first);
    heap.push(Reverse((at, id)));
    if earliest {
        timer.thread.unpark();
    }
    Some(rx)
}

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        wall_now()
    }

    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(monotonic_now);
        monotonic_now().saturating_duration_since(origin)
    }

    async fn sleep_until(&self, t: Timestamp) {
        loop {
            let now = wall_now();
            if now >= t {
                return;
            }
            let left = (t - now).to_std().unwrap_or_default();
            if left > Duration::from_millis(20) {
                // Far away: tokio's timer is cheap; come back 10 ms early for the
                // precise part.
                tokio::time::sleep(left - Duration::from_millis(10)).await;
                continue;
            }
            let rx = register(ns(t));
            let Some(rx) = rx else {
                // The timer is saturated: tokio's timer is coarser but bounded.
                tokio::time::sleep(left).await;
                continue;
            };
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_wakes_early_and_is_precise() {
        let c = SystemClock;
        let mut late = Vec::new();
        for i in 0..50 {
            let t = c.now() + chrono::Duration::microseconds(3_000 + i * 137);
            c.sleep_until(t).await;
            let now = c.now();
            assert!(now >= t, "woke early");
            late.push((now - t).num_microseconds().unwrap());
        }
        late.sort();
        // Generous bound for a loaded CI machine; the benchmark measures the real figure.
        assert!(late[25] < 5_000, "median lateness {} us", late[25]);
    }
}
