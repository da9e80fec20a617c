//! A connection's outbound queue.
//!
//! Frames are `Bytes` — usually shared with every other subscriber of the same broadcast. A
//! queue with frames waiting is scheduled on its shard's [`SocketRing`], which sends up to
//! `write_batch_frames` of them per vectored `SENDMSG`, the sends of every connection in one
//! submission; at most one send per connection is in flight, and the frames it carries can no
//! longer be replaced or dropped.
//!
//! **Slow consumers** are judged by how far behind they stay, over time — not by the size of one
//! burst the server produced in one turn. A queue over its soft bounds (frames or bytes) is
//! *behind*; one that stays behind for `behind_timeout` (its socket not draining it under the
//! bounds), or that reaches the hard bounds (`hard_factor` × the soft ones, the memory cap), is
//! a slow consumer: the backlog is dropped (keeping a partly written frame, so the stream stays
//! valid), a close frame with code 1013 ("try again later") is queued and the connection is
//! marked failed; the reader then tears it down. A socket that accepts no bytes for
//! `write_timeout` is dropped. Memory per connection is therefore bounded whatever the publish
//! rate. A queue that is behind lets go of its publishers' [`Hold`]s, so it does not stall them.
//!
//! **Delivery policies.** Each frame carries a [`Delivery`]: `Reliable` frames are queued in order;
//! a `Latest(key)` frame replaces a not-yet-started queued frame with the same key (latest value
//! wins), so real-time streams never grow the queue with the publish rate.

use super::ring::{SendOp, SendQueue, SocketRing, MAX_BATCH};
pub use crate::core::Delivery;
use crate::ops::metrics::ShardMetrics;
use crate::protocol::websocket::{close_code, encode_close};
use crate::runtime::credit::Hold;
use bytes::{Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

/// What [`Outbound::push_with`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Appended to the queue.
    Queued,
    /// A queued frame with the same `Latest` key was replaced.
    Replaced,
    /// The oldest queued frame with the same `Budget` key was dropped to make room.
    DroppedOldest,
    /// The connection no longer accepts frames (closing, or now closed as a slow consumer).
    Refused,
}

impl Pushed {
    /// The frame is on its way to the subscriber.
    pub fn accepted(self) -> bool {
        self != Pushed::Refused
    }

    /// An older frame gave way to this one.
    pub fn dropped_one(self) -> bool {
        matches!(self, Pushed::Replaced | Pushed::DroppedOldest)
    }
}

struct Queued {
    bytes: Bytes,
    delivery: Delivery,
    /// The publisher's credit this frame holds until written (none once the queue is behind).
    hold: Option<Rc<Hold>>,
}

impl Queued {
    fn reliable(bytes: Bytes) -> Queued {
        Queued {
            bytes,
            delivery: Delivery::Reliable,
            hold: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// A close frame is queued last; nothing more is accepted. The writer shuts the write side
    /// down after it.
    Closing,
    /// Finished (written the close frame, failed, or abandoned): nothing more is sent.
    Done,
}

/// Bounds of one connection's queue and writer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames queued past which the connection is behind.
    pub max_frames: usize,
    /// Bytes queued past which the connection is behind (a single larger frame is not).
    pub max_bytes: usize,
    /// How long a connection may stay behind before it is closed as a slow consumer.
    pub behind_timeout: Duration,
    /// The hard bounds are this multiple of the soft ones: reaching them closes at once.
    pub hard_factor: usize,
    /// Most frames sent in one vectored write.
    pub batch_frames: usize,
}

impl Limits {
    fn over_soft(&self, frames: usize, bytes: usize) -> bool {
        frames > self.max_frames || (frames > 1 && bytes > self.max_bytes)
    }

