//! A minimal ZooKeeper connection for the load generator: handshake, request frames out,
//! reply headers in. It speaks only the wire protocol, so it drives ringkeeper and Apache
//! ZooKeeper alike.

use std::io;
use std::net::SocketAddr;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
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
    let mut rd = Reader::new(&frame);
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
