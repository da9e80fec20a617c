//! The shard's own io_uring for socket I/O: batched writes, and reads into shared buffers.
//!
//! glommio's sockets are readiness-based: a write is a non-blocking `sendmsg` syscall per
//! connection, and a full socket costs a poll registration. Here every connection with frames
//! waiting is *scheduled*; the shard's flusher task then turns all of them into `SENDMSG`
//! submissions (a vectored send of up to `write_batch_frames` queued frames each) and hands them
//! to the kernel in **one** `io_uring_enter` — one syscall per reactor turn, however many
//! connections a broadcast reached. Sends that the socket takes at once complete during that
//! call and are reaped right after it; a send into a full socket buffer stays in the kernel
//! (which retries it when the socket drains) and its completion is signalled through an
//! eventfd that a glommio task reads, so nothing polls.
//!
//! **Reads** are one multishot `RECV` per socket, armed once, into a provided-buffer ring the
//! whole shard shares ([`RECV_BUFFERS`] × [`RECV_BUFFER_SIZE`]): an idle connection holds no
//! buffer, no future waiting on its socket and no poll registration, only a [`Receiver`] slot
//! the completions are routed to. The connection copies what arrived into its own buffer (only
//! an unfinished frame stays there) and gives the shared buffer back at once. A connection that
//! stops reading (its publisher credit is spent) holds no shared buffer for long (what they
//! hold is spilled to its own buffer) and at most [`MAX_UNREAD`] bytes: its receive is then
//! cancelled, so TCP flow control holds the client back, and re-armed when it
//! reads again. Deadlines (handshake, idle, close) are checked by the sweeper, not by a timer
//! per socket.
//!
//! Memory safety: the kernel reads the frames and the `msghdr`/`iovec`s after `submit` returns,
//! so a [`SendOp`] lives in a box at a fixed address until its completion arrives (or, if the
//! shard ends first, is leaked), holding its queue (an `Rc`), which keeps the frames it sends
//! until then (the contract of [`SendQueue`]). The op does not clone the frames: at 3M
//! deliveries/s the atomic reference count of a clone per frame per send was a third of the
//! shard's time. A connection that goes away
//! cancels its send; a send stuck past `write_timeout` is cancelled by the sweeper and fails its
//! connection.

use crate::ops::metrics::{Metrics, ShardMetrics};
use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring};
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Submission queue entries; more sends than this in one turn are submitted in several calls.
const RING_ENTRIES: u32 = 1024;
/// Completion queue entries: room for the inline completions of a broadcast to this many
/// connections in one submission. Past it the kernel keeps completions in its overflow list
/// (`IORING_FEAT_NODROP`), which [`SocketRing::reap`] has it flush.
const COMPLETION_ENTRIES: u32 = 16 * 1024;
/// `user_data` of cancellation requests, whose own completions carry nothing to do.
const CANCEL: u64 = u64::MAX;
/// `user_data` bit of receives (slot in the low 32 bits, the slot's generation above).
const RECV: u64 = 1 << 62;
/// Bits of a receive slot's generation in its `user_data`.
const GENERATION_MASK: u64 = (1 << 30) - 1;
/// Shared receive buffers per shard (a power of two). The kernel takes them in ring order, so
/// over time every one of them is written: their count, more than their size, sets what they
/// keep resident (a small message touches one page of its buffer: 256 × 4 KiB = 1 MiB; 512
/// cost 2 MiB, ~140 B per connection at 15,000 idle connections). A connection holds at most
/// [`MAX_HELD`] of them: 256 serve 256 connections with a message unread at once (64 holding
/// their most) before a receive has to wait for one to come back (`receive_starved`).
pub const RECV_BUFFERS: u16 = 256;
/// Bytes per receive buffer.
pub const RECV_BUFFER_SIZE: usize = 8 * 1024;
const _: () = assert!(
    RECV_BUFFER_SIZE <= u16::MAX as usize,
    "a receive's length is kept in a u16"
);
/// Shared buffers one connection may hold at once: when it holds this many, what they hold is
/// copied to the connection's own spill buffer and they go back, so connections that are not
/// reading (their publisher credit is spent) cannot take the shard's buffers from the others.
pub const MAX_HELD: usize = 4;
/// Bytes a connection may have received and not read before its receive is paused.
pub const MAX_UNREAD: usize = 64 * 1024;
/// The provided-buffer group of the shard's receive buffers.
const BUFFER_GROUP: u16 = 0;
/// Most frames one send carries (the iovec array is this long).
pub const MAX_BATCH: usize = 64;

/// What the ring sends for: a connection's outbound queue (see `super::outbound`).
///
/// # Safety
///
/// The bytes a queue adds to a [`SendOp`] in `prepare_send` are read by the kernel until the
/// send's `complete_send`: the queue must keep them alive and unchanged until then, whatever
/// else happens to it (abandoned, failed, closed). The op holds the queue for as long.
pub unsafe trait SendQueue {
    /// Fills `op` with the head of the queue; false when there is nothing to send now.
    fn prepare_send(&self, op: &mut SendOp) -> bool;
    /// The send prepared last is in flight in `slot` (for [`SocketRing::cancel`]).
    fn sending(&self, slot: usize);
    /// The send's result: bytes written, or `-errno`.
    fn complete_send(&self, result: i32, now: Instant, metrics: &ShardMetrics);
    /// The socket the queue writes to.
    fn fd(&self) -> RawFd;
}

