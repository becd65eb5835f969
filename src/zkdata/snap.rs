//! Snapshot files (`snapshot.<zxid>`), as ZooKeeper 3.8's `FileSnap` writes them:
//!
//! ```text
//! FileHeader      magic "ZKSN", version 2, dbid (long)
//! sessions        count (int), then count × (id long, timeout int)
//! ACL cache       count (int), then count × (id long, vector<ACL>)
//! nodes           repeated (path ustring, data buffer, acl id long, StatPersisted), depth
//!                 first from the root (path ""), until the path "/" (an end marker)
//! seal            Adler-32 of every byte before it (long), then the string "/"
//! digest (3.6+)   zxid long, digest version int, digest long (a hex string if version < 2)
//! seal            Adler-32 of every byte before it, then "/"
//! ```

use std::collections::HashSet;

use crate::proto::jute::{DecodeError, Reader};
use crate::proto::types::Acl;

use super::{adler32, FormatError, FormatReason, ZkSession, FILE_VERSION, SNAP_MAGIC};

/// A snapshot's contents, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedSnapshot {
    pub dbid: i64,
    /// In file order.
    pub sessions: Vec<ZkSession>,
    /// The ACL cache: the id nodes refer to, and the list (`-1`, not stored, is the open ACL).
    pub acls: Vec<(i64, Vec<Acl>)>,
    /// In file order: depth first, every parent before its children.
    pub nodes: Vec<SnapNode>,
    /// The tree digest written after the first seal by 3.6+ (digest.enabled).
    pub digest: Option<SnapDigest>,
}

/// One znode as a snapshot stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapNode {
    /// Where the node's record starts in the file (for error messages).
    pub offset: u64,
    /// As stored: the root is the empty string, everything else starts with "/".
    pub path: String,
    pub data: Option<Vec<u8>>,
    /// An id in [`ParsedSnapshot::acls`], or -1 for the open ACL (world:anyone, all perms).
    pub acl: i64,
    pub stat: PersistedStat,
}

/// jute's `StatPersisted`: the Stat fields a server stores (numChildren and dataLength are
/// derived; cversion counts child creations only; ephemeralOwner holds the raw marker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistedStat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub pzxid: i64,
}

/// DataTree's `ZxidDigest`: the tree digest at a zxid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapDigest {
    pub zxid: i64,
    pub version: i32,
    pub digest: i64,
}

/// A reader that reports failures as [`FormatError`]s at the offset of the field being read.
struct Cur<'a> {
    r: Reader<'a>,
}

impl<'a> Cur<'a> {
    fn field<T>(
        &mut self,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<T, FormatError> {
        let at = self.r.position();
        f(&mut self.r).map_err(|e| FormatError::new(at, e))
    }
    fn i32(&mut self) -> Result<i32, FormatError> {
        self.field(Reader::read_i32)
    }
    fn i64(&mut self) -> Result<i64, FormatError> {
        self.field(Reader::read_i64)
    }
    fn pos(&self) -> usize {
        self.r.position()
    }
    /// A count of records at least `min_size` bytes each. ZooKeeper loops `while (count > 0)`,
    /// so a negative count means none; one that cannot fit in the file is rejected before
    /// anything is allocated for it.
    fn count(&mut self, min_size: usize) -> Result<usize, FormatError> {
        let at = self.pos();
        let count = self.i32()?;
        let n = usize::try_from(count).unwrap_or(0);
        let remaining = self.r.remaining();
        if n > remaining / min_size {
            return Err(FormatError::new(
                at,
                FormatReason::BadCount { count, remaining },
            ));
        }
        Ok(n)
    }
}

/// The seal every complete snapshot ends with: the jute string "/" (length 1).
const SEAL_TAIL: [u8; 5] = [0, 0, 0, 1, b'/'];

/// Parses a plain (uncompressed) snapshot and verifies its checksums.
pub fn parse_snapshot(bytes: &[u8]) -> Result<ParsedSnapshot, FormatError> {
    // ZooKeeper's quick test (SnapStream.isValidCheckedStream) before it reads anything: a
    // snapshot whose writer died midway does not end with the seal.
    if bytes.len() < 10 || !bytes.ends_with(&SEAL_TAIL) {
        return Err(FormatError::new(
            bytes.len().saturating_sub(SEAL_TAIL.len()),
            FormatReason::Unsealed,
        ));
    }
    let mut c = Cur {
        r: Reader::new(bytes),
    };
    let magic = c.i32()?;
    if magic != SNAP_MAGIC {
        let reason = FormatReason::BadMagic {
            expected: "ZKSN",
            found: magic,
        };
        return Err(FormatError::new(0, reason));
    }
    let version = c.i32()?;
    if version != FILE_VERSION {
        return Err(FormatError::new(4, FormatReason::BadVersion(version)));
    }
    let dbid = c.i64()?;

    let n = c.count(12)?;
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let id = c.i64()?;
        let timeout_ms = c.i32()?;
        sessions.push(ZkSession { id, timeout_ms });
    }