    fn over_hard(&self, frames: usize, bytes: usize) -> bool {
        let factor = self.hard_factor.max(1);
        frames > self.max_frames.saturating_mul(factor)
            || (frames > 1 && bytes > self.max_bytes.saturating_mul(factor))
    }
}

struct Inner {
    frames: VecDeque<Queued>,
    /// Bytes of `frames[0]` already written.
    head_written: usize,
    queued_bytes: usize,
    state: State,
    /// The connection must be torn down (slow consumer or socket error).
    failed: bool,
    slow_consumer: bool,
    /// Since when the queue has been over its soft bounds.
    behind_since: Option<Instant>,
    /// Waiting in the ring's list for its next submission.
    scheduled: bool,
    /// The ring slot of the send in flight, if any.
    sending: Option<u32>,
    /// Frames at the head that the send in flight carries (at most `MAX_BATCH`).
    in_flight: u8,
    reader: Option<Waker>,
}

impl Inner {
    /// Queued frames from this index on may still be replaced or dropped: the ones before are
    /// being written.
    fn first_free(&self) -> usize {
        usize::from(self.in_flight).max(usize::from(self.head_written > 0))
    }
}

/// Drops a finished queue's frames except those a send in flight still carries (the kernel may
/// be reading them: see the `SendQueue` impl); with no send in flight, all of them.
fn keep_in_flight(inner: &mut Inner) {
    let keep = if inner.sending.is_some() {
        usize::from(inner.in_flight)
    } else {
        0
    };
    inner.frames.truncate(keep);
    for q in inner.frames.iter_mut() {
        // A given-up queue holds back no publisher.
        q.hold = None;
    }
    inner.queued_bytes = inner.frames.iter().map(|q| q.bytes.len()).sum();
}

/// Where a queue's frames go: its socket, through the shard's ring.
struct Io {
    ring: Rc<SocketRing>,
    fd: RawFd,
    me: Weak<Outbound>,
}

/// One connection's outbound queue, shared by its writer task and everything that sends to it.
pub struct Outbound {
    inner: RefCell<Inner>,
    /// Shared by every connection of a shard (an idle connection's bytes count).
    limits: Rc<Limits>,
    io: RefCell<Option<Io>>,
}

impl Outbound {
    /// An empty, open queue bounded by `limits`.
    pub fn new(limits: Limits) -> Outbound {
        Outbound::with_limits(Rc::new(limits))
    }

    /// An empty, open queue bounded by `limits`, shared with other queues.
    pub fn with_limits(limits: Rc<Limits>) -> Outbound {
        Outbound {
            inner: RefCell::new(Inner {
                frames: VecDeque::new(),
                head_written: 0,
                queued_bytes: 0,
                state: State::Open,
                failed: false,
                slow_consumer: false,
                behind_since: None,
                scheduled: false,
                sending: None,
                in_flight: 0,
                reader: None,
            }),
            limits,
            io: RefCell::new(None),
        }
    }

    /// Connects the queue to its socket `fd` (which must outlive the queue's sends, or be
    /// abandoned first) through the shard's ring; frames queued from now on are written.
    pub fn attach(self: &Rc<Self>, ring: Rc<SocketRing>, fd: RawFd) {
        *self.io.borrow_mut() = Some(Io {
            ring,
            fd,
            me: Rc::downgrade(self),
        });
        let mut inner = self.inner.borrow_mut();
        self.kick(&mut inner);
    }

    /// Schedules the queue on its ring when it has something to send and no send in flight.
    fn kick(&self, inner: &mut Inner) {
        if inner.scheduled || inner.sending.is_some() {
            return;
        }
        let wants = !inner.frames.is_empty() || inner.state == State::Closing;
        if !wants {
            return;
        }
        if let Some(io) = self.io.borrow().as_ref() {
            if let Some(me) = io.me.upgrade() {
                inner.scheduled = true;
                io.ring.schedule(me);
            }
        }
    }

    /// Queues a frame in order (a reply or control frame: it holds no publisher's credit).
    /// Returns false if the connection no longer accepts frames.
    pub fn push(&self, bytes: Bytes) -> bool {
        self.push_with(bytes, Delivery::Reliable, None, Instant::now())
            .accepted()
    }

