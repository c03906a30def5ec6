//! Length-prefixed framing.
//!
//! A frame on a byte stream is a 4-byte little-endian length `N` followed by `N` bytes. The
//! [`FrameDecoder`] accepts bytes in chunks of any size (one byte at a time, or many frames in one
//! chunk) and yields whole frames as [`Bytes`]. The payload is copied once, from the caller's chunk
//! into the decoder's buffer — or not at all when the caller reads straight into
//! [`FrameDecoder::read_buffer`]. The length is checked against the configured maximum, and the
//! buffer grows with the bytes that arrive, never with a length prefix alone: a peer that
//! announces 16 MiB and sends 10 bytes makes the decoder hold about one read's worth, not
//! 16 MiB (the growth is geometric, so a large frame is still copied only O(log n) times).
//!
//! A frame longer than the maximum is skipped: its bytes are dropped as they arrive, and as
//! soon as its first [`SKIPPED_HEAD_LEN`] bytes are in, [`FrameDecoder::poll_frame`] reports
//! it as [`FrameError::Skipped`] — an error of that frame alone, after which the stream goes on
//! in sync — so the session can fail the one call it belonged to at once.

use bytes::{Buf, Bytes, BytesMut};

use crate::budget::ReadBudget;
use crate::skipped::{SKIPPED_HEAD_LEN, SkippedFrame};

/// Size of the length prefix in front of every frame on a byte stream.
pub const FRAME_PREFIX_LEN: usize = 4;

/// Default maximum frame size: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// A read is worth making only with at least this much room in the buffer.
const MIN_READ_SPACE: usize = 4 * 1024;
/// The room a read buffer is given when it runs low, at least (it also grows by as much as it
/// holds, up to the rest of the frame in progress).
pub const READ_CHUNK: usize = 64 * 1024;

/// A framing error. After one, the stream is out of sync and must be closed — except
/// [`FrameError::Skipped`], an error of one frame only.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame's declared length exceeds the configured maximum (a frame to send).
    #[error("frame length {len} exceeds max {max}")]
    TooLarge {
        /// The declared (or attempted) length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A received frame longer than the maximum was skipped whole (never buffered); the
    /// stream is in sync and the next frame follows.
    #[error(transparent)]
    Skipped(SkippedFrame),
}

impl FrameError {
    /// Whether the stream is out of sync for good (every error but [`Skipped`](Self::Skipped)).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Skipped(_))
    }
}

/// What the first bytes of a byte stream are when they are a TLS record instead of an xrpc
/// frame: the peer speaks TLS to a plaintext transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRecord {
    /// A TLS client's first handshake message (ClientHello): a TLS client at a plaintext server.
    ClientHello,
    /// A TLS alert: a TLS server refusing what a plaintext client sent it.
    Alert,
}

/// Bytes of a stream's start that [`tls_record_at_start`] needs.
pub const TLS_SNIFF_LEN: usize = 6;

/// Whether a byte stream that starts with `start` (at least [`TLS_SNIFF_LEN`] bytes, else
/// `None`) starts with a TLS record rather than an xrpc frame.
///
/// An xrpc stream's first frame holds a message, whose bytes 4–5 (after the length prefix)
/// are the magic `"XR"`. A TLS record is a content type (22 handshake, 21 alert), the version
/// major 3, a minor up to 4 and a 2-byte big-endian length; a ClientHello's handshake type at
/// byte 5 is 1, an alert's length is 2 — never `"XR"` there, so no xrpc stream is taken for
/// TLS.
pub fn tls_record_at_start(start: &[u8]) -> Option<TlsRecord> {
    let [ty, major, minor, len_hi, len_lo, next, ..] = *start else {
        return None;
    };
    if major != 3 || minor > 4 || [len_lo, next] == *b"XR" {
        return None;
    }
    match (ty, len_hi, len_lo, next) {
        (22, _, _, 1) => Some(TlsRecord::ClientHello),
        (21, 0, 2, 1 | 2) => Some(TlsRecord::Alert),
        _ => None,
    }
}