/// One `SENDMSG` in flight: what the kernel reads until its completion arrives.
pub struct SendOp {
    /// The queue, which keeps the frames the iovecs point into until the completion.
    out: Option<Rc<dyn SendQueue>>,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
    started: Instant,
}

impl SendOp {
    pub(super) fn new() -> Box<SendOp> {
        Box::new(SendOp {
            out: None,
            iov: Vec::with_capacity(MAX_BATCH),
            // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
            msg: unsafe { std::mem::zeroed() },
            started: Instant::now(),
        })
    }

    /// Adds `bytes[start..]` to the send (the queue keeps `bytes` until the send completes:
    /// see [`SendQueue`]).
    pub fn push(&mut self, bytes: &Bytes, start: usize) {
        let part = &bytes[start..];
        self.iov.push(libc::iovec {
            iov_base: part.as_ptr() as *mut libc::c_void,
            iov_len: part.len(),
        });
    }

    /// Frames in this send.
    pub fn len(&self) -> usize {
        self.iov.len()
    }

    /// Whether the send carries nothing.
    pub fn is_empty(&self) -> bool {
        self.iov.is_empty()
    }

    fn clear(&mut self) {
        self.out = None;
        self.iov.clear();
    }
}

/// Boxed send ops by slot; a slot's index is its completion's `user_data`.
#[derive(Default)]
struct Ops {
    slots: Vec<Option<Box<SendOp>>>,
    free: Vec<usize>,
    // Boxed: a send's msghdr must not move while the kernel reads it, and reusing the boxes
    // saves an allocation per send.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<SendOp>>,
    in_flight: usize,
}

impl Ops {
    fn insert(&mut self, op: Box<SendOp>) -> usize {
        self.in_flight += 1;
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(op);
                slot
            }
            None => {
                self.slots.push(Some(op));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) -> Option<Box<SendOp>> {
        let op = self.slots.get_mut(slot)?.take()?;
        self.in_flight -= 1;
        self.free.push(slot);
        Some(op)
    }

    fn spare(&mut self) -> Box<SendOp> {
        self.spare.pop().unwrap_or_else(SendOp::new)
    }

    fn recycle(&mut self, mut op: Box<SendOp>) {
        op.clear();
        if self.spare.len() < 1024 {
            self.spare.push(op);
        }
    }
}

/// The shard's provided receive buffers: a ring of `RECV_BUFFERS` entries the kernel takes
/// buffers from, over one block of memory.
struct BufRing {
    /// Page-aligned entries shared with the kernel.
    entries: *mut types::BufRingEntry,
    data: Box<[u8]>,
    /// Our copy of the ring's tail.
    tail: u16,
    /// Buffers the kernel has to take from.
    free: usize,
}