    /// Queues a frame under a delivery policy; `hold` is kept until the frame is written, unless
    /// the queue is behind. `now` dates the queue falling behind.
    pub fn push_with(
        &self,
        bytes: Bytes,
        delivery: Delivery,
        hold: Option<Rc<Hold>>,
        now: Instant,
    ) -> Pushed {
        let mut inner = self.inner.borrow_mut();
        if inner.state != State::Open {
            return Pushed::Refused;
        }
        // Frames already being written cannot be replaced or dropped.
        let first_free = inner.first_free();
        let mut outcome = Pushed::Queued;
        match delivery {
            Delivery::Reliable => {}
            Delivery::Latest(_) => {
                let same = inner
                    .frames
                    .iter()
                    .skip(first_free)
                    .position(|q| q.delivery == delivery);
                if let Some(i) = same.map(|i| i + first_free) {
                    let hold = hold.filter(|_| inner.behind_since.is_none());
                    let new = Queued {
                        bytes,
                        delivery,
                        hold,
                    };
                    let old = std::mem::replace(&mut inner.frames[i], new);
                    inner.queued_bytes =
                        inner.queued_bytes - old.bytes.len() + inner.frames[i].bytes.len();
                    return Pushed::Replaced;
                }
            }
            Delivery::Budget { key, max } => {
                let same_key =
                    |q: &Queued| matches!(q.delivery, Delivery::Budget { key: k, .. } if k == key);
                let waiting = inner
                    .frames
                    .iter()
                    .skip(first_free)
                    .filter(|q| same_key(q))
                    .count();
                if waiting >= usize::from(max.max(1)) {
                    let oldest = inner
                        .frames
                        .iter()
                        .skip(first_free)
                        .position(same_key)
                        .map(|i| i + first_free);
                    if let Some(old) = oldest.and_then(|i| inner.frames.remove(i)) {
                        inner.queued_bytes -= old.bytes.len();
                        outcome = Pushed::DroppedOldest;
                    }
                }
            }
        }
        let (frames, queued_bytes) = (inner.frames.len() + 1, inner.queued_bytes + bytes.len());
        if self.limits.over_hard(frames, queued_bytes) {
            self.overflow(&mut inner);
            return Pushed::Refused;
        }
        if self.limits.over_soft(frames, queued_bytes) {
            match inner.behind_since {
                None => {
                    // Behind: this queue no longer holds back its publishers.
                    inner.behind_since = Some(now);
                    for q in inner.frames.iter_mut() {
                        q.hold = None;
                    }
                }
                Some(since)
                    if now.saturating_duration_since(since) >= self.limits.behind_timeout =>
                {
                    self.overflow(&mut inner);
                    return Pushed::Refused;
                }
                Some(_) => {}
            }
        }
        let hold = hold.filter(|_| inner.behind_since.is_none());
        inner.queued_bytes += bytes.len();
        inner.frames.push_back(Queued {
            bytes,
            delivery,
            hold,
        });
        self.kick(&mut inner);
        outcome
    }

    fn overflow(&self, inner: &mut Inner) {
        // Keep the frames being written so the peer never sees a torn frame.
        let keep = inner.first_free();
        inner.frames.truncate(keep);
        if let Some(head) = inner.frames.front_mut() {
            head.hold = None;
        }
        inner.queued_bytes = inner.frames.iter().map(|q| q.bytes.len()).sum();
        let close = encode_close(
            &mut BytesMut::new(),
            close_code::TRY_AGAIN_LATER,
            "slow consumer: outbound backlog over limit",
        );
        inner.queued_bytes += close.len();
        inner.frames.push_back(Queued::reliable(close));
        inner.state = State::Closing;
        inner.failed = true;
        inner.slow_consumer = true;
        if let Some(w) = inner.reader.take() {
            w.wake();
        }
        self.kick(inner);
    }

    /// Queues a close frame as the last frame. Returns false if closing had already begun.
    pub fn close_with(&self, frame: Bytes) -> bool {
        let mut inner = self.inner.borrow_mut();
        if inner.state != State::Open {
            return false;
        }
        // A closing connection holds no publisher back while its last frames go out.
        for q in inner.frames.iter_mut() {
            q.hold = None;
        }
        inner.queued_bytes += frame.len();
        inner.frames.push_back(Queued::reliable(frame));
        inner.state = State::Closing;
        self.kick(&mut inner);
        true
    }

