//! The WebSocket side of `core::wire`: how a producer's thread writes
//! deliveries (and the heartbeat its pings) to an idle connection's plain
//! TCP socket itself.
//!
//! Each delivery's body is the one the session would send
//! ([`envelope::body`], encoded once per delivery) and is framed here — a
//! server's frame is a two-to-ten-byte header (FIN, opcode, unmasked length)
//! followed by the payload — and the frames go out with one vectored send
//! (`sendmsg`) per batch, borrowing the bodies (no copy, no reference count). Only the
//! tail of a frame the socket took in part is kept, for the session to
//! finish ([`Session::resume_cut`](super::session::Session::resume_cut)).

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;

use super::{Mode, envelope};
use crate::core::{Delivery, Payload, Wire, WriteLatency, Wrote, wire};

/// Frames given to one `writev`: a connection's share of a run is rarely
/// more, and the frames and their slices stay on the stack.
const FRAMES_PER_WRITE: usize = 16;

/// Writes to one connection's socket from a producer's thread.
pub(super) struct SocketWire {
    /// Kept for `fd`: the socket stays open while this wire exists.
    _tcp: Arc<TcpStream>,
    /// `_tcp`'s descriptor, kept here so that a write reads nothing of the
    /// socket's own state (see [`SocketWire::send`]).
    fd: RawFd,
    mode: Mode,
    latency: WriteLatency,
}

impl SocketWire {
    pub(super) fn new(tcp: Arc<TcpStream>, mode: Mode, latency: WriteLatency) -> Self {
        let fd = tcp.as_raw_fd();
        Self { _tcp: tcp, fd, mode, latency }
    }

    /// One `sendmsg` of `slices`, without waiting: what `writev` does, minus
    /// the file layer a `writev` on a socket also passes through (in a
    /// profile of P4a, `vfs_writev` alone was ~3 % of the gateway's time).
    ///
    /// It goes straight to the descriptor, past tokio's readiness check
    /// (`try_io`): an idle connection's socket nearly always has room, and
    /// the check read the socket's registration, a cache miss per
    /// connection and push that a profile of the HTTP fan-out (P3) put at
    /// over half the write-through's samples. Nothing is lost when the
    /// socket is full: the send says `WouldBlock`, the connection's task
    /// writes the rest, and its own write finds the socket full and clears
    /// tokio's readiness before it waits, as after any other refused write.
    fn send(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: `fd` is `self._tcp`'s descriptor, open as long as `self._tcp`
        // lives, and `self` keeps it.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        socket2::SockRef::from(&fd).send_vectored(slices)
    }
}

impl Wire for SocketWire {
    fn write(&self, deliveries: &[Arc<Delivery>]) -> Wrote {
        if let Some(oldest) = deliveries.first() {
            self.latency.written(wire::now().saturating_duration_since(oldest.accepted));
        }
        if let [one] = deliveries {
            // The usual case (one push, one connection): no arrays to fill.
            let frame = Frame::of(envelope::body(self.mode, one));
            // Full (`WouldBlock`) or failed, nothing was written: the session
            // finds an error on its own next write or read.
            let written = self.send(&frame.slices()).unwrap_or(0);
            return if written == frame.len() { Wrote::All } else { cut(std::iter::once(&frame), written, 0) };
        }
        let mut done = 0;
        for batch in deliveries.chunks(FRAMES_PER_WRITE) {
            let frames: [Option<Frame<'_>>; FRAMES_PER_WRITE] =
                std::array::from_fn(|i| batch.get(i).map(|d| Frame::of(envelope::body(self.mode, d))));
            let frames = &frames[..batch.len()];
            let mut slices = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
            let mut total = 0;
            for (frame, pair) in frames.iter().flatten().zip(slices.chunks_mut(2)) {
                pair.copy_from_slice(&frame.slices());
                total += frame.len();
            }
            let written = match self.send(&slices[..2 * batch.len()]) {
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                // The session finds the error on its own next write or read.
                Err(_) => return Wrote::Part { frames: done, rest: None },
            };
            if written < total {
                return cut(frames.iter().flatten(), written, done);
            }
            done += batch.len();
        }
        Wrote::All
    }

    fn ping(&self) -> Wrote {
        match self.send(&[IoSlice::new(&PING)]) {
            Ok(2) => Wrote::All,
            Ok(1) => Wrote::Part { frames: 0, rest: Some(Bytes::from_static(&PING[1..])) },
            // Full or failed: the session sends it, or finds the error.
            _ => Wrote::Part { frames: 0, rest: None },
        }
    }
}

/// A ping with no payload, as the session's own would be framed.
const PING: [u8; 2] = [0x89, 0x00];

/// Where `written` bytes of `frames` end: the whole frames before, and the
/// tail of the frame cut, if one was.
fn cut<'f, 'd: 'f>(frames: impl Iterator<Item = &'f Frame<'d>>, mut written: usize, done: usize) -> Wrote {
    let mut whole = done;
    for frame in frames {
        if written < frame.len() {
            let rest = (written > 0).then(|| frame.tail(written));
            return Wrote::Part { frames: whole, rest };
        }
        written -= frame.len();
        whole += 1;
    }
    Wrote::Part { frames: whole, rest: None }
}

