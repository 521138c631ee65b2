//! The WebSocket side of `core::wire`: how a producer's thread writes
//! deliveries to an idle connection's plain TCP socket itself.
//!
//! Each delivery is encoded as the session would ([`envelope::delivery`]) and
//! framed here — a server's frame is a two-to-ten-byte header (FIN, opcode,
//! unmasked length) followed by the payload — and the frames go out with one
//! vectored write per batch, sharing the payloads' bytes (no copy). Only the
//! tail of a frame the socket took in part is copied, once, for the session
//! to finish ([`Session::resume_cut`](super::session::Session::resume_cut)).

use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::{Mode, envelope};
use crate::core::{Delivery, Wire, WriteLatency, Wrote};

/// Frames given to one `writev`: a connection's share of a run is rarely
/// more, and the frames and their slices stay on the stack.
const FRAMES_PER_WRITE: usize = 16;

/// Writes to one connection's socket from a producer's thread.
pub(super) struct SocketWire {
    tcp: Arc<TcpStream>,
    mode: Mode,
    latency: WriteLatency,
}

impl SocketWire {
    pub(super) fn new(tcp: Arc<TcpStream>, mode: Mode, latency: WriteLatency) -> Self {
        Self { tcp, mode, latency }
    }
}

impl Wire for SocketWire {
    fn write(&self, deliveries: &[Arc<Delivery>]) -> Wrote {
        if let Some(oldest) = deliveries.first() {
            self.latency.written(oldest.accepted.elapsed());
        }
        let mut done = 0;
        for batch in deliveries.chunks(FRAMES_PER_WRITE) {
            let frames: [Option<Frame>; FRAMES_PER_WRITE] =
                std::array::from_fn(|i| batch.get(i).map(|d| Frame::of(envelope::delivery(self.mode, d))));
            let frames = &frames[..batch.len()];
            let mut slices = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
            let mut total = 0;
            for (frame, pair) in frames.iter().flatten().zip(slices.chunks_mut(2)) {
                pair.copy_from_slice(&frame.slices());
                total += frame.len();
            }
            let written = match self.tcp.try_write_vectored(&slices[..2 * batch.len()]) {
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
}

/// Where `written` bytes of `frames` end: the whole frames before, and the
/// tail of the frame cut, if one was.
fn cut<'f>(frames: impl Iterator<Item = &'f Frame>, mut written: usize, done: usize) -> Wrote {
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

/// One server-to-client WebSocket frame: its header and its payload.
struct Frame {
    head: [u8; 10],
    head_len: usize,
    body: Bytes,
}

impl Frame {
    fn of(message: Message) -> Self {
        let (opcode, body) = match message {
            Message::Binary(bytes) => (0x2, bytes),
            Message::Text(text) => (0x1, Bytes::from(text)),
            other => unreachable!("a delivery is a text or binary frame, not {other:?}"),
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
        [IoSlice::new(&self.head[..self.head_len]), IoSlice::new(&self.body)]
    }

    /// The frame's bytes after its first `from`.
    fn tail(&self, from: usize) -> Bytes {
        if from >= self.head_len {
            return self.body.slice(from - self.head_len..);
        }
        let mut tail = BytesMut::with_capacity(self.len() - from);
        tail.put_slice(&self.head[from..self.head_len]);
        tail.put_slice(&self.body);
        tail.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Frame {
        Frame::of(Message::Binary(Bytes::from(vec![7u8; len])))
    }

    #[test]
    fn frames_carry_the_length_in_the_smallest_form() {
        assert_eq!(&frame(125).head[..2], &[0x82, 125]);
        assert_eq!(&frame(126).head[..4], &[0x82, 126, 0, 126]);
        assert_eq!(&frame(70_000).head[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        let text = Frame::of(Message::Text("hi".into()));
        assert_eq!((&text.head[..2], &text.body[..]), (&[0x81, 2][..], &b"hi"[..]));
    }

    #[test]
    fn a_cut_names_the_whole_frames_and_the_tail_of_the_next() {
        let frames = [frame(10), frame(300)];
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