    /// Stops writing now, dropping whatever is queued; a send in flight is cancelled (it
    /// holds the socket open in the kernel until then).
    pub fn abandon(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.state = State::Done;
        keep_in_flight(&mut inner);
        if let Some(slot) = inner.sending {
            if let Some(io) = self.io.borrow().as_ref() {
                io.ring.cancel(slot as usize);
            }
        }
    }

    /// True once the connection must be torn down (slow consumer or write error).
    pub fn failed(&self) -> bool {
        self.inner.borrow().failed
    }

    /// True if the connection was failed for exceeding the queue limits (closed with 1013).
    pub fn is_slow_consumer(&self) -> bool {
        self.inner.borrow().slow_consumer
    }

    /// True once a close frame is queued or the queue is finished: no more frames are accepted.
    pub fn is_closing(&self) -> bool {
        self.inner.borrow().state != State::Open
    }

    /// Frames and bytes queued and not yet fully written.
    pub fn queued(&self) -> (usize, usize) {
        let inner = self.inner.borrow();
        (inner.frames.len(), inner.queued_bytes)
    }

    /// Waits until nothing more will be sent: the close frame (or answer) is written and the
    /// write side shut down, or the queue failed or was abandoned.
    pub async fn finished(&self) {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.state == State::Done {
                return std::task::Poll::Ready(());
            }
            inner.reader = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }

    /// Gives back the queue's spare capacity if nothing is queued (an idle connection then
    /// holds no queue memory; the next frame allocates again).
    pub fn release_spare(&self) {
        let mut inner = self.inner.borrow_mut();
        if inner.frames.is_empty() && inner.frames.capacity() > 0 {
            inner.frames = VecDeque::new();
        }
    }

    /// The reader registers here to learn about failures.
    pub fn register_reader(&self, waker: &Waker) {
        let mut inner = self.inner.borrow_mut();
        match &inner.reader {
            Some(w) if w.will_wake(waker) => {}
            _ => inner.reader = Some(waker.clone()),
        }
    }

    /// Wakes the registered reader, if any (it then checks [`failed`](Self::failed)).
    pub fn wake_reader(&self) {
        if let Some(w) = self.inner.borrow_mut().reader.take() {
            w.wake();
        }
    }

    fn fail(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.failed = true;
        inner.state = State::Done;
        keep_in_flight(&mut inner);
        if let Some(w) = inner.reader.take() {
            w.wake();
        }
    }

    /// Whether the queue is over its soft bounds (and since when).
    #[cfg(test)]
    fn behind_since(&self) -> Option<Instant> {
        self.inner.borrow().behind_since
    }

    /// Marks `n` written bytes as sent at `now`; returns how many whole frames that completed.
    /// A queue drained under its soft bounds is no longer behind; one still behind after the
    /// timeout is closed as a slow consumer even when nothing new is pushed (a trickling reader).
    fn consume(&self, mut n: usize, now: Instant) -> usize {
        let mut inner = self.inner.borrow_mut();
        let mut done = 0;
        inner.queued_bytes -= n;
        while n > 0 {
            let head_left = inner.frames[0].bytes.len() - inner.head_written;
            if n >= head_left {
                n -= head_left;
                inner.frames.pop_front();
                inner.head_written = 0;
                done += 1;
            } else {
                inner.head_written += n;
                n = 0;
            }
        }
        if let Some(since) = inner.behind_since {
            if !self
                .limits
                .over_soft(inner.frames.len(), inner.queued_bytes)
            {
                inner.behind_since = None;
            } else if inner.state == State::Open
                && now.saturating_duration_since(since) >= self.limits.behind_timeout
            {
                self.overflow(&mut inner);
            }
        }
        done
    }
}

// SAFETY: the frames a send carries are the first `in_flight` of `frames`, which nothing removes
// or replaces while `sending` is set: delivery policies and overflow act from `first_free` on,
// `consume` runs at the completion, and `abandon`/`fail` keep them (`keep_in_flight`) until
// `complete_send`, which drops them. The deque may move its `Queued` entries; the bytes they
// point to do not move.
unsafe impl SendQueue for Outbound {
    /// The socket this queue writes to (-1 before [`attach`](Outbound::attach)).
    fn fd(&self) -> RawFd {
        self.io.borrow().as_ref().map_or(-1, |io| io.fd)
    }

