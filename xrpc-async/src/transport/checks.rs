//! Checks of what an encoder wrote before a transport sends it: length-prefixed frames within
//! the maximum frame size, one or a batch of them.

use xrpc_proto::FRAME_PREFIX_LEN;

use super::TransportError;

/// Checks that `buf` holds exactly one length-prefixed frame within `max`; returns its length.
pub fn check_prefixed(buf: &[u8], max: usize) -> Result<usize, TransportError> {
    let Some((prefix, body)) = buf.split_first_chunk::<FRAME_PREFIX_LEN>() else {
        return Err(TransportError::Protocol(format!(
            "encoded frame of {} bytes has no length prefix",
            buf.len()
        )));
    };
    let declared = u32::from_le_bytes(*prefix) as usize;
    if body.len() > max {
        return Err(TransportError::MessageTooLarge {
            size: body.len(),
            max,
        });
    }
    if declared != body.len() {
        return Err(TransportError::Protocol(format!(
            "encoded frame declares {declared} bytes but holds {}",
            body.len()
        )));
    }
    Ok(body.len())
}

/// How a transport checks what an encoder wrote before sending it: given the buffer and the
/// maximum frame size, the number of frames and their payload bytes.
pub(crate) type CheckEncoded = fn(&[u8], usize) -> Result<(u64, usize), TransportError>;

/// [`check_prefixed`] as a [`CheckEncoded`]: exactly one frame.
pub(crate) fn check_one_prefixed(buf: &[u8], max: usize) -> Result<(u64, usize), TransportError> {
    Ok((1, check_prefixed(buf, max)?))
}

/// Checks that `buf` holds zero or more consecutive length-prefixed frames, each within `max`;
/// returns their number and their total length (prefixes excluded).
pub fn check_prefixed_batch(buf: &[u8], max: usize) -> Result<(u64, usize), TransportError> {
    let (mut off, mut n, mut bytes) = (0usize, 0u64, 0usize);
    while off < buf.len() {
        let Some(prefix) = buf[off..].first_chunk::<FRAME_PREFIX_LEN>() else {
            return Err(TransportError::Protocol(format!(
                "encoded batch ends with a partial length prefix at byte {off}"
            )));
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        if len > max {
            return Err(TransportError::MessageTooLarge { size: len, max });
        }
        let end = off + FRAME_PREFIX_LEN + len;
        if end > buf.len() {
            return Err(TransportError::Protocol(format!(
                "encoded frame at byte {off} declares {len} bytes but the batch ends first"
            )));
        }
        off = end;
        n += 1;
        bytes += len;
    }
    Ok((n, bytes))
}

/// The frame bodies of a batch that [`check_prefixed_batch`] accepted.
pub fn batch_frames(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let (prefix, tail) = rest.split_first_chunk::<FRAME_PREFIX_LEN>()?;
        let len = (u32::from_le_bytes(*prefix) as usize).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        Some(frame)
    })
}

/// Checks a frame length against the maximum.
pub fn check_len(len: usize, max: usize) -> Result<(), TransportError> {
    if len > max || len > u32::MAX as usize {
        Err(TransportError::MessageTooLarge { size: len, max })
    } else {
        Ok(())
    }
}
