//! Waiting for a connection and, beside it, for what may end it (shutdown,
//! the watchdog's deadlines), polling each side only when it was woken.
//!
//! `tokio::select!` polls every branch whenever its task wakes, and a
//! connection's task wakes several times a request (each read and write):
//! the two shutdown tokens and the watchdog's timer and notification were
//! polled each time, ~3,000 instructions a proxied GET (1.7 %) for futures
//! that almost never have anything to say. [`FirstOf`] gives the second
//! future a waker of its own and polls it only after that waker fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::future::Either;
use futures::task::AtomicWaker;

/// Whether the second future was woken since it was last polled, and the
/// task to wake when it is.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Resolves with whichever of `first` and `second` is ready first
/// (`second` is checked first when both are and `second` was woken).
/// `first` is polled on every wake of the task; `second` on its first poll
/// and then only after its own waker fired.
pub(super) struct FirstOf<'a, A: ?Sized, B: ?Sized> {
    first: Pin<&'a mut A>,
    second: Pin<&'a mut B>,
    flag: Arc<Flag>,
    second_waker: Waker,
}

/// See [`FirstOf`].
pub(super) fn first_of<'a, A, B>(first: Pin<&'a mut A>, second: Pin<&'a mut B>) -> FirstOf<'a, A, B>
where
    A: Future + ?Sized,
    B: Future + ?Sized,
{
    let flag = Arc::new(Flag {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    FirstOf {
        first,
        second,
        second_waker: Waker::from(flag.clone()),
        flag,
    }
}

impl<A, B> Future for FirstOf<'_, A, B>
where
    A: Future + ?Sized,
    B: Future + ?Sized,
{
    type Output = Either<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Registered before the flag is read: a wake in between is not lost.
        this.flag.task.register(cx.waker());
        if this.flag.woken.swap(false, Ordering::AcqRel) {
            let mut own = Context::from_waker(&this.second_waker);
            if let Poll::Ready(v) = this.second.as_mut().poll(&mut own) {
                return Poll::Ready(Either::Right(v));
            }
        }
        match this.first.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Either::Left(v)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A future that counts its polls and is ready once `ready` is notified.
    async fn counted(polls: &AtomicUsize, ready: &tokio::sync::Notify) -> &'static str {
        let notified = ready.notified();
        tokio::pin!(notified);
        std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::SeqCst);
            notified.as_mut().poll(cx)
        })
        .await;
        "second"
    }

    /// A first future that wakes its task `n` times before it is ready.
    async fn busy(n: usize) -> usize {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
        n
    }

    #[tokio::test]
    async fn the_second_future_is_polled_only_when_woken() {
        let polls = AtomicUsize::new(0);
        let ready = tokio::sync::Notify::new();
        let first = busy(100);
        let second = counted(&polls, &ready);
        tokio::pin!(first, second);
        let out = first_of(first.as_mut(), second.as_mut()).await;
        assert!(matches!(out, Either::Left(100)));
        // Polled once to start, never again while the first kept waking.
        assert_eq!(polls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_second_future_wins_once_woken() {
        let polls = AtomicUsize::new(0);
        let ready = Arc::new(tokio::sync::Notify::new());
        let first = std::future::pending::<()>();
        let second = counted(&polls, &ready);
        tokio::pin!(first, second);
        let r = ready.clone();
        let waker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            r.notify_one();
        });
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            first_of(first.as_mut(), second.as_mut()),
        )
        .await
        .expect("the woken second future is polled again");
        assert!(matches!(out, Either::Right("second")));
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        waker.await.unwrap();
    }

    /// The second future woken from another thread, again and again, at
    /// any moment of the task's poll: no wake is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_from_another_thread_is_not_lost() {
        for _ in 0..500 {
            let ready = Arc::new(tokio::sync::Notify::new());
            let r = ready.clone();
            let task = tokio::spawn(async move {
                let first = std::future::pending::<()>();
                let second = r.notified();
                tokio::pin!(first, second);
                first_of(first.as_mut(), second.as_mut()).await
            });
            std::thread::spawn(move || ready.notify_one());
            let out = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the wake reached the task")
                .unwrap();
            assert!(matches!(out, Either::Right(())));
        }
    }
}