    /// Called by the ring: fills `op` with the head of the queue. False when there is nothing
    /// to send; a closing queue whose last frame is written shuts the socket's write side
    /// down here (the peer reads end of stream after our close frame).
    fn prepare_send(&self, op: &mut SendOp) -> bool {
        let mut inner = self.inner.borrow_mut();
        inner.scheduled = false;
        if inner.state == State::Done || inner.sending.is_some() {
            return false;
        }
        if inner.frames.is_empty() {
            if inner.state == State::Closing {
                inner.state = State::Done;
                super::ring::shutdown_write(self.fd());
                if let Some(w) = inner.reader.take() {
                    w.wake();
                }
            }
            return false;
        }
        let batch = self.limits.batch_frames.clamp(1, MAX_BATCH);
        for (i, q) in inner.frames.iter().take(batch).enumerate() {
            let start = if i == 0 { inner.head_written } else { 0 };
            op.push(&q.bytes, start);
        }
        inner.in_flight = op.len() as u8;
        true
    }

    /// Called by the ring once the send is submitted in `slot`.
    fn sending(&self, slot: usize) {
        self.inner.borrow_mut().sending = Some(slot as u32);
    }

    /// Called by the ring with the send's result (bytes written, or `-errno`).
    fn complete_send(&self, result: i32, now: Instant, metrics: &ShardMetrics) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.sending = None;
            inner.in_flight = 0;
            if inner.state == State::Done {
                // What a given-up queue kept for the kernel can go now.
                keep_in_flight(&mut inner);
                return;
            }
        }
        match result {
            n if n > 0 => {
                let frames = self.consume(n as usize, now);
                ShardMetrics::add(&metrics.frames_out, frames as u64);
                ShardMetrics::add(&metrics.bytes_out, n as u64);
            }
            e if e == -libc::EINTR || e == -libc::EAGAIN => {}
            _ => {
                // The socket failed, or a send sat past the write timeout and was cancelled.
                self.fail();
                return;
            }
        }
        let mut inner = self.inner.borrow_mut();
        self.kick(&mut inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Soft bounds equal to the hard ones: the first push past them closes.
    fn limits(max_frames: usize, max_bytes: usize) -> Limits {
        Limits {
            max_frames,
            max_bytes,
            behind_timeout: Duration::from_secs(10),
            hard_factor: 1,
            batch_frames: 64,
        }
    }

    fn at(out: &Outbound, bytes: &'static [u8], now: Instant) -> Pushed {
        out.push_with(Bytes::from_static(bytes), Delivery::Reliable, None, now)
    }

    #[test]
    fn the_frames_of_a_send_in_flight_outlive_an_abandoned_or_failed_queue() {
        let metrics = crate::ops::metrics::Metrics::new(1);
        for fail in [false, true] {
            let out = Rc::new(Outbound::new(limits(100, 1 << 20)));
            for i in 0..3u8 {
                assert!(out.push(Bytes::from(vec![i; 100])));
            }
            let mut op = SendOp::new();
            assert!(out.prepare_send(&mut op));
            assert_eq!(op.len(), 3);
            out.sending(0);
            assert!(
                out.push(Bytes::from(vec![9; 100])),
                "queued behind the send"
            );
            if fail {
                out.fail();
            } else {
                out.abandon();
            }
            {
                let inner = out.inner.borrow();
                // The kernel may still be reading these three: they stay until the completion.
                assert_eq!(inner.frames.len(), 3);
                assert_eq!(inner.queued_bytes, 300);
                assert!(inner.frames.iter().all(|q| q.bytes[0] < 3));
            }
            out.complete_send(-libc::ECANCELED, Instant::now(), metrics.shard(0));
            assert!(
                out.inner.borrow().frames.is_empty(),
                "released at the completion"
            );
        }
    }

    #[test]
    fn a_burst_over_the_soft_bounds_is_not_a_slow_consumer() {
        let out = Outbound::new(Limits {
            hard_factor: 4,
            ..limits(2, 1000)
        });
        let t0 = Instant::now();
        for _ in 0..8 {
            assert!(at(&out, b"abc", t0).accepted(), "up to the hard bound");
        }
        assert_eq!(out.behind_since(), Some(t0));
        assert!(!out.failed());
        // The writer drains it under the soft bound: no longer behind.
        out.consume(3 * 7, t0 + Duration::from_secs(9));
        assert_eq!(out.behind_since(), None);
        assert!(at(&out, b"abc", t0 + Duration::from_secs(60)).accepted());
    }

    #[test]
    fn staying_behind_past_the_timeout_is_a_slow_consumer() {
        let out = Outbound::new(Limits {
            hard_factor: 100,
            ..limits(2, 1000)
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            at(&out, b"abc", t0);
        }
        assert!(at(&out, b"abc", t0 + Duration::from_secs(9)).accepted());
        out.consume(1, t0 + Duration::from_secs(9));
        assert!(!out.failed(), "a trickle within the timeout");
        out.consume(1, t0 + Duration::from_secs(10));
        assert!(
            out.failed() && out.is_slow_consumer(),
            "still behind after 10 s"
        );
        let inner = out.inner.borrow();
        assert_eq!(
            inner.frames.len(),
            2,
            "the partly written head, then the close"
        );
        assert_eq!(&inner.frames[1].bytes[2..4], &1013u16.to_be_bytes());
    }

    #[test]
    fn the_hard_bound_closes_at_once() {
        let out = Outbound::new(Limits {
            hard_factor: 2,
            ..limits(2, 1000)
        });
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(at(&out, b"abc", t0).accepted());
        }
        assert_eq!(at(&out, b"abc", t0), Pushed::Refused);
        assert!(out.is_slow_consumer());
    }

    #[test]
    fn a_queue_behind_lets_go_of_its_publishers_holds() {
        let out = Outbound::new(Limits {
            hard_factor: 10,
            ..limits(2, 1000)
        });
        let credit = crate::runtime::credit::Credit::new(5);
        let t0 = Instant::now();
        let push = |hold| out.push_with(Bytes::from_static(b"abc"), Delivery::Reliable, hold, t0);
        push(Some(credit.hold(3)));
        push(Some(credit.hold(3)));
        assert_eq!(credit.outstanding(), 6);
        push(Some(credit.hold(3)));
        assert_eq!(credit.outstanding(), 0, "behind: no holds kept");
        assert!(credit.has_room());
    }

    #[test]
    fn overflow_turns_into_a_1013_close_and_bounds_memory() {
        let out = Outbound::new(limits(3, 1000));
        for _ in 0..3 {
            assert!(out.push(Bytes::from_static(b"abc")));
        }
        assert!(!out.push(Bytes::from_static(b"abc")));
        assert!(out.failed() && out.is_slow_consumer());
        let (frames, _) = out.queued();
        assert_eq!(frames, 1, "only the close frame is left");
        let inner = out.inner.borrow();
        assert_eq!(&inner.frames[0].bytes[2..4], &1013u16.to_be_bytes());
        drop(inner);
        assert!(
            !out.push(Bytes::from_static(b"more")),
            "closing queues accept nothing"
        );
    }

    #[test]
    fn byte_limit_counts_too() {
        let out = Outbound::new(limits(100, 10));
        assert!(
            out.push(Bytes::from_static(b"12345678901234")),
            "a lone large frame is accepted"
        );
        assert!(!out.push(Bytes::from_static(b"123")));
        assert!(out.is_slow_consumer());
    }

    #[test]
    fn partly_written_head_survives_overflow() {
        let out = Outbound::new(limits(2, 1000));
        out.push(Bytes::from_static(b"head"));
        out.push(Bytes::from_static(b"next"));
        assert_eq!(out.consume(2, Instant::now()), 0);
        assert!(!out.push(Bytes::from_static(b"x")));
        let inner = out.inner.borrow();
        assert_eq!(inner.frames.len(), 2);
        assert_eq!(&inner.frames[0].bytes[..], b"head");
        assert_eq!(inner.queued_bytes, 4 + inner.frames[1].bytes.len());
    }

    #[test]
    fn latest_value_replaces_queued_frame_with_same_key() {
        let out = Outbound::new(limits(10, 1000));
        out.push_with(
            Bytes::from_static(b"a1"),
            Delivery::Latest(1),
            None,
            Instant::now(),
        );
        out.push_with(
            Bytes::from_static(b"b1"),
            Delivery::Latest(2),
            None,
            Instant::now(),
        );
        assert_eq!(
            out.push_with(
                Bytes::from_static(b"a2"),
                Delivery::Latest(1),
                None,
                Instant::now()
            ),
            Pushed::Replaced
        );
        out.push(Bytes::from_static(b"r"));
        let inner = out.inner.borrow();
        let got: Vec<&[u8]> = inner.frames.iter().map(|q| &q.bytes[..]).collect();
        assert_eq!(got, vec![&b"a2"[..], b"b1", b"r"]);
        assert_eq!(inner.queued_bytes, 5);
    }

    #[test]
    fn budget_drops_the_oldest_frame_of_the_same_key() {
        let out = Outbound::new(limits(10, 1000));
        let audio = |k| Delivery::Budget { key: k, max: 2 };
        assert_eq!(
            out.push_with(Bytes::from_static(b"a1"), audio(1), None, Instant::now()),
            Pushed::Queued
        );
        assert_eq!(
            out.push_with(Bytes::from_static(b"b1"), audio(2), None, Instant::now()),
            Pushed::Queued
        );
        assert_eq!(
            out.push_with(Bytes::from_static(b"a2"), audio(1), None, Instant::now()),
            Pushed::Queued
        );
        assert_eq!(
            out.push_with(Bytes::from_static(b"a3"), audio(1), None, Instant::now()),
            Pushed::DroppedOldest
        );
        let inner = out.inner.borrow();
        let got: Vec<&[u8]> = inner.frames.iter().map(|q| &q.bytes[..]).collect();
        assert_eq!(got, vec![&b"b1"[..], b"a2", b"a3"]);
        assert_eq!(inner.queued_bytes, 6);
    }

    #[test]
    fn frames_being_written_are_never_replaced() {
        let out = Outbound::new(limits(10, 1000));
        out.push_with(
            Bytes::from_static(b"s1"),
            Delivery::Latest(7),
            None,
            Instant::now(),
        );
        out.consume(1, Instant::now());
        assert_eq!(
            out.push_with(
                Bytes::from_static(b"s2"),
                Delivery::Latest(7),
                None,
                Instant::now()
            ),
            Pushed::Queued
        );
        assert_eq!(
            out.push_with(
                Bytes::from_static(b"s3"),
                Delivery::Latest(7),
                None,
                Instant::now()
            ),
            Pushed::Replaced
        );
        let inner = out.inner.borrow();
        let got: Vec<&[u8]> = inner.frames.iter().map(|q| &q.bytes[..]).collect();
        assert_eq!(got, vec![&b"s1"[..], b"s3"]);
    }

    #[test]
    fn consume_pops_whole_frames_and_tracks_partial_head() {
        let out = Outbound::new(limits(10, 1000));
        out.push(Bytes::from_static(b"aaa"));
        out.push(Bytes::from_static(b"bb"));
        assert_eq!(out.consume(4, Instant::now()), 1);
        assert_eq!(out.inner.borrow().head_written, 1);
        assert_eq!(out.consume(1, Instant::now()), 1);
        assert_eq!(out.queued(), (0, 0));
    }
}
