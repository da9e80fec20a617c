//! Publish credit: backpressure from subscribers' queues to whoever produced the frames.
//!
//! A reader (a connection's session, or a mesh inbox) owns one [`Credit`]. Every broadcast it
//! hands to local subscribers carries a [`Hold`] of the frame's size; each subscriber queue that
//! takes the frame keeps a clone of the hold until the frame is written (or dropped). While the
//! holds outstanding exceed the credit's limit, the reader does not take its next message: its
//! socket is not read (TCP pushes back on the client) or its inbox fills (the mesh pushes back on
//! the publishing shard). So one read cannot make the server queue unbounded output, and a burst
//! goes out at the pace the subscribers drain it.
//!
//! A queue that falls *behind* (over its soft limit) lets go of its holds: a stalled subscriber
//! must not stall the room's publishers; it is judged on its own, over time (see
//! [`super::transport::outbound`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One reader's allowance of frames queued and not yet written.
pub struct Credit {
    outstanding: Cell<usize>,
    limit: usize,
    /// Bumped by [`write_off`](Self::write_off): holds of an older generation no longer count.
    generation: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

/// Frames of one broadcast that are still queued somewhere; dropped with the last one.
pub struct Hold {
    credit: Rc<Credit>,
    bytes: usize,
    generation: u64,
}

impl Credit {
    /// A credit of `limit` bytes.
    pub fn new(limit: usize) -> Rc<Credit> {
        Rc::new(Credit {
            outstanding: Cell::new(0),
            limit: limit.max(1),
            generation: Cell::new(0),
            waker: RefCell::new(None),
        })
    }

    /// A hold on `bytes` of this credit, to be shared by every queue that takes the frame.
    pub fn hold(self: &Rc<Self>, bytes: usize) -> Rc<Hold> {
        self.outstanding.set(self.outstanding.get() + bytes);
        Rc::new(Hold {
            credit: self.clone(),
            bytes,
            generation: self.generation.get(),
        })
    }

    /// Stops counting what is outstanding: the reader waited its patience out, so the
    /// subscribers still holding these frames are not keeping up, and they are judged on their
    /// own (they fall behind) instead of holding the reader back any longer.
    pub fn write_off(&self) {
        self.outstanding.set(0);
        self.generation.set(self.generation.get() + 1);
    }

    /// Bytes held by queues right now.
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.outstanding.get()
    }

    /// Whether the reader may take its next message. One message larger than the limit still
    /// goes when nothing else is outstanding.
    pub fn has_room(&self) -> bool {
        self.outstanding.get() < self.limit
    }

    /// Ready once [`has_room`](Self::has_room); otherwise registers `cx` to be woken then.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.has_room() {
            return Poll::Ready(());
        }
        let mut waker = self.waker.borrow_mut();
        match &*waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits until the reader may take its next message, or `patience` has passed: a subscriber
    /// that has stopped reading must not stall its publishers for longer than that (its queue then
    /// falls behind and lets go of its holds).
    pub async fn room(&self, patience: std::time::Duration) {
        if self.has_room() {
            return;
        }
        futures_lite::future::or(std::future::poll_fn(|cx| self.poll_room(cx)), async {
            glommio::timer::sleep(patience).await;
        })
        .await
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let credit = &self.credit;
        if self.generation != credit.generation.get() {
            return; // written off
        }
        let before = credit.outstanding.get();
        credit.outstanding.set(before - self.bytes);
        if before >= credit.limit && credit.has_room() {
            if let Some(w) = credit.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn room_returns_when_the_last_queue_lets_go() {
        let credit = Credit::new(100);
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);

        let hold = credit.hold(150);
        let (queue_a, queue_b) = (hold.clone(), hold.clone());
        drop(hold);
        assert_eq!(credit.outstanding(), 150);
        assert!(credit.poll_room(&mut cx).is_pending(), "over the limit");
        drop(queue_a);
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            0,
            "another queue still holds it"
        );
        drop(queue_b);
        assert_eq!(credit.outstanding(), 0);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(credit.poll_room(&mut cx).is_ready());
    }

    #[test]
    fn written_off_holds_no_longer_count() {
        let credit = Credit::new(100);
        let stalled = credit.hold(150);
        assert!(!credit.has_room());
        credit.write_off();
        assert!(credit.has_room());
        let fresh = credit.hold(60);
        drop(stalled);
        assert_eq!(
            credit.outstanding(),
            60,
            "the old hold's drop takes nothing off"
        );
        drop(fresh);
        assert_eq!(credit.outstanding(), 0);
    }

    #[test]
    fn one_oversized_message_goes_when_nothing_is_outstanding() {
        let credit = Credit::new(10);
        assert!(credit.has_room());
        let big = credit.hold(1_000);
        assert!(!credit.has_room());
        drop(big);
        assert!(credit.has_room());
    }
}
