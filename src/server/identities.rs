//! The identities a connection's session holds (its address, and what `addauth` added),
//! bounded in number and size (sans-IO).
//!
//! A connection's first write (and its first after an `addauth` that added one) carries them
//! into the log (`txn::Command::auth`), so an unbounded list would make those writes huge, and
//! a linear duplicate check would make many `addauth` calls quadratic. A refusal is answered AuthFailed (and the connection
//! closed), as ZooKeeper answers a failed `addauth`.

use std::collections::HashSet;

use crate::proto::types::Id;

/// Identities a session may hold, its `ip` identity included.
pub const MAX_SESSION_IDENTITIES: usize = 32;
/// Longest `addauth` credential accepted, in bytes (for `digest`, `user:password`).
pub const MAX_AUTH_BYTES: usize = 1024;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the session already holds {limit} identities")]
    TooMany { limit: usize },
    #[error("credential of {len} bytes (at most {limit})")]
    TooLarge { len: usize, limit: usize },
}

/// The identities, in the order whoAmI shows them: `addauth` identities in the order added,
/// then the address, then `super`.
#[derive(Clone, Debug)]
pub struct Identities {
    list: Vec<Id>,
    held: HashSet<Id>,
}

impl Identities {
    /// A connection's identities before any `addauth`: its address.
    pub fn new(ip: Id) -> Identities {
        Identities {
            held: HashSet::from([ip.clone()]),
            list: vec![ip],
        }
    }

    pub fn as_slice(&self) -> &[Id] {
        &self.list
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.held.contains(id)
    }

    /// A credential's size is checked before any work is done on it.
    pub fn check_credential(credential: &[u8]) -> Result<(), IdentityError> {
        if credential.len() > MAX_AUTH_BYTES {
            return Err(IdentityError::TooLarge {
                len: credential.len(),
                limit: MAX_AUTH_BYTES,
            });
        }
        Ok(())
    }

    /// Add an `addauth` identity (before the address). Ok(false): already held, stored once.
    pub fn add(&mut self, id: Id) -> Result<bool, IdentityError> {
        self.insert(id, false)
    }

    /// Add an identity after everything else (`super`). Ok(false): already held.
    pub fn add_last(&mut self, id: Id) -> Result<bool, IdentityError> {
        self.insert(id, true)
    }

    /// Whether one more identity would fit.
    pub fn has_room(&self) -> bool {
        self.list.len() < MAX_SESSION_IDENTITIES
    }

    fn insert(&mut self, id: Id, last: bool) -> Result<bool, IdentityError> {
        if self.held.contains(&id) {
            return Ok(false);
        }
        if !self.has_room() {
            return Err(IdentityError::TooMany {
                limit: MAX_SESSION_IDENTITIES,
            });
        }
        self.held.insert(id.clone());
        let at = if last {
            self.list.len()
        } else {
            // Bounded by MAX_SESSION_IDENTITIES.
            self.list
                .iter()
                .position(|i| i.scheme == "ip")
                .unwrap_or(self.list.len())
        };
        self.list.insert(at, id);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: usize) -> Id {
        Id::new("digest", format!("user{n}:hash"))
    }

    #[test]
    fn order_is_digests_then_address_then_super() {
        let mut ids = Identities::new(Id::new("ip", "127.0.0.1"));
        assert_eq!(ids.add(digest(1)), Ok(true));
        assert_eq!(ids.add_last(Id::new("super", "")), Ok(true));
        assert_eq!(ids.add(digest(2)), Ok(true));
        let schemes: Vec<&str> = ids.as_slice().iter().map(|i| i.scheme.as_str()).collect();
        assert_eq!(schemes, ["digest", "digest", "ip", "super"]);
        assert_eq!(ids.as_slice()[0], digest(1));
    }

    #[test]
    fn a_repeated_identity_is_stored_once_and_never_refused() {
        let mut ids = Identities::new(Id::new("ip", "127.0.0.1"));
        assert_eq!(ids.add(digest(1)), Ok(true));
        for _ in 0..100_000 {
            assert_eq!(ids.add(digest(1)), Ok(false));
        }
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn identities_are_bounded() {
        let mut ids = Identities::new(Id::new("ip", "127.0.0.1"));
        for n in 1..MAX_SESSION_IDENTITIES {
            assert_eq!(ids.add(digest(n)), Ok(true));
        }
        assert_eq!(ids.len(), MAX_SESSION_IDENTITIES);
        let refused = Err(IdentityError::TooMany {
            limit: MAX_SESSION_IDENTITIES,
        });
        assert_eq!(ids.add(digest(0)), refused);
        assert_eq!(ids.add_last(Id::new("super", "")), refused);
        // one already held is still fine
        assert_eq!(ids.add(digest(1)), Ok(false));
        assert_eq!(ids.len(), MAX_SESSION_IDENTITIES);
    }

    #[test]
    fn credentials_are_bounded() {
        assert!(Identities::check_credential(&[b'a'; MAX_AUTH_BYTES]).is_ok());
        assert_eq!(
            Identities::check_credential(&[b'a'; MAX_AUTH_BYTES + 1]),
            Err(IdentityError::TooLarge {
                len: MAX_AUTH_BYTES + 1,
                limit: MAX_AUTH_BYTES
            })
        );
    }
}
