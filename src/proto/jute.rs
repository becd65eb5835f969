//! Jute, ZooKeeper's record encoding: big-endian primitives, length-prefixed buffers and
//! strings (-1 = null), count-prefixed vectors, records as their fields back to back.
//!
//! `Reader` never allocates from an untrusted length: a buffer, string or vector that claims
//! more than what is left of the input is an error before anything is reserved.

use std::borrow::Cow;

use crate::proto::types::{Acl, Id, Stat};

/// Upper bound on the element count of any vector we decode. A frame holds at most
/// ~1 MiB and every element type we read is at least 4 bytes, so real input never gets close.
pub const MAX_VECTOR_LEN: usize = 1 << 20;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("input ends early: {needed} more bytes needed, {remaining} left")]
    Truncated { needed: usize, remaining: usize },
    #[error("negative length {0}")]
    NegativeLength(i32),
    #[error("length {len} exceeds the {remaining} bytes left")]
    LengthTooLong { len: usize, remaining: usize },
    #[error("vector of {count} elements exceeds the limit of {limit}")]
    TooManyElements { count: usize, limit: usize },
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// A cursor over one record's bytes (usually a frame payload).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The unread bytes, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(DecodeError::Truncated {
                needed: n,
                remaining,
            });
        }
        let out = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(DecodeError::Truncated {
                needed: n,
                remaining,
            })?;
        self.pos += n;
        Ok(out)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take_array::<1>()?[0])
    }

    pub fn read_i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take_array()?))
    }

    pub fn read_i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take_array()?))
    }

    /// Java's `DataInput.readBoolean`: any non-zero byte is true.
    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.read_u8()? != 0)
    }

    /// A length prefix: -1 is null (`None`), other negatives are errors, and the length must
    /// fit in what is left.
    fn read_len(&mut self) -> Result<Option<usize>, DecodeError> {
        let n = self.read_i32()?;
        if n == -1 {
            return Ok(None);
        }
        let len = usize::try_from(n).map_err(|_| DecodeError::NegativeLength(n))?;
        let remaining = self.remaining();
        if len > remaining {
            return Err(DecodeError::LengthTooLong { len, remaining });
        }
        Ok(Some(len))
    }

    /// A jute `buffer`, borrowed from the input; `None` is null (-1), distinct from empty.
    pub fn read_buffer(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.read_len()? {
            None => Ok(None),
            Some(len) => self.take(len).map(Some),
        }
    }

    /// A jute `ustring`. Invalid UTF-8 is replaced with U+FFFD, as Java's decoder does (so an
    /// invalid path later fails path validation rather than decoding); valid input borrows.
    pub fn read_ustring(&mut self) -> Result<Option<Cow<'a, str>>, DecodeError> {
        Ok(self.read_buffer()?.map(String::from_utf8_lossy))
    }

    /// A ustring where null reads as "" (kazoo sends "" as null).
    pub fn read_string(&mut self) -> Result<String, DecodeError> {
        Ok(self
            .read_ustring()?
            .map(Cow::into_owned)
            .unwrap_or_default())
    }

    /// A ustring that keeps null distinct from "".
    pub fn read_opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(self.read_ustring()?.map(Cow::into_owned))
    }

    /// A jute `vector`: null (-1) reads as empty. Other negative counts also read as empty,
    /// as in Java's `BinaryIndex` (its loop runs while the count is positive). Every element
    /// takes at least one byte, so a count above what is left is rejected up front.
    pub fn read_vec<T>(
        &mut self,
        limit: usize,
        mut elem: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.read_i32()?;
        let Ok(count) = usize::try_from(n) else {
            return Ok(Vec::new());
        };
        if count > limit {
            return Err(DecodeError::TooManyElements { count, limit });
        }
        let remaining = self.remaining();
        if count > remaining {
            return Err(DecodeError::LengthTooLong {
                len: count,
                remaining,
            });
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(elem(self)?);
        }
        Ok(out)
    }

    /// `vector<ustring>` with null elements read as "".
    pub fn read_string_vec(&mut self) -> Result<Vec<String>, DecodeError> {
        self.read_vec(MAX_VECTOR_LEN, |r| r.read_string())
    }

    pub fn read_stat(&mut self) -> Result<Stat, DecodeError> {
        Ok(Stat {
            czxid: self.read_i64()?,
            mzxid: self.read_i64()?,
            ctime: self.read_i64()?,
            mtime: self.read_i64()?,
            version: self.read_i32()?,
            cversion: self.read_i32()?,
            aversion: self.read_i32()?,
            ephemeral_owner: self.read_i64()?,
            data_length: self.read_i32()?,
            num_children: self.read_i32()?,
            pzxid: self.read_i64()?,
        })
    }

    pub fn read_id(&mut self) -> Result<Id, DecodeError> {
        Ok(Id {
            scheme: self.read_string()?,
            id: self.read_string()?,
        })
    }

    pub fn read_acl(&mut self) -> Result<Acl, DecodeError> {
        Ok(Acl {
            perms: self.read_i32()?,
            id: self.read_id()?,
        })
    }

    /// `vector<ACL>`; null reads as empty (the server rejects both with InvalidACL).
    pub fn read_acl_vec(&mut self) -> Result<Vec<Acl>, DecodeError> {
        self.read_vec(MAX_VECTOR_LEN, |r| r.read_acl())
    }
}

