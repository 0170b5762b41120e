//! The HTTP/1 header timeout, kept off the per-request path.
//!
//! hyper enforces the header timeout (which also closes idle keep-alive connections) with a
//! new sleep for every request: a timer-wheel insert when it starts reading a request head and a
//! removal once the head is read, each under the runtime's timer lock, plus a box. That was
//! 4–5 % of the node's CPU for a one-record get (measured with perf under `wrk -c50`), work the
//! timeout never needs while requests keep arriving. Here each connection has one alarm: the
//! sleeps hyper asks for only remember their deadline, and the alarm is moved on the wheel only
//! when it goes off before the deadline hyper is waiting for now (at most once per timeout per
//! connection). The deadline is still exact: a head not complete by then fails the same way.

use hyper::rt::{Sleep, Timer};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A [`Timer`] for one connection's header timeout (give each connection its own).
#[derive(Clone)]
pub struct ConnectionTimer {
    alarm: Arc<Mutex<Pin<Box<tokio::time::Sleep>>>>,
}

impl ConnectionTimer {
    /// A timer whose alarm stands at now: the first sleep polled moves it to its deadline.
    pub fn new() -> Self {
        ConnectionTimer {
            alarm: Arc::new(Mutex::new(Box::pin(tokio::time::sleep_until(
                tokio::time::Instant::now(),
            )))),
        }
    }
}

impl Default for ConnectionTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(AlarmSleep {
            deadline,
            alarm: self.alarm.clone(),
        })
    }
}

/// A sleep until `deadline` that is woken by its connection's alarm.
struct AlarmSleep {
    deadline: Instant,
    alarm: Arc<Mutex<Pin<Box<tokio::time::Sleep>>>>,
}

impl Sleep for AlarmSleep {}

impl Future for AlarmSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let wanted = tokio::time::Instant::from_std(deadline);
        // One task polls a connection, so this lock is never contended.
        let mut alarm = self.alarm.lock().unwrap_or_else(|e| e.into_inner());
        if alarm.is_elapsed() {
            // The alarm went off: the clock says whether this deadline passed; if not, the
            // alarm moves to it.
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            alarm.as_mut().reset(wanted);
        } else if alarm.deadline() > wanted {
            alarm.as_mut().reset(wanted);
        }
        // Set no later than this deadline. An earlier one is left: when it goes off, the
        // connection is polled, this deadline is found not reached, and the alarm moves here.
        if alarm.as_mut().poll(cx).is_ready() {
            // It went off just now, perhaps for an earlier deadline.
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            alarm.as_mut().reset(wanted);
            if alarm.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn sleep_for(timer: &ConnectionTimer, ms: u64) -> Pin<Box<dyn Sleep>> {
        timer.sleep(Duration::from_millis(ms))
    }

    /// Waits for `sleep`, failing (instead of hanging) if it is never woken.
    async fn finish(sleep: Pin<Box<dyn Sleep>>) {
        tokio::time::timeout(Duration::from_secs(20), sleep)
            .await
            .expect("the sleep was never woken");
    }

    #[tokio::test]
    async fn a_sleep_ends_at_its_deadline_not_before() {
        let timer = ConnectionTimer::new();
        let started = Instant::now();
        finish(sleep_for(&timer, 200)).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn an_earlier_alarm_does_not_end_a_later_sleep() {
        let timer = ConnectionTimer::new();
        // A request head that came in time: its sleep set the alarm for 300 ms and was dropped
        // unfinished, as hyper drops it once the head is read.
        let mut first = sleep_for(&timer, 300);
        assert!((&mut first).now_or_never().is_none());
        drop(first);
        // The next request's wait, polled while that alarm is still set: the alarm goes off
        // first, and must neither end this sleep nor leave it without a wake-up.
        let started = Instant::now();
        let mut second = sleep_for(&timer, 1_000);
        assert!((&mut second).now_or_never().is_none());
        finish(second).await;
        assert!(started.elapsed() >= Duration::from_millis(1_000));
    }

    #[tokio::test]
    async fn a_sleep_after_the_alarm_went_off_is_still_woken() {
        let timer = ConnectionTimer::new();
        finish(sleep_for(&timer, 10)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        finish(sleep_for(&timer, 100)).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_sleep_past_its_deadline_is_ready_at_once() {
        let timer = ConnectionTimer::new();
        let mut past = timer.sleep_until(Instant::now() - Duration::from_millis(1));
        assert!((&mut past).now_or_never().is_some());
    }
}