    let n = c.count(12)?;
    let mut acls = Vec::with_capacity(n);
    for _ in 0..n {
        let id = c.i64()?;
        let at = c.pos();
        // a null list is a RuntimeException in ZooKeeper's ReferenceCountedACLCache
        if c.r.clone().read_i32().ok() == Some(-1) {
            return Err(FormatError::new(at, FormatReason::NullAclList(id)));
        }
        acls.push((id, c.field(Reader::read_acl_vec)?));
    }

    let nodes = parse_nodes(&mut c)?;

    let seal_at = c.pos();
    check_seal(&mut c, bytes, seal_at)?;

    // 3.6+ appends the digest and seals again. ZooKeeper treats running out of bytes while
    // reading the digest as "an older snapshot without one", so do we.
    let mut digest = None;
    if !c.r.is_empty() {
        let mut probe = Cur { r: c.r.clone() };
        if let Some(d) = read_digest(&mut probe)? {
            let seal_at = probe.pos();
            check_seal(&mut probe, bytes, seal_at)?;
            digest = Some(d);
        }
    }
    Ok(ParsedSnapshot {
        dbid,
        sessions,
        acls,
        nodes,
        digest,
    })
}

fn parse_nodes(c: &mut Cur<'_>) -> Result<Vec<SnapNode>, FormatError> {
    let mut nodes: Vec<SnapNode> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let at = c.pos();
        let path = match c.field(Reader::read_ustring)? {
            Some(p) => p.into_owned(),
            None => return Err(FormatError::new(at, FormatReason::BadPath("null".into()))),
        };
        if path == "/" {
            return Ok(nodes);
        }
        let data = c.field(Reader::read_buffer)?.map(<[u8]>::to_vec);
        let acl = c.i64()?;
        let stat = PersistedStat {
            czxid: c.i64()?,
            mzxid: c.i64()?,
            ctime: c.i64()?,
            mtime: c.i64()?,
            version: c.i32()?,
            cversion: c.i32()?,
            aversion: c.i32()?,
            ephemeral_owner: c.i64()?,
            pzxid: c.i64()?,
        };
        // DataTree.serializeNode starts at the root (""), then writes each child after its
        // parent; deserialize rejects a node whose parent it has not seen.
        if nodes.is_empty() {
            if !path.is_empty() {
                return Err(FormatError::new(at, FormatReason::NoRoot(path)));
            }
        } else {
            if !path.starts_with('/') || path.ends_with('/') {
                return Err(FormatError::new(at, FormatReason::BadPath(path)));
            }
            let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
            if !seen.contains(parent) {
                return Err(FormatError::new(at, FormatReason::Orphan(path)));
            }
            if seen.contains(&path) {
                return Err(FormatError::new(at, FormatReason::Duplicate(path)));
            }
        }
        seen.insert(path.clone());
        nodes.push(SnapNode {
            offset: at as u64,
            path,
            data,
            acl,
            stat,
        });
    }
}

/// Reads a seal (checksum long, then "/") and checks it against the bytes before `at`.
fn check_seal(c: &mut Cur<'_>, bytes: &[u8], at: usize) -> Result<(), FormatError> {
    let computed = u64::from(adler32(bytes.get(..at).unwrap_or_default()));
    let stored = c.i64()? as u64;
    // ZooKeeper reads the "/" after the checksum and ignores what it says
    c.field(Reader::read_ustring)?;
    if stored != computed {
        return Err(FormatError::new(
            at,
            FormatReason::Checksum { stored, computed },
        ));
    }
    Ok(())
}

/// The digest after the first seal, or `None` if the bytes end before it is complete.
fn read_digest(c: &mut Cur<'_>) -> Result<Option<SnapDigest>, FormatError> {
    let truncated = |e: &FormatError| {
        matches!(
            e.reason,
            FormatReason::Decode(DecodeError::Truncated { .. } | DecodeError::LengthTooLong { .. })
        )
    };
    let read = |c: &mut Cur<'_>| -> Result<SnapDigest, FormatError> {
        let zxid = c.i64()?;
        let version = c.i32()?;
        let digest = if version < 2 {
            // digest version 1 stored the value as a hex string
            let at = c.pos();
            let s = c.field(Reader::read_string)?;
            u64::from_str_radix(&s, 16)
                .map(|v| v as i64)
                .map_err(|_| FormatError::new(at, FormatReason::BadDigest(s)))?
        } else {
            c.i64()?
        };
        Ok(SnapDigest {
            zxid,
            version,
            digest,
        })
    };
    match read(c) {
        Ok(d) => Ok(Some(d)),
        Err(e) if truncated(&e) => Ok(None),
        Err(e) => Err(e),
    }
}