/// Appends jute-encoded values to a byte vector.
#[derive(Debug)]
pub struct Writer<'b> {
    out: &'b mut Vec<u8>,
}

/// A length as a jute int. Anything we encode is bounded far below 2 GiB (a frame we read is
/// at most ~1 MiB, node data is bounded by it); exceeding it is a bug, not bad input.
fn wire_len(len: usize) -> i32 {
    assert!(
        len <= i32::MAX as usize,
        "jute length {len} does not fit an int"
    );
    len as i32
}

impl<'b> Writer<'b> {
    pub fn new(out: &'b mut Vec<u8>) -> Self {
        Writer { out }
    }

    /// The underlying vector (e.g. to read its length).
    pub fn bytes(&self) -> &[u8] {
        self.out
    }

    pub fn write_u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub fn write_i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub fn write_i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    pub fn write_bool(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }

    /// A buffer; `None` is written as null (-1).
    pub fn write_buffer(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.write_i32(-1),
            Some(b) => {
                self.write_i32(wire_len(b.len()));
                self.out.extend_from_slice(b);
            }
        }
    }

    pub fn write_str(&mut self, s: &str) {
        self.write_buffer(Some(s.as_bytes()));
    }

    pub fn write_opt_str(&mut self, s: Option<&str>) {
        self.write_buffer(s.map(str::as_bytes));
    }

    /// Overwrites the int at byte offset `at` (a count written as a placeholder) with `n`.
    pub fn patch_len(&mut self, at: usize, n: usize) {
        let bytes = wire_len(n).to_be_bytes();
        let slot = self.out.get_mut(at..at + 4);
        let slot = slot.expect("patch_len: offset of an int written earlier");
        slot.copy_from_slice(&bytes);
    }

    /// A vector's count prefix; the caller writes the elements.
    pub fn write_len(&mut self, n: usize) {
        self.write_i32(wire_len(n));
    }

    pub fn write_strs<'s>(&mut self, items: impl ExactSizeIterator<Item = &'s str>) {
        self.write_len(items.len());
        for s in items {
            self.write_str(s);
        }
    }

    pub fn write_stat(&mut self, s: &Stat) {
        self.write_i64(s.czxid);
        self.write_i64(s.mzxid);
        self.write_i64(s.ctime);
        self.write_i64(s.mtime);
        self.write_i32(s.version);
        self.write_i32(s.cversion);
        self.write_i32(s.aversion);
        self.write_i64(s.ephemeral_owner);
        self.write_i32(s.data_length);
        self.write_i32(s.num_children);
        self.write_i64(s.pzxid);
    }

    pub fn write_id(&mut self, id: &Id) {
        self.write_str(&id.scheme);
        self.write_str(&id.id);
    }

    pub fn write_acl(&mut self, acl: &Acl) {
        self.write_i32(acl.perms);
        self.write_id(&acl.id);
    }

    pub fn write_acl_vec(&mut self, acls: &[Acl]) {
        self.write_len(acls.len());
        for a in acls {
            self.write_acl(a);
        }
    }
}