/// A frame longer than the maximum, being skipped.
#[derive(Debug)]
struct Skip {
    len: usize,
    /// Bytes of it still to come.
    left: usize,
    /// Its first bytes (at most [`SKIPPED_HEAD_LEN`]).
    head: BytesMut,
    /// The head has been reported.
    reported: bool,
}

/// Incremental decoder of length-prefixed frames.
///
/// ```
/// use xrpc_proto::FrameDecoder;
/// let mut dec = FrameDecoder::new(1024);
/// dec.handle_bytes(&[3, 0, 0, 0, b'a']);
/// assert!(dec.poll_frame().unwrap().is_none());
/// dec.handle_bytes(b"bc");
/// assert_eq!(&dec.poll_frame().unwrap().unwrap()[..], b"abc");
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_size: usize,
    /// Length of the frame whose prefix has been consumed, if any.
    pending: Option<usize>,
    /// The frame longer than the maximum being skipped, if any.
    skip: Option<Skip>,
    /// The server-wide budget that buffer room past [`ReadBudget::UNCHARGED`] is taken from.
    budget: Option<ReadBudget>,
    /// Bytes charged to `budget`: past the uncharged room, the buffer's capacity or the room
    /// reserved for the frame in progress, whichever is more.
    charged: usize,
    /// Bytes of buffer reserved for the frame in progress (0 when none was admitted).
    reserved: usize,
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_frame_size` bytes.
    pub fn new(max_frame_size: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame_size,
            pending: None,
            skip: None,
            budget: None,
            charged: 0,
            reserved: 0,
        }
    }

    /// Takes buffer room past [`ReadBudget::UNCHARGED`] bytes from `budget` from now on
    /// (what the buffer holds already is charged at once). See
    /// [`try_read_buffer`](Self::try_read_buffer).
    pub fn set_budget(&mut self, budget: ReadBudget) {
        if let Some(old) = self.budget.replace(budget) {
            old.release(std::mem::take(&mut self.charged));
        }
        self.sync_charge();
    }

    /// The configured maximum frame size.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Appends bytes received from the peer (one copy). With a budget, the frame in progress
    /// is admitted whole if the budget has room for it; the buffer is charged either way.
    pub fn handle_bytes(&mut self, data: &[u8]) {
        if let Some(room) = self.room_wanted() {
            let _ = self.try_admit(room);
        }
        self.reserve(data.len());
        self.buf.extend_from_slice(data);
        self.sync_charge();
    }

    /// The internal buffer as it is (its capacity is what the decoder holds).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The internal buffer with room for a worthwhile read, for reading from a socket straight
    /// into it (no extra copy). Append only; call [`poll_frame`](Self::poll_frame) afterwards.
    ///
    /// The room given grows with what has arrived: [`READ_CHUNK`] bytes, or as much as the
    /// buffer holds if that is more, but never more than the rest of the frame in progress
    /// needs (plus a chunk when no frame is in progress). So the buffer stays below about
    /// twice the bytes the peer actually sent plus one chunk, whatever length it announced.
    /// With a budget the room is charged whatever it has (see
    /// [`try_read_buffer`](Self::try_read_buffer)).
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        if let Some(room) = self.room_wanted() {
            let _ = self.try_admit(room);
            self.grow();
        }
        &mut self.buf
    }

    /// [`read_buffer`](Self::read_buffer) for a decoder with a [`ReadBudget`]: `None` when
    /// the room needed cannot be taken from the budget now. The transport should then stop
    /// reading this connection until the budget's [`take_freed`](ReadBudget::take_freed) says
    /// room came back (and try again); the bytes already received stay buffered, under the
    /// partial-frame deadline.
    ///
    /// A frame is admitted whole: once its length is known and it needs more than the
    /// uncharged room, room for all of it is taken at once. So a frame that is read past the
    /// uncharged room can always be finished — two connections never wait for each other
    /// holding half a frame each. A frame larger than the whole budget is admitted when no
    /// other connection holds any of it.
    pub fn try_read_buffer(&mut self) -> Option<&mut BytesMut> {
        if let Some(room) = self.room_wanted() {
            if !self.try_admit(room) {
                return None;
            }
            self.grow();
        }
        Some(&mut self.buf)
    }

    /// Whether the next read needs room that the budget does not have now (see
    /// [`try_read_buffer`](Self::try_read_buffer)): a session that reads through its own
    /// buffer stops reading meanwhile.
    pub fn waits_for_budget(&self) -> bool {
        let (Some(budget), Some(room)) = (&self.budget, self.room_wanted()) else {
            return false;
        };
        let cost = self.cost(room);
        let held = budget.held();
        cost > 0 && held + cost > budget.limit() && held > self.charged
    }

    /// Bytes of buffer the next read needs charged, if it needs more room: the whole frame in
    /// progress once its length is known, else what the read itself needs.
    fn room_wanted(&self) -> Option<usize> {
        let needed = self.buf.len() + self.growth()?;
        Some(self.pending.map_or(needed, |len| needed.max(len)))
    }

    /// What charging the room for a buffer of `room` bytes costs on top of what is charged.
    fn cost(&self, room: usize) -> usize {
        room.saturating_sub(ReadBudget::UNCHARGED)
            .saturating_sub(self.charged)
    }

    /// Charges the room for a buffer of `room` bytes (and keeps it until the frame in
    /// progress is whole), if the budget has it.
    fn try_admit(&mut self, room: usize) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        let cost = self.cost(room);
        if cost > 0 && !budget.try_charge(cost, self.charged) {
            return false;
        }
        self.charged += cost;
        self.reserved = self.reserved.max(room);
        true
    }

    /// Charges or releases the budget to match the buffer's capacity, or the room reserved
    /// for the frame in progress if that is more.
    fn sync_charge(&mut self) {
        let Some(budget) = &self.budget else { return };
        let want = self
            .buf
            .capacity()
            .max(self.reserved)
            .saturating_sub(ReadBudget::UNCHARGED);
        if want > self.charged {
            budget.charge(want - self.charged);
        } else {
            budget.release(self.charged - want);
        }
        self.charged = want;
    }

    /// Grows the buffer for the next read (see [`growth`](Self::growth)).
    fn grow(&mut self) {
        if let Some(grow) = self.growth() {
            self.reserve(grow);
            self.sync_charge();
        }
    }

    /// Bytes to grow the buffer by before a read, if it has too little room left. The room
    /// given grows with what has arrived: [`READ_CHUNK`] bytes, or as much as the buffer
    /// holds if that is more, but never more than the rest of the frame in progress needs
    /// (plus a chunk when no frame is in progress).
    fn growth(&self) -> Option<usize> {
        let spare = self.buf.capacity() - self.buf.len();
        let rest = match self.pending {
            Some(len) => len.saturating_sub(self.buf.len()),
            None => READ_CHUNK,
        };
        // Room for the rest of the frame in progress is enough, however little: growing then
        // would ask the budget for room the frame never needs, and two connections near the
        // ends of their frames could wait on each other for it.
        if spare >= MIN_READ_SPACE || (self.pending.is_some() && spare >= rest) {
            return None;
        }
        Some(READ_CHUNK.max(self.buf.len()).min(rest.max(MIN_READ_SPACE)))
    }

    /// Makes room for `additional` more bytes. `BytesMut::reserve` doubles the old allocation,
    /// which after a large frame can allocate twice the maximum frame size; here the geometric
    /// growth stops at the end of the frame in progress (or one maximal frame with its
    /// prefix), so the buffer never exceeds that plus the bytes the caller handed in at once.
    fn reserve(&mut self, additional: usize) {
        if self.buf.try_reclaim(additional) {
            return;
        }
        let needed = self.buf.len() + additional;
        let doubled = self.buf.capacity().saturating_mul(2);
        let ceiling = match self.pending {
            Some(len) => len,
            None => self.max_frame_size.saturating_add(FRAME_PREFIX_LEN),
        };
        let mut grown = BytesMut::with_capacity(needed.max(doubled.min(ceiling)));
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes received of frames not yet whole (a frame being skipped included), their length
    /// prefixes included (0 between frames).
    pub fn partial_bytes(&self) -> usize {
        let skipped = self
            .skip
            .as_ref()
            .map_or(0, |s| FRAME_PREFIX_LEN + s.len - s.left);
        self.buf.len()
            + skipped
            + if self.pending.is_some() {
                FRAME_PREFIX_LEN
            } else {
                0
            }
    }

    /// Returns the next complete frame, or `Ok(None)` if more bytes are needed.
    ///
    /// A frame longer than the maximum is skipped as its bytes arrive, and reported as
    /// [`FrameError::Skipped`] as soon as its head is in (the rest keeps being skipped by
    /// the next calls, and counts as a partial frame): the stream stays in sync.
    pub fn poll_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.skip.is_some() {
            if let Some(skipped) = self.skip_some() {
                return Err(FrameError::Skipped(skipped));
            }
            if self.skip.is_some() {
                return Ok(None);
            }
        }
        let len = match self.pending {
            Some(len) => len,
            None => {
                if self.buf.len() < FRAME_PREFIX_LEN {
                    return Ok(None);
                }
                let len = self.buf.get_u32_le() as usize;
                if len > self.max_frame_size {
                    self.skip = Some(Skip {
                        len,
                        left: len,
                        head: BytesMut::new(),
                        reported: false,
                    });
                    return self.poll_frame();
                }
                self.pending = Some(len);
                len
            }
        };
        if self.buf.len() < len {
            // Room comes with the bytes that arrive (`read_buffer`), not with the prefix.
            return Ok(None);
        }
        self.pending = None;
        let frame = self.buf.split_to(len).freeze();
        // The frame's room is the session's now.
        self.reserved = 0;
        if self.budget.is_some() && len > ReadBudget::UNCHARGED {
            // Let the frame's allocation go with the frame: reclaimed later for the next read,
            // it would hold room (and the budget) for no frame in progress. What was read past
            // the frame is copied out.
            self.buf = BytesMut::from(&self.buf[..]);
        }
        self.sync_charge();
        Ok(Some(frame))
    }
}

impl FrameDecoder {
    /// Drops what has arrived of the frame being skipped, keeping its head; returns the
    /// report once the head is whole (before the rest of the frame has come: whom it was
    /// for is known, and its call can fail at once). The frame is over when `skip` is `None`.
    fn skip_some(&mut self) -> Option<SkippedFrame> {
        let skip = self.skip.as_mut()?;
        let n = skip.left.min(self.buf.len());
        if !skip.reported {
            let keep = n.min(SKIPPED_HEAD_LEN - skip.head.len());
            skip.head.extend_from_slice(&self.buf[..keep]);
        }
        self.buf.advance(n);
        skip.left -= n;
        let report =
            (!skip.reported && skip.head.len() >= SKIPPED_HEAD_LEN.min(skip.len)).then(|| {
                skip.reported = true;
                SkippedFrame {
                    len: skip.len,
                    max: self.max_frame_size,
                    head: skip.head.split().freeze(),
                }
            });
        if skip.left == 0 {
            self.skip = None;
        }
        report
    }
}

impl Drop for FrameDecoder {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.charged);
        }
    }
}

/// Writes the 4-byte length prefix of a frame of `len` bytes, checking it against `max`.
pub fn encode_prefix(len: usize, max: usize) -> Result<[u8; FRAME_PREFIX_LEN], FrameError> {
    if len > max || len > u32::MAX as usize {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok((len as u32).to_le_bytes())
}

/// Appends one whole frame (prefix and payload) to `out`.
pub fn encode_frame(payload: &[u8], max: usize, out: &mut BytesMut) -> Result<(), FrameError> {
    let prefix = encode_prefix(payload.len(), max)?;
    out.reserve(FRAME_PREFIX_LEN + payload.len());
    out.extend_from_slice(&prefix);
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_told_from_xrpc_frames() {
        // rustls's ClientHello record and handshake header; a fatal alert (decode_error).
        let hello = [0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00];
        let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32];
        assert_eq!(tls_record_at_start(&hello), Some(TlsRecord::ClientHello));
        assert_eq!(tls_record_at_start(&alert), Some(TlsRecord::Alert));
        assert_eq!(tls_record_at_start(&hello[..5]), None);
        // An xrpc frame whose length prefix reads like a TLS record header: 790 bytes.
        let frame = [0x16, 0x03, 0x00, 0x00, b'X', b'R', 1];
        assert_eq!(tls_record_at_start(&frame), None);
        let mut wire = BytesMut::new();
        encode_frame(b"XR\x01rest", 64, &mut wire).unwrap();
        assert_eq!(tls_record_at_start(&wire), None);
    }

    #[test]
    fn byte_at_a_time_and_many_in_one_chunk() {
        let mut wire = BytesMut::new();
        for p in [&b""[..], b"x", b"hello world"] {
            encode_frame(p, 64, &mut wire).unwrap();
        }
        let mut dec = FrameDecoder::new(64);
        let mut got = Vec::new();
        for b in wire.iter() {
            dec.handle_bytes(&[*b]);
            while let Some(f) = dec.poll_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![&b""[..], b"x", b"hello world"]);

        let mut dec = FrameDecoder::new(64);
        dec.handle_bytes(&wire);
        let mut n = 0;
        while dec.poll_frame().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn an_oversized_frame_is_skipped_without_buffering_it() {
        // Regression (issue 24, item 6): a frame over the maximum ended the whole stream.
        let mut dec = FrameDecoder::new(1024);
        dec.handle_bytes(&u32::MAX.to_le_bytes());
        assert_eq!(dec.poll_frame(), Ok(None));
        // A 4 GiB announcement holds no more than one read's worth, however much arrives; it
        // is reported as soon as its head is in.
        for i in 0..64 {
            let buf = dec.read_buffer();
            let room = buf.capacity() - buf.len();
            buf.extend_from_slice(&vec![0xee; room.min(64 << 10)]);
            match dec.poll_frame() {
                Err(FrameError::Skipped(s)) if i == 0 => {
                    assert_eq!((s.len, s.max), (u32::MAX as usize, 1024));
                    assert_eq!(&s.head[..], &[0xee; SKIPPED_HEAD_LEN][..]);
                }
                other => assert_eq!(other, Ok(None), "read {i}"),
            }
            assert!(dec.buffer_mut().capacity() <= 2 * READ_CHUNK);
        }
        assert!(
            dec.partial_bytes() >= 64 * MIN_READ_SPACE,
            "skipping counts as partial"
        );
        assert!(encode_frame(&[0; 2000], 1024, &mut BytesMut::new()).is_err());

        // A frame over the maximum between two good ones: skipped and reported with its head,
        // the one after it decodes, and nothing else is lost.
        let mut wire = BytesMut::new();
        encode_frame(b"before", 2048, &mut wire).unwrap();
        let big: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        encode_frame(&big, 2048, &mut wire).unwrap();
        encode_frame(b"after", 2048, &mut wire).unwrap();
        for chunk in [1, 7, 100, wire.len()] {
            let mut dec = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                dec.handle_bytes(c);
                loop {
                    match dec.poll_frame() {
                        Ok(Some(f)) => got.push(Ok(f)),
                        Ok(None) => break,
                        Err(e) => got.push(Err(e)),
                    }
                }
                assert!(dec.buffer_mut().capacity() <= 1024 + READ_CHUNK + chunk);
            }
            let skipped = SkippedFrame {
                len: 2000,
                max: 1024,
                head: Bytes::copy_from_slice(&big[..SKIPPED_HEAD_LEN]),
            };
            assert_eq!(
                got,
                vec![
                    Ok(Bytes::from_static(b"before")),
                    Err(FrameError::Skipped(skipped)),
                    Ok(Bytes::from_static(b"after")),
                ],
                "chunks of {chunk}"
            );
            assert_eq!(dec.partial_bytes(), 0);
        }
    }

    #[test]
    fn a_length_prefix_alone_reserves_nothing() {
        // Regression (issue 14, defect 4): once its length prefix had arrived, the decoder
        // reserved the whole frame — 16 MiB for a peer that sent 14 bytes.
        let max = DEFAULT_MAX_FRAME_SIZE;
        let mut dec = FrameDecoder::new(max);
        let buf = dec.read_buffer();
        buf.extend_from_slice(&(max as u32).to_le_bytes());
        buf.extend_from_slice(&[7; 10]);
        assert!(dec.poll_frame().unwrap().is_none());
        let _ = dec.read_buffer();
        let cap = dec.buffer_mut().capacity();
        assert!(cap <= 2 * READ_CHUNK, "capacity {cap} after 14 bytes");
        // It still takes the whole frame as it arrives, growing geometrically.
        let chunk = vec![1u8; 100_000];
        let mut sent = 10;
        let mut grows = 0;
        let mut last_cap = cap;
        while sent < max {
            let n = chunk.len().min(max - sent);
            let buf = dec.read_buffer();
            let room = buf.capacity() - buf.len();
            buf.extend_from_slice(&chunk[..n.min(room)]);
            sent += n.min(room);
            let cap = dec.buffer_mut().capacity();
            assert!(
                cap <= 2 * (sent + FRAME_PREFIX_LEN) + READ_CHUNK,
                "cap {cap} at {sent}"
            );
            if cap != last_cap {
                grows += 1;
                last_cap = cap;
            }
            if sent < max {
                assert!(dec.poll_frame().unwrap().is_none());
            }
        }
        assert_eq!(dec.poll_frame().unwrap().unwrap().len(), max);
        assert!(grows <= 16, "{grows} reallocations for one 16 MiB frame");
    }

    #[test]
    fn buffer_stays_within_one_max_frame_plus_a_chunk() {
        // Regression: a frame slightly larger than the one before it made `BytesMut::reserve`
        // double the old allocation, to about twice the maximum frame size.
        const MAX: usize = 64 * 1024;
        const CHUNK: usize = 16;
        let mut wire = BytesMut::new();
        for len in [34_000, 34_100, MAX, MAX / 2 + 1, MAX] {
            encode_frame(&vec![0xaa; len], MAX, &mut wire).unwrap();
        }
        let mut dec = FrameDecoder::new(MAX);
        let mut frames = 0;
        for chunk in wire.chunks(CHUNK) {
            dec.handle_bytes(chunk);
            while dec.poll_frame().unwrap().is_some() {
                frames += 1;
            }
            let cap = dec.buffer_mut().capacity();
            assert!(cap <= MAX + FRAME_PREFIX_LEN + CHUNK, "capacity {cap}");
        }
        assert_eq!(frames, 5);
    }

    /// Reads into `dec` what the peer sent of `wire` (from `*sent`) while it has room;
    /// returns the frames that came out, or `None` if the budget stopped it first.
    fn read_while_room(dec: &mut FrameDecoder, wire: &[u8], sent: &mut usize) -> Option<usize> {
        let mut frames = 0;
        while *sent < wire.len() {
            let buf = dec.try_read_buffer()?;
            let room = (buf.capacity() - buf.len()).min(wire.len() - *sent);
            buf.extend_from_slice(&wire[*sent..*sent + room]);
            *sent += room;
            while dec.poll_frame().unwrap().is_some() {
                frames += 1;
            }
        }
        Some(frames)
    }

    #[test]
    fn budgeted_decoders_share_one_bound_and_give_room_back() {
        const MAX: usize = 4 << 20;
        let budget = ReadBudget::new(2 << 20);
        let mut wire = BytesMut::new();
        encode_frame(&vec![1u8; 1500 << 10], MAX, &mut wire).unwrap();
        let (mut a, mut b) = (FrameDecoder::new(MAX), FrameDecoder::new(MAX));
        a.set_budget(budget.clone());
        b.set_budget(budget.clone());
        // `a` stops one byte short of its frame: it holds most of the budget.
        let mut sent_a = 0;
        assert_eq!(
            read_while_room(&mut a, &wire[..wire.len() - 1], &mut sent_a),
            Some(0)
        );
        assert!(budget.held() <= budget.limit());
        // `b` gets the room every decoder has uncharged, then has to wait.
        let mut sent_b = 0;
        assert_eq!(read_while_room(&mut b, &wire, &mut sent_b), None);
        assert!(sent_b >= ReadBudget::UNCHARGED / 2, "b read {sent_b} bytes");
        assert!(budget.held() <= budget.limit());
        // `a`'s frame ends: its room goes back, and the waiter is told.
        sent_a = wire.len() - 1;
        assert_eq!(read_while_room(&mut a, &wire, &mut sent_a), Some(1));
        assert!(budget.take_freed());
        assert_eq!(read_while_room(&mut b, &wire, &mut sent_b), Some(1));
        // Between frames (theirs dropped) neither holds any of the budget, even after reading
        // on: a frame's allocation is not reclaimed for the next reads.
        assert!(a.try_read_buffer().is_some() && b.try_read_buffer().is_some());
        assert_eq!(budget.held(), 0);
        drop((a, b));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_dropped_decoder_gives_its_room_back() {
        let budget = ReadBudget::new(1 << 30);
        let mut dec = FrameDecoder::new(16 << 20);
        dec.set_budget(budget.clone());
        dec.handle_bytes(&(8u32 << 20).to_le_bytes());
        dec.handle_bytes(&vec![0u8; 4 << 20]);
        assert!(dec.poll_frame().unwrap().is_none());
        assert!(budget.held() >= (4 << 20) - ReadBudget::UNCHARGED);
        drop(dec);
        assert_eq!(budget.held(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Connections sharing one read budget, each reading its own stream in chunks of any
        /// size, in turns: every frame comes out intact and in order (no two connections ever
        /// wait on each other for good), the budget stays within its limit but for one read
        /// chunk per connection, and is whole again at the end.
        #[test]
        fn budgeted_decoders_always_finish_their_frames(
            streams in proptest::collection::vec(
                proptest::collection::vec(0usize..(300 << 10), 1..5), 2..5),
            limit_frames in 1usize..4,
            chunks in proptest::collection::vec(1usize..(96 << 10), 1..16),
        ) {
            const MAX: usize = 300 << 10;
            let budget = ReadBudget::new(limit_frames * MAX);
            let wires: Vec<Vec<u8>> = streams
                .iter()
                .enumerate()
                .map(|(c, sizes)| {
                    let mut w = BytesMut::new();
                    for (i, &n) in sizes.iter().enumerate() {
                        encode_frame(&vec![(c * 16 + i) as u8; n], MAX, &mut w).unwrap();
                    }
                    w.to_vec()
                })
                .collect();
            let mut decs: Vec<FrameDecoder> = wires
                .iter()
                .map(|_| {
                    let mut d = FrameDecoder::new(MAX);
                    d.set_budget(budget.clone());
                    d
                })
                .collect();
            let mut sent = vec![0usize; wires.len()];
            let mut got: Vec<Vec<Bytes>> = vec![Vec::new(); wires.len()];
            let mut turn = 0usize;
            while (0..wires.len()).any(|c| got[c].len() < streams[c].len()) {
                turn += 1;
                proptest::prop_assert!(turn < 1_000_000, "no progress: {sent:?}");
                let c = turn % wires.len();
                let chunk = chunks[turn % chunks.len()];
                if sent[c] < wires[c].len()
                    && let Some(buf) = decs[c].try_read_buffer()
                {
                    let n = (buf.capacity() - buf.len()).min(chunk).min(wires[c].len() - sent[c]);
                    buf.extend_from_slice(&wires[c][sent[c]..sent[c] + n]);
                    sent[c] += n;
                }
                while let Some(f) = decs[c].poll_frame().unwrap() {
                    got[c].push(f);
                }
                proptest::prop_assert!(
                    budget.held() <= budget.limit() + wires.len() * READ_CHUNK,
                    "held {} of {}", budget.held(), budget.limit()
                );
            }
            for (c, sizes) in streams.iter().enumerate() {
                for (i, f) in got[c].iter().enumerate() {
                    proptest::prop_assert_eq!(f.len(), sizes[i]);
                    proptest::prop_assert!(f.iter().all(|&b| b == (c * 16 + i) as u8));
                }
            }
            drop(decs);
            proptest::prop_assert_eq!(budget.held(), 0);
        }
    }
}
