//! A minimal ZooKeeper connection for the load generator: handshake, request frames out,
//! reply headers in. It speaks only the wire protocol, so it drives ringkeeper and Apache
//! ZooKeeper alike.

use std::io;
use std::net::SocketAddr;

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::proto::jute::Reader;
use crate::proto::records::{ConnectRequest, Request};
use crate::proto::types::xid;

/// Largest reply frame the bench accepts (a getChildren of a very wide parent can be large).
const MAX_REPLY: usize = 64 << 20;

/// One reply or notification: the header, and the body bytes.
pub struct Reply {
    pub xid: i32,
    pub err: i32,
    pub body: Vec<u8>,
}

pub struct Session {
    pub timeout_ms: i32,
}

/// Open a connection and create a new session on it.
pub async fn connect(addr: SocketAddr, timeout_ms: i32) -> io::Result<(TcpStream, Session)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut frame = Vec::with_capacity(64);
    ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout_ms,
        session_id: 0,
        passwd: vec![0; 16],
        read_only: Some(false),
    }
    .encode(&mut frame);
    stream.write_all(&frame).await?;
    let payload = read_frame(&mut stream).await?;
    let mut r = Reader::new(&payload);
    let parse = |r: &mut Reader<'_>| -> Result<Session, crate::proto::jute::DecodeError> {
        let _protocol = r.read_i32()?;
        let timeout_ms = r.read_i32()?;
        Ok(Session { timeout_ms })
    };
    let session = parse(&mut r).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if session.timeout_ms <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "session refused",
        ));
    }
    Ok((stream, session))
}

/// Read one length-prefixed frame.
pub async fn read_frame<R: futures_lite::AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > MAX_REPLY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("reply frame of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Read one reply (or watch notification, xid -1).
pub async fn read_reply<R: futures_lite::AsyncRead + Unpin>(r: &mut R) -> io::Result<Reply> {
    let frame = read_frame(r).await?;
    parse_reply(&frame)
}

fn parse_reply(frame: &[u8]) -> io::Result<Reply> {
    let mut rd = Reader::new(frame);
    let header = (|| -> Result<(i32, i64, i32), crate::proto::jute::DecodeError> {
        Ok((rd.read_i32()?, rd.read_i64()?, rd.read_i32()?))
    })()
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Reply {
        xid: header.0,
        err: header.2,
        body: rd.rest().to_vec(),
    })
}

/// Reads replies through its own buffer, so that `next` may be raced against a timer and
/// dropped at any point without losing part of a frame (the buffered bytes stay here).
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    scratch: Vec<u8>,
}

impl FrameReader {
    /// The next reply (or notification). Cancel-safe.
    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<Reply> {
        loop {
            let avail = &self.buf[self.start..];
            if avail.len() >= 4 {
                let len = i32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]);
                if len < 0 || len as usize > MAX_REPLY {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("reply frame of {len} bytes"),
                    ));
                }
                let len = len as usize;
                if avail.len() >= 4 + len {
                    let reply = parse_reply(&avail[4..4 + len]);
                    self.start += 4 + len;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return reply;
                }
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if self.scratch.is_empty() {
                self.scratch = vec![0; 64 * 1024];
            }
            // A single `read` into the scratch buffer either completes (its bytes are then
            // appended to `buf`) or, dropped while pending, changes nothing here.
            let n = r.read(&mut self.scratch).await?;
            self.buf.extend_from_slice(&self.scratch[..n]);
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// A watch notification's body: (event type, keeper state, path).
pub fn parse_notification(body: &[u8]) -> Option<(i32, i32, String)> {
    let mut r = Reader::new(body);
    Some((
        r.read_i32().ok()?,
        r.read_i32().ok()?,
        r.read_string().ok()?,
    ))
}

/// Send one request and wait for its reply, skipping notifications.
pub async fn call(stream: &mut TcpStream, xid: i32, req: &Request) -> io::Result<Reply> {
    let mut frame = Vec::with_capacity(128);
    req.encode(xid, &mut frame);
    stream.write_all(&frame).await?;
    loop {
        let reply = read_reply(stream).await?;
        if reply.xid != xid::NOTIFICATION {
            return Ok(reply);
        }
    }
}

/// Close the session politely.
pub async fn close(stream: &mut TcpStream, xid: i32) {
    let _ = call(stream, xid, &Request::CloseSession).await;
}