/// The encoded size of a Stat.
pub const STAT_LEN: usize = 68;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.write_i32(-2);
        w.write_i64(0x0102_0304_0506_0708);
        w.write_bool(true);
        w.write_buffer(None);
        w.write_buffer(Some(b""));
        w.write_str("/été");
        w.write_opt_str(None);
        w.write_acl_vec(&Acl::open_unsafe());
        let mut r = Reader::new(&buf);
        assert_eq!(r.read_i32(), Ok(-2));
        assert_eq!(r.read_i64(), Ok(0x0102_0304_0506_0708));
        assert_eq!(r.read_bool(), Ok(true));
        assert_eq!(r.read_buffer(), Ok(None));
        assert_eq!(r.read_buffer(), Ok(Some(&b""[..])));
        assert_eq!(r.read_string().as_deref(), Ok("/été"));
        assert_eq!(r.read_opt_string(), Ok(None));
        assert_eq!(r.read_acl_vec(), Ok(Acl::open_unsafe()));
        assert!(r.is_empty());
    }

    #[test]
    fn world_anyone_acl_bytes() {
        // Section 5.2 of the protocol reference.
        let mut buf = Vec::new();
        Writer::new(&mut buf).write_acl(&Acl::open_unsafe()[0]);
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "0000001f00000005776f726c6400000006616e796f6e65");
    }

    #[test]
    fn stat_is_68_bytes() {
        let mut buf = Vec::new();
        Writer::new(&mut buf).write_stat(&Stat {
            pzxid: 7,
            ..Stat::default()
        });
        assert_eq!(buf.len(), STAT_LEN);
        assert_eq!(Reader::new(&buf).read_stat().map(|s| s.pzxid), Ok(7));
    }

    #[test]
    fn any_nonzero_byte_is_true() {
        assert_eq!(Reader::new(&[0x7f]).read_bool(), Ok(true));
        assert_eq!(Reader::new(&[0]).read_bool(), Ok(false));
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        // A string claiming 2 GiB with 3 bytes behind it.
        let r = Reader::new(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]).read_buffer();
        assert_eq!(
            r,
            Err(DecodeError::LengthTooLong {
                len: i32::MAX as usize,
                remaining: 3
            })
        );
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xfe]).read_buffer(),
            Err(DecodeError::NegativeLength(-2))
        );
        // A vector claiming a million elements with nothing behind it.
        let r = Reader::new(&[0x00, 0x0f, 0x42, 0x40]).read_string_vec();
        assert!(matches!(r, Err(DecodeError::LengthTooLong { .. })), "{r:?}");
        let r = Reader::new(&[0x7f, 0xff, 0xff, 0xff]).read_string_vec();
        assert!(
            matches!(r, Err(DecodeError::TooManyElements { .. })),
            "{r:?}"
        );
        assert_eq!(
            Reader::new(&[0, 0]).read_i32(),
            Err(DecodeError::Truncated {
                needed: 4,
                remaining: 2
            })
        );
    }

    #[test]
    fn null_and_negative_vectors_read_as_empty() {
        assert_eq!(Reader::new(&[0xff; 4]).read_string_vec(), Ok(vec![]));
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xfb]).read_string_vec(),
            Ok(vec![])
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let s = Reader::new(&[0, 0, 0, 2, b'/', 0xff]).read_string();
        assert_eq!(s.as_deref(), Ok("/\u{fffd}"));
    }
}
