//! A minimal blocking ZooKeeper client for the command-line tools (`ringkeeper reconfig`):
//! one connection, a session, digest authentication, one request at a time. It speaks only
//! the wire protocol, so the tools work against any member (and against ZooKeeper).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::proto::jute::Reader;
use crate::proto::records::{ConnectRequest, Request};
use crate::proto::types::{xid, ErrorCode};

/// Largest reply accepted.
const MAX_REPLY: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}: no address")]
    NoAddress(String),
    #[error("the server refused the session")]
    Refused,
    #[error("a malformed reply: {0}")]
    Malformed(String),
    #[error("{0:?} ({1})")]
    Server(ErrorCode, i32),
}

pub struct Client {
    stream: TcpStream,
    addr: String,
    next_xid: i32,
}

impl Client {
    /// Connects to `addr` (`host:port`) and opens a session.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let io = |source| ClientError::Io {
            addr: addr.to_string(),
            source,
        };
        let target = addr
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| ClientError::NoAddress(addr.to_string()))?;
        let stream = TcpStream::connect_timeout(&target, timeout).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut client = Client {
            stream,
            addr: addr.to_string(),
            next_xid: 1,
        };
        let mut frame = Vec::new();
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: timeout.as_millis().min(i32::MAX as u128) as i32,
            session_id: 0,
            passwd: vec![0; 16],
            read_only: Some(false),
        }
        .encode(&mut frame);
        client.send(&frame)?;
        let reply = client.read_frame()?;
        let mut r = Reader::new(&reply);
        let granted = (|| -> Result<i32, crate::proto::jute::DecodeError> {
            let _protocol = r.read_i32()?;
            r.read_i32()
        })()
        .map_err(|e| ClientError::Malformed(e.to_string()))?;
        if granted <= 0 {
            return Err(ClientError::Refused);
        }
        Ok(client)
    }

    /// `addauth digest user:password`.
    pub fn add_digest(&mut self, user_password: &str) -> Result<(), ClientError> {
        let req = Request::Auth {
            scheme: "digest".into(),
            auth: user_password.as_bytes().to_vec(),
        };
        self.call_with(xid::AUTH, &req).map(|_| ())
    }

    /// Sends `req` and returns the reply's body, or the server's error.
    pub fn call(&mut self, req: &Request) -> Result<Vec<u8>, ClientError> {
        let xid = self.next_xid;
        self.next_xid += 1;
        self.call_with(xid, req)
    }

    fn call_with(&mut self, xid: i32, req: &Request) -> Result<Vec<u8>, ClientError> {
        let mut frame = Vec::new();
        req.encode(xid, &mut frame);
        self.send(&frame)?;
        loop {
            let reply = self.read_frame()?;
            let mut r = Reader::new(&reply);
            let (got, _zxid, err) = (|| -> Result<_, crate::proto::jute::DecodeError> {
                Ok((r.read_i32()?, r.read_i64()?, r.read_i32()?))
            })()
            .map_err(|e| ClientError::Malformed(e.to_string()))?;
            if got != xid {
                continue; // a watch notification
            }
            if err != 0 {
                let code = ErrorCode::from_code(err).unwrap_or(ErrorCode::SystemError);
                return Err(ClientError::Server(code, err));
            }
            return Ok(r.rest().to_vec());
        }
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(frame)
            .map_err(|source| ClientError::Io {
                addr: self.addr.clone(),
                source,
            })
    }

    fn read_frame(&mut self) -> Result<Vec<u8>, ClientError> {
        let io = |source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(io)?;
        let len = i32::from_be_bytes(len);
        if len < 0 || len as usize > MAX_REPLY {
            return Err(ClientError::Malformed(format!("a frame of {len} bytes")));
        }
        let mut buf = vec![0; len as usize];
        self.stream.read_exact(&mut buf).map_err(io)?;
        Ok(buf)
    }
}

/// reconfig: sends the request and returns the new configuration text.
pub fn reconfig(
    client: &mut Client,
    joining: Option<String>,
    leaving: Option<String>,
    new_members: Option<String>,
    from_config: i64,
) -> Result<String, ClientError> {
    let body = client.call(&Request::Reconfig {
        joining_servers: joining,
        leaving_servers: leaving,
        new_members,
        cur_config_id: from_config,
    })?;
    let mut r = Reader::new(&body);
    let data = r
        .read_buffer()
        .map_err(|e| ClientError::Malformed(e.to_string()))?;
    Ok(String::from_utf8_lossy(data.unwrap_or_default()).into_owned())
}
