//! A glommio TCP stream shared by a connection's reader and the shard's socket ring.
//!
//! glommio sockets are readiness-based (a non-blocking syscall first, an io_uring poll when it
//! would block), so the read side and the write side register separate wakers. Each task borrows
//! the stream only inside a synchronous `poll`, never across an `.await`, so the two tasks never
//! conflict.

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A connection's TCP stream, borrowed by its reader and writer only inside a `poll`.
pub struct SharedStream {
    inner: RefCell<TcpStream>,
}

impl SharedStream {
    /// Wraps an accepted stream.
    pub fn new(stream: TcpStream) -> SharedStream {
        SharedStream {
            inner: RefCell::new(stream),
        }
    }

    /// Polls a read into `buf`, as [`AsyncRead::poll_read`].
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_read(cx, buf)
    }

    /// Polls a write of `buf`, as [`AsyncWrite::poll_write`].
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner.borrow_mut()).poll_write(cx, buf)
    }

    /// Writes all of `buf`, waiting for the socket as needed.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = std::future::poll_fn(|cx| self.poll_write(cx, buf)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// One non-blocking vectored send of as much of `bufs` as the socket takes now.
    /// `WouldBlock` means the socket buffer is full.
    pub fn try_send_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let stream = self.inner.borrow();
        socket2::SockRef::from(&*stream)
            .send_vectored_with_flags(bufs, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }

    /// Makes a read that waits longer than `dur` fail with `TimedOut`; errors are ignored.
    pub fn set_read_timeout(&self, dur: Duration) {
        let _ = self.inner.borrow().set_read_timeout(Some(dur));
    }

    /// Makes a write that waits longer than `dur` fail with `TimedOut`; errors are ignored.
    pub fn set_write_timeout(&self, dur: Duration) {
        let _ = self.inner.borrow().set_write_timeout(Some(dur));
    }

    /// The socket's descriptor (the shard's ring writes to it).
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.inner.borrow().as_raw_fd()
    }

    /// Shuts the write side down (the peer reads end of stream); errors are ignored.
    pub fn shutdown_write(&self) {
        let stream = self.inner.borrow();
        let _ = socket2::SockRef::from(&*stream).shutdown(Shutdown::Write);
    }
}