impl BufRing {
    fn new() -> io::Result<BufRing> {
        let layout = std::alloc::Layout::from_size_align(
            usize::from(RECV_BUFFERS) * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size; the result is checked for null.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) } as *mut types::BufRingEntry;
        if entries.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut ring = BufRing {
            entries,
            data: vec![0u8; usize::from(RECV_BUFFERS) * RECV_BUFFER_SIZE].into_boxed_slice(),
            tail: 0,
            free: 0,
        };
        for bid in 0..RECV_BUFFERS {
            ring.provide(bid);
        }
        Ok(ring)
    }

    /// Hands buffer `bid` (back) to the kernel.
    fn provide(&mut self, bid: u16) {
        let index = usize::from(self.tail & (RECV_BUFFERS - 1));
        let addr = self.data[usize::from(bid) * RECV_BUFFER_SIZE..].as_ptr() as u64;
        // SAFETY: `index` < RECV_BUFFERS, so the entry lies inside the allocation; the kernel
        // reads entries only up to the tail, which is published after the entry is written.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(addr);
        entry.set_len(RECV_BUFFER_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.free += 1;
        // SAFETY: the tail is the `resv` field of the first entry (the ring's layout), a u16
        // inside the allocation, naturally aligned; the kernel reads it with acquire ordering.
        let tail = unsafe {
            &*(types::BufRingEntry::tail(self.entries) as *const std::sync::atomic::AtomicU16)
        };
        tail.store(self.tail, std::sync::atomic::Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`.
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * RECV_BUFFER_SIZE;
        &self.data[start..start + len.min(RECV_BUFFER_SIZE)]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // The kernel may still write into buffers of receives it is tearing down, and read
        // entries: leak both (the entries are never freed) rather than free memory it could
        // touch (this is shard exit).
        std::mem::forget(std::mem::take(&mut self.data));
    }
}

/// What a connection's receive has to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// This many bytes were appended to the buffer.
    Data(usize),
    /// The peer closed its side.
    Eof,
    /// The socket failed.
    Error,
    /// A deadline passed (handshake, idle or close) with nothing received.
    TimedOut,
    /// Nothing has arrived for the time set with [`RecvHandle::set_park_after`].
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvState {
    /// A multishot receive is armed.
    Armed,
    /// Its cancellation was asked for (paused: the connection holds too many buffers).
    Cancelling,
    /// Not armed (paused, out of buffers, or ended).
    Off,
}

/// One connection's receive: where its completions go.
struct Receiver {
    generation: u32,
    fd: RawFd,
    state: RecvState,
    /// Buffers received and not yet copied out: (buffer id, length).
    held: [(u16, u16); MAX_HELD],
    held_len: u8,
    /// What was received while the connection was not reading, copied out of shared buffers.
    spill: Option<Box<bytes::BytesMut>>,
    end: Option<Received>,
    /// Waiting for a buffer to be given back before re-arming.
    starved: bool,
    waker: Option<Waker>,
    /// Milliseconds since the ring's epoch (the fields here are compact: a shard may hold
    /// 100,000 of them).
    last_input_ms: u64,
    /// Fails with `TimedOut` once nothing has arrived for this many ms (0: never).
    idle_ms: u32,
    /// Fails with `TimedOut` at this ms since the epoch (`u64::MAX`: never).
    deadline_ms: u64,
    timed_out: bool,
    /// Says `Idle` once nothing has arrived for this many ms (0: never)...
    park_after_ms: u32,
    /// ...which it has.
    idle_due: bool,
    /// Its connection is parked (the waker resumes it), so it is not asked to park again.
    parked: bool,
}

impl Receiver {
    /// A receive of `fd`, not armed yet, with no deadline, its last input at `now_ms`.
    fn new(generation: u32, fd: RawFd, now_ms: u64) -> Receiver {
        Receiver {
            generation,
            fd,
            state: RecvState::Off,
            held: [(0, 0); MAX_HELD],
            held_len: 0,
            spill: None,
            end: None,
            starved: false,
            waker: None,
            last_input_ms: now_ms,
            idle_ms: 0,
            deadline_ms: u64::MAX,
            timed_out: false,
            park_after_ms: 0,
            idle_due: false,
            parked: false,
        }
    }

    /// Keeps buffer `bid`; the caller spills once [`MAX_HELD`] are held, so there is room.
    fn hold(&mut self, bid: u16, len: u16) {
        self.held[usize::from(self.held_len)] = (bid, len);
        self.held_len += 1;
    }

    fn held_count(&self) -> usize {
        usize::from(self.held_len)
    }

    /// Bytes received and not yet read by the connection.
    fn unread(&self) -> usize {
        let held = self.held[..usize::from(self.held_len)]
            .iter()
            .map(|&(_, len)| usize::from(len))
            .sum::<usize>();
        held + self.spill.as_ref().map_or(0, |s| s.len())
    }

    /// The buffers held, in arrival order; none are held afterwards.
    fn take_held(&mut self) -> impl Iterator<Item = (u16, u16)> {
        let count = usize::from(std::mem::take(&mut self.held_len));
        let held = self.held;
        held.into_iter().take(count)
    }

    /// Whether its receive should be armed again: it ended without the socket ending, it holds
    /// room for more, and buffers are not known to be out.
    fn wants_arming(&self) -> bool {
        self.state == RecvState::Off
            && self.end.is_none()
            && !self.starved
            && self.held_count() < MAX_HELD
            && self.unread() < MAX_UNREAD
    }
}

/// Receivers by slot.
#[derive(Default)]
struct Receivers {
    slots: Vec<Option<Receiver>>,
    generations: Vec<u32>,
    free: Vec<usize>,
    starved: Vec<usize>,
}

/// A connection's handle on its receive; dropping it cancels the receive.
pub struct RecvHandle {
    ring: Rc<SocketRing>,
    slot: usize,
}

impl RecvHandle {
    /// Appends what has arrived to `buf`, or says why nothing will.
    pub fn poll_recv(
        &self,
        cx: &std::task::Context<'_>,
        buf: &mut bytes::BytesMut,
    ) -> Poll<Received> {
        self.ring.poll_recv(self.slot, cx, buf)
    }

    /// Waits for [`poll_recv`](Self::poll_recv).
    pub async fn recv(&self, buf: &mut bytes::BytesMut) -> Received {
        std::future::poll_fn(|cx| self.poll_recv(cx, buf)).await
    }

    /// Times out once nothing has arrived for `idle` (none: never).
    pub fn set_idle_timeout(&self, idle: Option<Duration>) {
        let ms = idle.map_or(0, |d| d.as_millis().clamp(1, u32::MAX as u128) as u32);
        self.ring.with_receiver(self.slot, |r| r.idle_ms = ms);
    }

    /// Times out at `deadline` whatever arrives (none: never).
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        let ms = deadline.map_or(u64::MAX, |d| self.ring.ms_since_epoch(d));
        self.ring.with_receiver(self.slot, |r| {
            r.deadline_ms = ms;
            r.timed_out = false;
        });
    }

    /// Says `Idle` once nothing has arrived for `after` (none: never).
    pub fn set_park_after(&self, after: Option<Duration>) {
        let ms = after.map_or(0, |d| d.as_millis().clamp(1, u32::MAX as u128) as u32);
        self.ring.with_receiver(self.slot, |r| {
            r.park_after_ms = ms;
            r.idle_due = false;
        });
    }

    /// Wakes `waker` at the next event of this receive (the connection is parked: nothing
    /// polls it meanwhile).
    pub fn register_waker(&self, waker: &Waker) {
        self.ring.with_receiver(self.slot, |r| {
            r.waker = Some(waker.clone());
            r.parked = true;
        });
    }
}

impl Drop for RecvHandle {
    fn drop(&mut self) {
        self.ring.close_receiver(self.slot);
    }
}

/// Shuts the write side of socket `fd` down (the peer reads end of stream); errors are ignored.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown(2) passes no memory; on a descriptor that is not a socket it fails.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// A shard's socket-write ring and the connections waiting for its next submission.
pub struct SocketRing {
    ring: RefCell<IoUring>,
    ops: RefCell<Ops>,
    buffers: RefCell<BufRing>,
    receivers: RefCell<Receivers>,
    /// Entries are waiting in the submission queue (re-armed receives).
    unsubmitted: std::cell::Cell<bool>,
    dirty: RefCell<Vec<Rc<dyn SendQueue>>>,
    flusher: RefCell<Option<Waker>>,
    /// Signalled by the kernel for completions that did not arrive during `submit`.
    eventfd: OwnedFd,
    metrics: Arc<Metrics>,
    shard: usize,
    write_timeout: Duration,
    tick: Duration,
    /// Receivers keep times as milliseconds since this.
    epoch: Instant,
}

impl SocketRing {
    /// Sets up the ring of one shard; deadlines are checked every `tick`. Fails where the
    /// kernel lacks what it needs (io_uring with provided-buffer rings and multishot receive:
    /// Linux 6.0), saying so.
    pub fn new(
        metrics: Arc<Metrics>,
        shard: usize,
        write_timeout: Duration,
        tick: Duration,
    ) -> io::Result<Self> {
        Self::with_queues(
            metrics,
            shard,
            write_timeout,
            tick,
            RING_ENTRIES,
            COMPLETION_ENTRIES,
        )
    }

    /// [`new`](Self::new) with the given queue sizes (tests make them small to overflow them).
    fn with_queues(
        metrics: Arc<Metrics>,
        shard: usize,
        write_timeout: Duration,
        tick: Duration,
        submission_entries: u32,
        completion_entries: u32,
    ) -> io::Result<Self> {
        check_kernel()?;
        // Not COOP_TASKRUN: receive completions are posted by task work, which must run even
        // while the thread sleeps in glommio's ring. Older kernels need the queues in one
        // physically contiguous block: where memory is too fragmented for that, a smaller
        // completion queue (its overflow list takes the rest) beats a shard that cannot start.
        let mut completion_entries = completion_entries;
        let ring = loop {
            match IoUring::builder()
                .setup_cqsize(completion_entries)
                .build(submission_entries)
            {
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOMEM)
                        && completion_entries > 2 * submission_entries =>
                {
                    completion_entries /= 2;
                }
                other => break other?,
            }
        };
        if !ring.params().is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_NODROP: completions could be lost",
            ));
        }
        // A blocking eventfd: glommio's read of it then waits in the kernel instead of failing
        // with EAGAIN.
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Not EVENTFD_ASYNC: that one is signalled only from io-wq workers, never for the
        // completions of multishot receives.
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let buffers = BufRing::new()?;
        // SAFETY: the entries are page-aligned, RECV_BUFFERS long, and stay allocated (leaked at
        // the latest) for as long as the ring exists.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.entries as u64,
                RECV_BUFFERS,
                BUFFER_GROUP,
                0,
            )
        }
        .map_err(|e| io::Error::new(e.kind(), format!("provided-buffer ring refused: {e}")))?;
        Ok(SocketRing {
            ring: RefCell::new(ring),
            ops: RefCell::new(Ops::default()),
            buffers: RefCell::new(buffers),
            receivers: RefCell::new(Receivers::default()),
            unsubmitted: std::cell::Cell::new(false),
            dirty: RefCell::new(Vec::new()),
            flusher: RefCell::new(None),
            eventfd,
            metrics,
            shard,
            write_timeout,
            tick,
            epoch: Instant::now(),
        })
    }

    /// Starts receiving on `fd` (a connected socket that outlives the handle).
    pub fn start_recv(self: &Rc<Self>, fd: RawFd) -> RecvHandle {
        let slot = {
            let mut r = self.receivers.borrow_mut();
            let slot = r.free.pop().unwrap_or_else(|| {
                r.slots.push(None);
                r.generations.push(0);
                r.slots.len() - 1
            });
            let now_ms = self.ms_since_epoch(Instant::now());
            r.slots[slot] = Some(Receiver::new(r.generations[slot], fd, now_ms));
            slot
        };
        self.arm(slot);
        RecvHandle {
            ring: self.clone(),
            slot,
        }
    }

    fn ms_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn with_receiver(&self, slot: usize, f: impl FnOnce(&mut Receiver)) {
        if let Some(r) = self.receivers.borrow_mut().slots[slot].as_mut() {
            f(r);
        }
    }

    /// Arms the multishot receive of `slot`.
    fn arm(&self, slot: usize) {
        let entry = {
            let mut receivers = self.receivers.borrow_mut();
            let Some(r) = receivers.slots[slot].as_mut() else {
                return;
            };
            if r.state != RecvState::Off || r.end.is_some() {
                return;
            }
            r.state = RecvState::Armed;
            opcode::RecvMulti::new(types::Fd(r.fd), BUFFER_GROUP)
                .build()
                .user_data(recv_user_data(r.generation, slot))
        };
        if let Err(e) = self.push(entry) {
            // Tried again when buffers come back, or at the next sweep.
            tracing::warn!(shard = self.shard, error = %e, "cannot queue a receive");
            let mut receivers = self.receivers.borrow_mut();
            if let Some(r) = receivers.slots[slot].as_mut() {
                r.state = RecvState::Off;
                if !r.starved {
                    r.starved = true;
                    receivers.starved.push(slot);
                }
            }
            return;
        }
        self.submit_soon();
    }

    /// Entries wait in the submission queue: the flusher submits them in its next turn.
    fn submit_soon(&self) {
        self.unsubmitted.set(true);
        if let Some(w) = self.flusher.borrow_mut().take() {
            w.wake();
        }
    }

    fn poll_recv(
        &self,
        slot: usize,
        cx: &std::task::Context<'_>,
        buf: &mut bytes::BytesMut,
    ) -> Poll<Received> {
        let mut receivers = self.receivers.borrow_mut();
        let Some(r) = receivers.slots[slot].as_mut() else {
            return Poll::Ready(Received::Error);
        };
        r.parked = false;
        if r.held_count() > 0 || r.spill.is_some() {
            let n = {
                let mut n = 0;
                if let Some(spill) = r.spill.take() {
                    n += spill.len();
                    if buf.is_empty() {
                        *buf = *spill;
                    } else {
                        buf.extend_from_slice(&spill);
                    }
                }
                let mut buffers = self.buffers.borrow_mut();
                for (bid, len) in r.take_held() {
                    buf.extend_from_slice(buffers.bytes(bid, usize::from(len)));
                    buffers.provide(bid);
                    n += usize::from(len);
                }
                n
            };
            let rearm = r.wants_arming();
            drop(receivers);
            if rearm {
                self.arm(slot);
            }
            self.rearm_starved();
            return Poll::Ready(Received::Data(n));
        }
        if let Some(end) = r.end {
            return Poll::Ready(end);
        }
        if r.timed_out {
            r.timed_out = false;
            return Poll::Ready(Received::TimedOut);
        }
        if r.idle_due {
            r.idle_due = false;
            return Poll::Ready(Received::Idle);
        }
        match &r.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => r.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn close_receiver(&self, slot: usize) {
        let cancel = {
            let mut receivers = self.receivers.borrow_mut();
            let Some(r) = receivers.slots[slot].take() else {
                return;
            };
            let mut r = r;
            let mut buffers = self.buffers.borrow_mut();
            for (bid, _) in r.take_held() {
                buffers.provide(bid);
            }
            // Completions still on their way carry the old generation and are ignored.
            receivers.generations[slot] = (r.generation + 1) & GENERATION_MASK as u32;
            receivers.free.push(slot);
            receivers.starved.retain(|&s| s != slot);
            (r.state, recv_user_data(r.generation, slot))
        };
        self.rearm_starved();
        let (state, user_data) = cancel;
        // At once: the receive holds the socket open in the kernel until it is cancelled.
        match state {
            RecvState::Armed => self.cancel_now(user_data),
            // Its cancellation (a pause) may still wait in the submission queue.
            RecvState::Cancelling => {
                let _ = self.ring.borrow().submit();
            }
            RecvState::Off => {}
        }
    }

    /// Asks the kernel to cancel the operation `user_data`, submitting at once.
    fn cancel_now(&self, user_data: u64) {
        match self.push(cancel_entry(user_data)) {
            Ok(()) => {
                let _ = self.ring.borrow().submit();
            }
            // The operation then ends with its socket (the peer's close or reset).
            Err(e) => tracing::warn!(shard = self.shard, error = %e, "cannot queue a cancel"),
        }
    }

    /// Routes a receive completion to its connection.
    fn on_recv(&self, user_data: u64, result: i32, flags: u32, now_ms: u64) {
        let slot = (user_data & 0xffff_ffff) as usize;
        let generation = ((user_data >> 32) & GENERATION_MASK) as u32;
        let mut bid = io_uring::cqueue::buffer_select(flags);
        if let Some(b) = bid {
            self.buffers.borrow_mut().free -= 1;
            if result <= 0 {
                // An end or a failure that still took a buffer: it carries nothing.
                self.buffers.borrow_mut().provide(b);
                bid = None;
            }
        }
        let mut receivers = self.receivers.borrow_mut();
        let current = receivers.slots.get_mut(slot).and_then(|r| r.as_mut());
        let Some(r) = current.filter(|r| r.generation == generation) else {
            // A receive of a connection already gone: give its buffer straight back.
            drop(receivers);
            if let Some(bid) = bid {
                self.buffers.borrow_mut().provide(bid);
            }
            return;
        };
        if !io_uring::cqueue::more(flags) {
            r.state = RecvState::Off;
        }
        let mut cancel = None;
        let mut returned = false;
        let mut starved = false;
        match (result, bid) {
            (n, Some(bid)) if n > 0 => {
                // A receive fills at most one buffer, whose size fits a u16.
                r.hold(bid, n as u16);
                r.last_input_ms = now_ms;
                if r.held_count() >= MAX_HELD {
                    // Not read yet: copy out and give the shared buffers back.
                    let mut spill = r.spill.take().unwrap_or_default();
                    let mut buffers = self.buffers.borrow_mut();
                    for (bid, len) in r.take_held() {
                        spill.extend_from_slice(buffers.bytes(bid, usize::from(len)));
                        buffers.provide(bid);
                    }
                    r.spill = Some(spill);
                    returned = true;
                }
                if r.unread() >= MAX_UNREAD && r.state == RecvState::Armed {
                    // Not reading fast enough: take no more until it does (TCP holds the
                    // client back meanwhile).
                    r.state = RecvState::Cancelling;
                    cancel = Some(user_data);
                }
            }
            (0, _) => r.end = Some(Received::Eof),
            (e, _) if e == -libc::ENOBUFS => {
                ShardMetrics::inc(&self.metrics().receive_starved);
                if !r.starved {
                    r.starved = true;
                    receivers.starved.push(slot);
                }
                starved = true;
            }
            (e, _) if e == -libc::ECANCELED => {}
            _ => r.end = Some(Received::Error),
        }
        let r = receivers.slots[slot].as_mut().expect("checked above");
        let rearm = r.wants_arming();
        if let Some(w) = r.waker.take() {
            w.wake();
        }
        drop(receivers);
        if let Some(user_data) = cancel {
            match self.push(cancel_entry(user_data)) {
                Ok(()) => self.submit_soon(),
                // Not paused after all: it goes on receiving (into its spill buffer).
                Err(_) => self.with_receiver(slot, |r| r.state = RecvState::Armed),
            }
        }
        if rearm {
            self.arm(slot);
        }
        // Buffers may have come back before this ENOBUFS was reaped.
        if returned || starved {
            self.rearm_starved();
        }
    }

    /// Re-arms receives that ran out of buffers, now that some are back.
    fn rearm_starved(&self) {
        if self.buffers.borrow().free == 0 || self.receivers.borrow().starved.is_empty() {
            return;
        }
        let starved = std::mem::take(&mut self.receivers.borrow_mut().starved);
        for slot in starved {
            let mut rearm = false;
            self.with_receiver(slot, |r| {
                r.starved = false;
                rearm = r.wants_arming();
            });
            if rearm {
                self.arm(slot);
            }
        }
    }

    fn metrics(&self) -> &ShardMetrics {
        self.metrics.shard(self.shard)
    }

    /// Puts a connection with frames to write on the next submission.
    pub fn schedule(&self, out: Rc<dyn SendQueue>) {
        self.dirty.borrow_mut().push(out);
        if let Some(w) = self.flusher.borrow_mut().take() {
            w.wake();
        }
    }

    /// Asks the kernel to cancel the send in `slot` (its connection went away); the send's
    /// completion then arrives with `ECANCELED`.
    pub fn cancel(&self, slot: usize) {
        // At once: the send holds the socket open in the kernel until it is cancelled.
        self.cancel_now(slot as u64);
    }

    /// Queues `entry`, first submitting what the queue holds if it is full; fails only if the
    /// kernel takes nothing.
    fn push(&self, entry: squeue::Entry) -> io::Result<()> {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: every entry pushed here points only into a boxed `SendOp` that stays
            // alive until its completion is reaped (or is leaked), or into nothing at all.
            if unsafe { ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            // The queue is full: hand what it holds to the kernel first.
            match ring.submit() {
                Ok(_) => ShardMetrics::inc(&self.metrics().write_submissions),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Turns every scheduled connection into a send, submits them all in one call, and reaps
    /// what completed meanwhile.
    fn flush(&self) {
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        let mut sends = 0;
        let now = Instant::now();
        for out in dirty.iter() {
            let mut op = self.ops.borrow_mut().spare();
            if !out.prepare_send(&mut op) {
                self.ops.borrow_mut().recycle(op);
                continue;
            }
            op.started = now;
            op.out = Some(out.clone());
            op.msg.msg_iov = op.iov.as_mut_ptr();
            op.msg.msg_iovlen = op.iov.len() as _;
            let msg: *const libc::msghdr = &op.msg;
            let fd = out.fd();
            let slot = self.ops.borrow_mut().insert(op);
            out.sending(slot);
            let send = opcode::SendMsg::new(types::Fd(fd), msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
                .user_data(slot as u64);
            if let Err(e) = self.push(send) {
                // The kernel never saw it: fail the connection rather than leave it waiting.
                tracing::warn!(shard = self.shard, error = %e, "cannot queue a send");
                // EIO, whatever the kernel said: an EAGAIN would have the queue retry at once,
                // and the flusher spin on a kernel that takes nothing.
                self.finish_send(slot, -libc::EIO, now);
                continue;
            }
            sends += 1;
        }
        // Give the vector back so the next turn does not allocate one.
        {
            let mut back = self.dirty.borrow_mut();
            if back.is_empty() {
                let mut dirty = dirty;
                dirty.clear();
                *back = dirty;
            }
        }
        if sends > 0 || self.unsubmitted.replace(false) {
            if self.ring.borrow().submit().is_ok() {
                ShardMetrics::inc(&self.metrics().write_submissions);
            }
            ShardMetrics::add(&self.metrics().write_syscalls, sends);
        }
        self.reap();
    }

    /// Handles every completion the kernel has posted.
    fn reap(&self) {
        let now = Instant::now();
        let now_ms = self.ms_since_epoch(now);
        loop {
            let cqe = {
                let mut ring = self.ring.borrow_mut();
                let mut cq = ring.completion();
                cq.sync();
                cq.next()
            };
            let Some(cqe) = cqe else {
                // A full completion queue leaves the rest in the kernel's overflow list until an
                // enter asks for them (`submit` does, seeing the overflow flag).
                let mut ring = self.ring.borrow_mut();
                if !ring.submission().cq_overflow() {
                    break;
                }
                match ring.submit() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // Flushed by the next submission or sweep.
                    Err(_) => break,
                }
                ShardMetrics::inc(&self.metrics().completion_overflows);
                let mut cq = ring.completion();
                cq.sync();
                if cq.is_empty() {
                    break;
                }
                continue;
            };
            if cqe.user_data() == CANCEL {
                continue;
            }
            if cqe.user_data() & RECV != 0 {
                self.on_recv(cqe.user_data(), cqe.result(), cqe.flags(), now_ms);
                continue;
            }
            self.finish_send(cqe.user_data() as usize, cqe.result(), now);
        }
    }

    /// Ends the send in `slot` with `result` (bytes written or `-errno`): its queue learns it,
    /// its box goes back to the spares.
    fn finish_send(&self, slot: usize, result: i32, now: Instant) {
        let op = self.ops.borrow_mut().remove(slot);
        let Some(mut op) = op else { return };
        if let Some(out) = op.out.take() {
            out.complete_send(result, now, self.metrics());
        }
        self.ops.borrow_mut().recycle(op);
    }

    /// The flusher task: one submission for everything scheduled since it last ran.
    pub async fn run_flusher(self: Rc<Self>) {
        loop {
            std::future::poll_fn(|cx| {
                if !self.dirty.borrow().is_empty() || self.unsubmitted.get() {
                    Poll::Ready(())
                } else {
                    *self.flusher.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            self.flush();
        }
    }

    /// The completion task: waits (in glommio's ring) on the eventfd the kernel signals for
    /// completions that came after their submission, and reaps them.
    pub async fn run_completions(self: Rc<Self>) {
        // SAFETY: `dup` of a descriptor this ring owns; the copy is owned by the file below.
        let fd = unsafe { libc::dup(self.eventfd.as_raw_fd()) };
        if fd < 0 {
            tracing::error!(
                shard = self.shard,
                "cannot watch the socket ring: dup failed"
            );
            return;
        }
        // SAFETY: `fd` is a fresh descriptor owned by nothing else.
        let file = unsafe { glommio::io::BufferedFile::from_raw_fd(fd) };
        loop {
            if let Err(e) = file.read_at(0, 8).await {
                tracing::error!(shard = self.shard, error = %e, "socket ring eventfd read failed");
                return;
            }
            ShardMetrics::inc(&self.metrics().ring_wakeups);
            self.reap();
            // Completions free sends: connections with more to write are scheduled again.
            if !self.dirty.borrow().is_empty() || self.unsubmitted.get() {
                self.flush();
            }
        }
    }

    /// The sweeper task: cancels sends the kernel has held past `write_timeout` (a peer that
    /// reads nothing); their connections then fail.
    pub async fn run_sweeper(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(self.tick).await;
            let now = Instant::now();
            self.expire_receivers(now);
            // Receives whose arming failed (or that wait for buffers) are tried again.
            self.rearm_starved();
            let stale: Vec<usize> = {
                let ops = self.ops.borrow();
                if ops.in_flight == 0 {
                    continue;
                }
                ops.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(slot, op)| {
                        op.as_ref()
                            .filter(|op| now.duration_since(op.started) >= self.write_timeout)
                            .map(|_| slot)
                    })
                    .collect()
            };
            if !stale.is_empty() {
                for slot in stale {
                    self.cancel(slot);
                }
                let _ = self.ring.borrow().submit();
                self.reap();
            }
        }
    }

    /// Wakes receivers whose deadline or idle time has passed.
    fn expire_receivers(&self, now: Instant) {
        let now = self.ms_since_epoch(now);
        let mut receivers = self.receivers.borrow_mut();
        for r in receivers.slots.iter_mut().flatten() {
            if r.waker.is_none() || r.held_count() > 0 || r.spill.is_some() || r.end.is_some() {
                continue;
            }
            let silent = now.saturating_sub(r.last_input_ms);
            let idle = r.idle_ms > 0 && silent >= u64::from(r.idle_ms);
            let late = now >= r.deadline_ms;
            let park = r.park_after_ms > 0
                && silent >= u64::from(r.park_after_ms)
                && !r.parked
                && !r.idle_due;
            if idle || late {
                r.timed_out = true;
            } else if park {
                r.idle_due = true;
            } else {
                continue;
            }
            if let Some(w) = r.waker.take() {
                w.wake();
            }
        }
    }
}

/// The `user_data` of receive `slot` in its `generation`.
fn recv_user_data(generation: u32, slot: usize) -> u64 {
    RECV | (u64::from(generation) << 32) | slot as u64
}

/// A request to cancel the operation whose `user_data` this is.
fn cancel_entry(user_data: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(user_data)
        .build()
        .user_data(CANCEL)
}

/// Refuses kernels older than 6.0 (no multishot receive), with a message that says so.
fn check_kernel() -> io::Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (6, 0) && major != 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "Linux {} lacks io_uring multishot receive: shardcast needs 6.0 or newer",
                release.trim()
            ),
        ));
    }
    Ok(())
}

impl Drop for SocketRing {
    fn drop(&mut self) {
        // The kernel may still read the memory of sends in flight while it tears the ring down:
        // leak them rather than free memory it could touch.
        for op in self.ops.get_mut().slots.drain(..).flatten() {
            std::mem::forget(op);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver() -> Receiver {
        Receiver::new(0, -1, 0)
    }

    #[test]
    fn held_buffers_come_back_in_arrival_order() {
        let mut r = receiver();
        for bid in 0..MAX_HELD as u16 {
            r.hold(bid, 100 + bid);
        }
        assert_eq!(r.held_count(), MAX_HELD);
        let lengths: usize = (0..MAX_HELD).map(|b| 100 + b).sum();
        assert_eq!(r.unread(), lengths);
        r.spill = Some(Box::new(bytes::BytesMut::from(&b"spilled"[..])));
        assert_eq!(r.unread(), lengths + 7);
        r.spill = None;
        assert!(!r.wants_arming(), "full: paused until read");
        let back: Vec<_> = r.take_held().collect();
        assert_eq!(
            back,
            (0..MAX_HELD as u16)
                .map(|b| (b, 100 + b))
                .collect::<Vec<_>>()
        );
        assert_eq!(r.held_count(), 0);
        assert!(r.wants_arming(), "read: receive again");
        r.starved = true;
        assert!(!r.wants_arming(), "no buffers: wait for one");
        r.starved = false;
        r.end = Some(Received::Eof);
        assert!(!r.wants_arming(), "ended");
    }

    /// A queue with one frame to send, for driving the ring without a connection.
    struct OneFrame {
        fd: OwnedFd,
        frame: Bytes,
        prepared: std::cell::Cell<bool>,
        result: std::cell::Cell<Option<i32>>,
    }

    // SAFETY: the frame is a field, alive for as long as the queue (which the op holds).
    unsafe impl SendQueue for OneFrame {
        fn prepare_send(&self, op: &mut SendOp) -> bool {
            if self.prepared.replace(true) {
                return false;
            }
            op.push(&self.frame, 0);
            true
        }
        fn sending(&self, _slot: usize) {}
        fn complete_send(&self, result: i32, _now: Instant, _metrics: &ShardMetrics) {
            self.result.set(Some(result));
        }
        fn fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }
    }

    fn socket_pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into `fds`, which has room for them.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "socketpair: {}", io::Error::last_os_error());
        // SAFETY: both descriptors were just created and are owned by nothing else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn a_broadcast_wider_than_the_completion_queue_completes_every_send() {
        let metrics = Arc::new(Metrics::new(1));
        let ring = SocketRing::with_queues(
            metrics.clone(),
            0,
            Duration::from_secs(30),
            Duration::from_millis(10),
            8,
            16,
        )
        .expect("io_uring is available");
        let mut peers = Vec::new();
        let queues: Vec<Rc<OneFrame>> = (0..300)
            .map(|i| {
                let (ours, theirs) = socket_pair();
                peers.push(theirs);
                Rc::new(OneFrame {
                    fd: ours,
                    frame: Bytes::from(format!("frame {i:03}")),
                    prepared: std::cell::Cell::new(false),
                    result: std::cell::Cell::new(None),
                })
            })
            .collect();
        for q in &queues {
            ring.schedule(q.clone());
        }
        // Every send fits its socket at once, so all 300 complete inside the submissions of one
        // flush: 16 completion entries cannot hold them.
        ring.flush();
        for (i, (q, peer)) in queues.iter().zip(&peers).enumerate() {
            assert_eq!(q.result.get(), Some(9), "send {i} completed");
            let mut got = [0u8; 16];
            // SAFETY: `got` is a writable buffer of the length passed.
            let n = unsafe { libc::read(peer.as_raw_fd(), got.as_mut_ptr().cast(), got.len()) };
            assert_eq!(&got[..n as usize], format!("frame {i:03}").as_bytes());
        }
        let overflows = metrics
            .shard(0)
            .completion_overflows
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(overflows > 0, "the completion queue overflowed");
        assert_eq!(ring.ops.borrow().in_flight, 0, "no send left in flight");
    }

    #[test]
    fn the_buffer_ring_offers_every_buffer_once_and_takes_them_back() {
        let mut ring = BufRing::new().expect("allocates");
        assert_eq!(ring.free, usize::from(RECV_BUFFERS));
        assert_eq!(ring.tail, RECV_BUFFERS);
        fn entry(ring: &BufRing, i: usize) -> &types::BufRingEntry {
            assert!(i < usize::from(RECV_BUFFERS));
            // SAFETY: `i` is inside the entries' allocation, which lives as long as `ring`.
            unsafe { &*ring.entries.add(i) }
        }
        for i in [0, 1, usize::from(RECV_BUFFERS) - 1] {
            assert_eq!(entry(&ring, i).bid() as usize, i);
            assert_eq!(entry(&ring, i).len() as usize, RECV_BUFFER_SIZE);
            assert_eq!(
                entry(&ring, i).addr(),
                ring.data[i * RECV_BUFFER_SIZE..].as_ptr() as u64
            );
        }
        // The kernel took buffer 7 and filled 5 bytes of it; it goes back at the next slot.
        ring.free -= 1;
        ring.data[7 * RECV_BUFFER_SIZE..7 * RECV_BUFFER_SIZE + 5].copy_from_slice(b"hello");
        assert_eq!(ring.bytes(7, 5), b"hello");
        ring.provide(7);
        assert_eq!(ring.free, usize::from(RECV_BUFFERS));
        assert_eq!(entry(&ring, 0).bid(), 7, "wrapped to the first entry");
    }
}