/// One server-to-client WebSocket frame: its header and its payload,
/// borrowed from the delivery (no reference count taken per write).
struct Frame<'d> {
    head: [u8; 10],
    head_len: usize,
    body: &'d Bytes,
}

impl<'d> Frame<'d> {
    fn of(payload: &'d Payload) -> Self {
        let (opcode, body) = match payload {
            Payload::Text(text) => (0x1, text.bytes()),
            Payload::Binary(bytes) => (0x2, bytes),
        };
        let mut head = [0u8; 10];
        head[0] = 0x80 | opcode; // FIN: never fragmented
        let len = body.len();
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if let Ok(len) = u16::try_from(len) {
            head[1] = 126;
            head[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Frame { head, head_len, body }
    }

    fn len(&self) -> usize {
        self.head_len + self.body.len()
    }

    fn slices(&self) -> [IoSlice<'_>; 2] {
        [IoSlice::new(&self.head[..self.head_len]), IoSlice::new(self.body)]
    }

    /// The frame's bytes after its first `from`.
    fn tail(&self, from: usize) -> Bytes {
        if from >= self.head_len {
            return self.body.slice(from - self.head_len..);
        }
        let mut tail = BytesMut::with_capacity(self.len() - from);
        tail.put_slice(&self.head[from..self.head_len]);
        tail.put_slice(self.body);
        tail.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(len: usize) -> Payload {
        Payload::Binary(Bytes::from(vec![7u8; len]))
    }

    #[test]
    fn frames_carry_the_length_in_the_smallest_form() {
        let (short, medium, long) = (binary(125), binary(126), binary(70_000));
        assert_eq!(&Frame::of(&short).head[..2], &[0x82, 125]);
        assert_eq!(&Frame::of(&medium).head[..4], &[0x82, 126, 0, 126]);
        assert_eq!(&Frame::of(&long).head[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        let hi = Payload::text("hi");
        let text = Frame::of(&hi);
        assert_eq!((&text.head[..2], &text.body[..]), (&[0x81, 2][..], &b"hi"[..]));
    }

    #[test]
    fn a_cut_names_the_whole_frames_and_the_tail_of_the_next() {
        let payloads = [binary(10), binary(300)];
        let frames = [Frame::of(&payloads[0]), Frame::of(&payloads[1])];
        // 12 + 304 bytes; 15 written: the first whole, 3 header bytes of the second.
        let Wrote::Part { frames: whole, rest: Some(rest) } = cut(frames.iter(), 15, 4) else { panic!("no cut") };
        assert_eq!(whole, 5);
        assert_eq!(rest.len(), 304 - 3);
        assert_eq!(&rest[..1], &[44]); // the length's low byte (300 = 0x012c)
        // In the body: shares the payload.
        let Wrote::Part { frames: 0, rest: Some(rest) } = cut(frames.iter(), 11, 0) else { panic!("no cut") };
        assert_eq!(rest.len(), 1);
        // Between two frames: nothing to finish.
        assert_eq!(cut(frames.iter(), 12, 0), Wrote::Part { frames: 1, rest: None });
    }
}
