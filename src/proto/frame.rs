//! Framing: every message is `[len i32][len bytes]`. Splitting a connection's read buffer
//! into frames, writing a frame's length prefix, and spotting a four-letter word in place of
//! the first length.

/// Default `jute.maxbuffer`: the largest frame payload a server accepts (exactly this is ok).
pub const DEFAULT_MAX_PACKET: usize = 0xfffff;

/// Size of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// A frame header that makes ZooKeeper close the connection without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    #[error("frame length {len} exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
}

/// The outcome of looking at the start of a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split<'a> {
    /// A whole frame: its payload, and how many buffer bytes it took (prefix included).
    Frame { payload: &'a [u8], consumed: usize },
    /// Only part of a frame is there; the buffer must hold `needed` bytes in all (prefix
    /// included) before the frame is complete. While the prefix itself is incomplete this is 4.
    NeedMore { needed: usize },
}

/// Looks for one complete frame at the start of `buf`.
pub fn split_frame(buf: &[u8], max_packet: usize) -> Result<Split<'_>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return Ok(Split::NeedMore { needed: LEN_PREFIX });
    };
    let n = i32::from_be_bytes(*prefix);
    let len = usize::try_from(n).map_err(|_| FrameError::NegativeLength(n))?;
    if len > max_packet {
        return Err(FrameError::TooLong {
            len,
            max: max_packet,
        });
    }
    let total = LEN_PREFIX + len;
    match buf.get(LEN_PREFIX..total) {
        Some(payload) => Ok(Split::Frame {
            payload,
            consumed: total,
        }),
        None => Ok(Split::NeedMore { needed: total }),
    }
}

/// Iterates over the complete frames at the start of a buffer. After the last one,
/// `consumed()` says how many bytes to drop from the buffer and `need_more()` how many bytes
/// the next frame needs in all. Stops for good after an error.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    max_packet: usize,
    need: Option<usize>,
    failed: bool,
}

/// `Frames` over `buf`.
pub fn frames(buf: &[u8], max_packet: usize) -> Frames<'_> {
    Frames {
        buf,
        pos: 0,
        max_packet,
        need: None,
        failed: false,
    }
}

impl<'a> Frames<'a> {
    /// Bytes taken by the frames yielded so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// After iteration ended without error: the total size of the incomplete next frame as
    /// far as known (4 while its prefix is incomplete).
    pub fn need_more(&self) -> Option<usize> {
        self.need
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8], FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.need.is_some() {
            return None;
        }
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        match split_frame(rest, self.max_packet) {
            Ok(Split::Frame { payload, consumed }) => {
                self.pos += consumed;
                Some(Ok(payload))
            }
            Ok(Split::NeedMore { needed }) => {
                self.need = Some(needed);
                None
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Starts a frame in `out`: reserves its length prefix. Returns the offset to give to
/// `end_frame` once the payload is written.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    start
}

/// Fills in the length prefix reserved by `begin_frame`.
pub fn end_frame(out: &mut [u8], start: usize) {
    let len = out.len() - start - LEN_PREFIX;
    assert!(len <= i32::MAX as usize, "frame of {len} bytes");
    out[start..start + LEN_PREFIX].copy_from_slice(&(len as i32).to_be_bytes());
}

/// Four-letter words ZooKeeper 3.8 knows. (The telnet close sequence 0xfff4fffd is also
/// special-cased by ZooKeeper; it is not a word and is not recognised here.)
const FOUR_LETTER_WORDS: [&str; 18] = [
    "ruok", "srvr", "stat", "mntr", "conf", "cons", "envi", "wchs", "wchc", "wchp", "dump", "isro",
    "dirs", "gtmk", "crst", "srst", "stmk", "hash",
];

/// The four-letter word spelled by the first 4 bytes of a connection, if any. Check this
/// before reading those bytes as a length: every word is far above the frame limit.
/// (`stmk` is followed by an 8-byte mask, which the caller reads.)
pub fn four_letter_word(first4: &[u8; 4]) -> Option<&'static str> {
    FOUR_LETTER_WORDS
        .iter()
        .copied()
        .find(|w| w.as_bytes() == first4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_frame(&mut out);
        out.extend_from_slice(payload);
        end_frame(&mut out, start);
        out
    }

    #[test]
    fn ping_frame_bytes() {
        let f = frame(&[0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0x0b]);
        assert_eq!(f, [0, 0, 0, 8, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0x0b]);
    }

    #[test]
    fn incremental_split() {
        let f = frame(b"hello");
        for cut in 0..f.len() {
            let want = if cut < 4 { 4 } else { f.len() };
            assert_eq!(
                split_frame(&f[..cut], 100),
                Ok(Split::NeedMore { needed: want })
            );
        }
        assert_eq!(
            split_frame(&f, 100),
            Ok(Split::Frame {
                payload: b"hello",
                consumed: 9
            })
        );
    }

    #[test]
    fn several_frames_then_a_partial_one() {
        let mut buf = frame(b"a");
        buf.extend(frame(b""));
        buf.extend(frame(b"ccc"));
        let full = buf.len();
        buf.extend(&frame(b"dddd")[..6]);
        let mut it = frames(&buf, 100);
        let got: Vec<_> = it.by_ref().collect();
        assert_eq!(got, vec![Ok(&b"a"[..]), Ok(&b""[..]), Ok(&b"ccc"[..])]);
        assert_eq!(it.consumed(), full);
        assert_eq!(it.need_more(), Some(8));
    }

    #[test]
    fn length_limits() {
        let max = DEFAULT_MAX_PACKET;
        let exact = (max as u32).to_be_bytes();
        assert_eq!(
            split_frame(&exact, max),
            Ok(Split::NeedMore { needed: max + 4 })
        );
        let over = (max as u32 + 1).to_be_bytes();
        assert_eq!(
            split_frame(&over, max),
            Err(FrameError::TooLong { len: max + 1, max })
        );
        assert_eq!(
            split_frame(&[0xff, 0xff, 0xff, 0xfb], max),
            Err(FrameError::NegativeLength(-5))
        );
        let mut it = frames(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], max);
        assert_eq!(it.next(), Some(Err(FrameError::NegativeLength(-1))));
        assert_eq!(it.next(), None);
        assert_eq!(it.consumed(), 0);
    }

    #[test]
    fn four_letter_words() {
        assert_eq!(four_letter_word(b"ruok"), Some("ruok"));
        assert_eq!(four_letter_word(b"hash"), Some("hash"));
        assert_eq!(four_letter_word(b"xxxx"), None);
        assert_eq!(four_letter_word(&[0, 0, 0, 0x2d]), None);
        assert_eq!(FOUR_LETTER_WORDS.len(), 18);
    }
}
