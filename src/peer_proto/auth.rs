//! Members prove to each other that they hold the ensemble's secret before any peer message
//! is read: an HMAC-SHA256 challenge-response in both directions, bound to the member ids
//! the connection claims. No I/O here; `server::peer` moves the frames, and the shell draws
//! the nonces.
//!
//! ```text
//! dialer   → acceptor  Hello     { from, to, dial_nonce }
//! acceptor → dialer    Challenge { accept_nonce, mac("accept") }   the acceptor holds the key
//! dialer   → acceptor  Proof     { mac("dial") }                    the dialer holds the key
//! ```
//! Each MAC covers its direction's label, both ids and both nonces, so an answer cannot be
//! replayed on another connection (fresh nonces), reflected back (labels) or moved to another
//! pair of members (ids). With no secret configured the key is empty: the exchange still runs
//! (one code path), proves nothing, and the start-up log says the peer port is open.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a MAC (HMAC-SHA256).
pub const MAC_BYTES: usize = 32;

pub type Nonce = [u8; NONCE_BYTES];
pub type Tag = [u8; MAC_BYTES];

const ACCEPT_LABEL: &[u8] = b"ringkeeper peer accept v1";
const DIAL_LABEL: &[u8] = b"ringkeeper peer dial v1";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    #[error(
        "the peer does not hold this ensemble's secret (check every member's peer secret file)"
    )]
    BadProof,
}

/// One connection's claim: who dialed whom, and both nonces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub from: u64,
    pub to: u64,
    pub dial_nonce: Nonce,
    pub accept_nonce: Nonce,
}

impl Exchange {
    /// The acceptor's answer to the dialer's hello.
    pub fn accept_mac(&self, key: &[u8]) -> Tag {
        self.mac(key, ACCEPT_LABEL)
    }

    /// The dialer's proof, sent after it checked the acceptor's.
    pub fn dial_mac(&self, key: &[u8]) -> Tag {
        self.mac(key, DIAL_LABEL)
    }

    /// The dialer checks the acceptor's MAC (in constant time).
    pub fn verify_accept(&self, key: &[u8], tag: &Tag) -> Result<(), PeerAuthError> {
        self.verify(key, ACCEPT_LABEL, tag)
    }

    /// The acceptor checks the dialer's proof (in constant time).
    pub fn verify_dial(&self, key: &[u8], tag: &Tag) -> Result<(), PeerAuthError> {
        self.verify(key, DIAL_LABEL, tag)
    }

    fn hmac(&self, key: &[u8], label: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length (an empty one included): this cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key");
        m.update(label);
        m.update(&self.from.to_le_bytes());
        m.update(&self.to.to_le_bytes());
        m.update(&self.dial_nonce);
        m.update(&self.accept_nonce);
        m
    }

    fn mac(&self, key: &[u8], label: &[u8]) -> Tag {
        self.hmac(key, label).finalize().into_bytes().into()
    }

    fn verify(&self, key: &[u8], label: &[u8], tag: &Tag) -> Result<(), PeerAuthError> {
        self.hmac(key, label)
            .verify_slice(tag)
            .map_err(|_| PeerAuthError::BadProof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"an ensemble secret of some length";

    fn exchange() -> Exchange {
        Exchange {
            from: 2,
            to: 3,
            dial_nonce: [7; NONCE_BYTES],
            accept_nonce: [9; NONCE_BYTES],
        }
    }

    #[test]
    fn both_sides_with_the_key_agree() {
        let x = exchange();
        x.verify_accept(KEY, &x.accept_mac(KEY)).unwrap();
        x.verify_dial(KEY, &x.dial_mac(KEY)).unwrap();
    }

    #[test]
    fn a_wrong_key_or_no_key_is_refused() {
        let x = exchange();
        assert_eq!(
            x.verify_dial(KEY, &x.dial_mac(b"another secret, same length!!!!!")),
            Err(PeerAuthError::BadProof)
        );
        assert_eq!(
            x.verify_dial(KEY, &x.dial_mac(b"")),
            Err(PeerAuthError::BadProof)
        );
        assert_eq!(
            x.verify_dial(KEY, &[0; MAC_BYTES]),
            Err(PeerAuthError::BadProof)
        );
    }

    #[test]
    fn an_answer_does_not_transfer() {
        let x = exchange();
        // Reflection: the acceptor's own MAC is not a dialer's proof.
        assert!(x.verify_dial(KEY, &x.accept_mac(KEY)).is_err());
        // Another claimed id, or another connection's nonces.
        for other in [
            Exchange { from: 1, ..x },
            Exchange { to: 4, ..x },
            Exchange {
                dial_nonce: [8; NONCE_BYTES],
                ..x
            },
            Exchange {
                accept_nonce: [8; NONCE_BYTES],
                ..x
            },
        ] {
            assert!(other.verify_dial(KEY, &x.dial_mac(KEY)).is_err());
            assert!(other.verify_accept(KEY, &x.accept_mac(KEY)).is_err());
        }
    }
}
