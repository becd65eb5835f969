//! ACL rules (protocol section 8.1): validation and `auth` expansion of ACLs that a create or
//! setACL carries, the permission check, and getACL's digest redaction.
//!
//! Everything here is pure and deterministic: it runs inside the replicated state machine.

use std::collections::HashSet;

use crate::proto::types::{perms, Acl, Id};

/// Why an ACL list is rejected (all of them are InvalidACL on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("the ACL list is empty")]
    Empty,
    #[error("unknown ACL scheme")]
    UnknownScheme,
    #[error("malformed id for its scheme")]
    BadId,
    #[error("the `auth` scheme needs an authenticated identity and the caller has none")]
    NoAuthenticatedIds,
}

/// Schemes whose identities count as "authenticated" when expanding `auth:` (ZooKeeper's
/// `isAuthenticated()`: digest, sasl and x509 do; ip does not; super is no provider).
fn is_authenticated_scheme(scheme: &str) -> bool {
    matches!(scheme, "digest" | "sasl" | "x509")
}

/// ZooKeeper's `fixupACL`: drop duplicate entries (keeping the first), reject an empty list,
/// keep `world:anyone`, expand `auth` into every authenticated identity of the caller, and
/// check the id syntax of every other entry against its scheme.
pub fn fixup(acl: &[Acl], auth: &[Id]) -> Result<Vec<Acl>, AclError> {
    let mut seen: HashSet<&Acl> = HashSet::with_capacity(acl.len());
    let unique: Vec<&Acl> = acl.iter().filter(|a| seen.insert(*a)).collect();
    if unique.is_empty() {
        return Err(AclError::Empty);
    }
    let mut out = Vec::with_capacity(unique.len());
    for a in unique {
        let Id { scheme, id } = &a.id;
        if scheme == "world" && id == "anyone" {
            out.push(a.clone());
        } else if scheme == "auth" {
            let before = out.len();
            for caller in auth.iter().filter(|c| is_authenticated_scheme(&c.scheme)) {
                out.push(Acl {
                    perms: a.perms,
                    id: caller.clone(),
                });
            }
            if out.len() == before {
                return Err(AclError::NoAuthenticatedIds);
            }
        } else {
            let valid = match scheme.as_str() {
                "digest" => valid_digest_id(id),
                "ip" => parse_ip_acl(id).is_some(),
                // Providers that are not configured in ringkeeper are unknown schemes, as they
                // are on a ZooKeeper without them (world with an id other than anyone, too).
                _ => return Err(AclError::UnknownScheme),
            };
            if !valid {
                return Err(AclError::BadId);
            }
            out.push(a.clone());
        }
    }
    Ok(out)
}

/// A digest id must be `user:hash`: Java's `id.split(":")` (which drops trailing empty
/// strings) must give exactly two parts.
pub fn valid_digest_id(id: &str) -> bool {
    let mut parts: Vec<&str> = id.split(':').collect();
    while parts.last() == Some(&"") {
        parts.pop();
    }
    parts.len() == 2
}

/// An IPv4 address `a.b.c.d`, each part a Java `Integer.parseInt` in 0..=255.
fn parse_v4(addr: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = addr.split('.');
    for slot in out.iter_mut() {
        let v: i32 = parts.next()?.parse().ok()?;
        *slot = u8::try_from(v).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// An ip ACL id: `a.b.c.d` or `a.b.c.d/bits` with 0 <= bits <= 32 (IPv4 only, as in 3.8.0).
/// Returns the address and the prefix length.
pub fn parse_ip_acl(id: &str) -> Option<([u8; 4], u32)> {
    let mut it = id.splitn(2, '/');
    let addr = parse_v4(it.next()?)?;
    let bits = match it.next() {
        None => 32,
        Some(b) => {
            let b: i32 = b.parse().ok()?;
            u32::try_from(b).ok().filter(|b| *b <= 32)?
        }
    };
    Some((addr, bits))
}

fn mask(addr: [u8; 4], bits: u32) -> u32 {
    let v = u32::from_be_bytes(addr);
    if bits == 0 {
        0
    } else {
        v & (u32::MAX << (32 - bits))
    }
}

/// Whether a caller at `client` (an IPv4 address string) matches the ip ACL `acl_id`.
pub fn ip_matches(client: &str, acl_id: &str) -> bool {
    let Some((acl_addr, bits)) = parse_ip_acl(acl_id) else {
        return false;
    };
    let Some(client_addr) = parse_v4(client) else {
        return false;
    };
    mask(acl_addr, bits) == mask(client_addr, bits)
}

fn id_matches(caller: &Id, entry: &Id) -> bool {
    if caller.scheme != entry.scheme {
        return false;
    }
    match entry.scheme.as_str() {
        "ip" => ip_matches(&caller.id, &entry.id),
        "digest" | "sasl" | "x509" => caller.id == entry.id,
        _ => false,
    }
}

/// ZooKeeper's `checkACL`: true if the caller (its identities `ids`) may do something that
/// needs any of the bits in `needed` on a node with this ACL. An empty ACL is open to all;
/// a `super` identity bypasses every check.
pub fn check(acl: &[Acl], needed: i32, ids: &[Id]) -> bool {
    if acl.is_empty() || ids.iter().any(|i| i.scheme == "super") {
        return true;
    }
    acl.iter().any(|a| {
        a.perms & needed != 0
            && ((a.id.scheme == "world" && a.id.id == "anyone")
                || ids.iter().any(|caller| id_matches(caller, &a.id)))
    })
}

/// Every `digest` id with its hash hidden (`user:hash` → `user:x`), other entries as they are.
pub fn redact_digests(acl: &[Acl]) -> Vec<Acl> {
    acl.iter()
        .map(|a| {
            if a.id.scheme == "digest" {
                Acl {
                    perms: a.perms,
                    id: Id::new("digest", redact_digest(&a.id.id)),
                }
            } else {
                a.clone()
            }
        })
        .collect()
}

/// getACL's reply for a caller: unchanged if the caller has ADMIN on the node; otherwise every
/// `digest` id has its hash hidden (`user:hash` → `user:x`).
pub fn redact_for_get_acl(acl: &[Acl], ids: &[Id]) -> Vec<Acl> {
    if check(acl, perms::ADMIN, ids) {
        return acl.to_vec();
    }
    redact_digests(acl)
}

/// Java's `id.replaceAll(":.*", ":x")`: `.` stops at line terminators, so every `:` starts a
/// match that runs to the end of its line.
fn redact_digest(id: &str) -> String {
    let is_line_end = |c: char| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}');
    let mut out = String::with_capacity(id.len());
    let mut in_match = false;
    for c in id.chars() {
        if in_match {
            if is_line_end(c) {
                in_match = false;
                out.push(c);
            }
        } else if c == ':' {
            out.push_str(":x");
            in_match = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// The digest identity ZooKeeper derives from `user:password`: `user:base64(sha1(user:password))`.
/// Used by the auth handler and by tests that need a real digest.
pub fn digest_id(user_password: &str) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let user = user_password.split(':').next().unwrap_or("");
    let hash = sha1::Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            id: Id::new(scheme, id),
        }
    }

    #[test]
    fn digest_of_known_user() {
        assert_eq!(
            digest_id("rkuser:rkpass"),
            "rkuser:4qUOOcmElT7pbeggxNcoq/O3awQ="
        );
    }

    #[test]
    fn digest_id_syntax_follows_java_split() {
        for ok in ["u:h", "u:h:", "u:h::", ":h"] {
            assert!(valid_digest_id(ok), "{ok}");
        }
        for bad in ["", "nocolon", "u:", "u::", "a:b:c", "::"] {
            assert!(!valid_digest_id(bad), "{bad}");
        }
    }

    #[test]
    fn ip_acl_syntax() {
        assert_eq!(parse_ip_acl("127.0.0.1"), Some(([127, 0, 0, 1], 32)));
        assert_eq!(parse_ip_acl("10.0.0.0/8"), Some(([10, 0, 0, 0], 8)));
        assert_eq!(parse_ip_acl("10.0.0.0/0"), Some(([10, 0, 0, 0], 0)));
        assert_eq!(parse_ip_acl("010.+1.0.0"), Some(([10, 1, 0, 0], 32)));
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.256",
            "1.2.3.-1",
            "a.b.c.d",
            "1.2.3.4/",
            "1.2.3.4/33",
            "1.2.3.4/-1",
            "::1",
            "1.2.3.4/8/9",
        ] {
            assert_eq!(parse_ip_acl(bad), None, "{bad}");
        }
    }

    #[test]
    fn ip_matching_with_mask() {
        assert!(ip_matches("10.1.2.3", "10.0.0.0/8"));
        assert!(!ip_matches("11.1.2.3", "10.0.0.0/8"));
        assert!(ip_matches("127.0.0.1", "127.0.0.1"));
        assert!(!ip_matches("127.0.0.2", "127.0.0.1"));
        assert!(ip_matches("1.2.3.4", "9.9.9.9/0"));
        assert!(!ip_matches("not-an-ip", "9.9.9.9/0"));
    }

    #[test]
    fn fixup_rules() {
        let digest = Id::new("digest", "u:h");
        let ip = Id::new("ip", "127.0.0.1");
        assert_eq!(fixup(&[], &[]), Err(AclError::Empty));
        assert_eq!(
            fixup(&[acl(31, "bogus", "x")], &[]),
            Err(AclError::UnknownScheme)
        );
        assert_eq!(
            fixup(&[acl(31, "world", "someone")], &[]),
            Err(AclError::UnknownScheme)
        );
        assert_eq!(
            fixup(&[acl(31, "super", "")], &[]),
            Err(AclError::UnknownScheme)
        );
        assert_eq!(
            fixup(&[acl(31, "digest", "no-colon")], &[]),
            Err(AclError::BadId)
        );
        assert_eq!(fixup(&[acl(31, "ip", "1.2.3")], &[]), Err(AclError::BadId));
        // auth with only an ip identity: nothing authenticated to expand to.
        assert_eq!(
            fixup(&[acl(31, "auth", "")], std::slice::from_ref(&ip)),
            Err(AclError::NoAuthenticatedIds)
        );
        assert_eq!(
            fixup(&[acl(31, "auth", "")], &[ip.clone(), digest.clone()]),
            Ok(vec![Acl {
                perms: 31,
                id: digest.clone()
            }])
        );
        // Duplicates are dropped, order kept.
        let open = acl(31, "world", "anyone");
        assert_eq!(
            fixup(
                &[open.clone(), acl(1, "ip", "10.0.0.0/8"), open.clone()],
                &[]
            ),
            Ok(vec![open, acl(1, "ip", "10.0.0.0/8")])
        );
    }

    #[test]
    fn check_rules() {
        let open = vec![acl(31, "world", "anyone")];
        assert!(check(&open, perms::WRITE, &[]));
        assert!(check(&[], perms::WRITE, &[]));
        let read_only = vec![acl(perms::READ, "world", "anyone")];
        assert!(!check(&read_only, perms::WRITE, &[]));
        assert!(check(&read_only, perms::READ | perms::ADMIN, &[]));
        assert!(check(&read_only, perms::WRITE, &[Id::new("super", "")]));
        let secret = vec![acl(31, "digest", "u:h")];
        assert!(!check(
            &secret,
            perms::READ,
            &[Id::new("digest", "u:other")]
        ));
        assert!(check(
            &secret,
            perms::READ,
            &[Id::new("ip", "1.1.1.1"), Id::new("digest", "u:h")]
        ));
        // The scheme must match too.
        assert!(!check(&secret, perms::READ, &[Id::new("sasl", "u:h")]));
        let net = vec![acl(perms::READ, "ip", "10.0.0.0/8")];
        assert!(check(&net, perms::READ, &[Id::new("ip", "10.9.9.9")]));
        assert!(!check(&net, perms::READ, &[Id::new("ip", "11.9.9.9")]));
    }

    #[test]
    fn get_acl_redaction() {
        let mixed = vec![
            acl(perms::READ, "world", "anyone"),
            acl(31, "digest", "rkuser:abc="),
        ];
        let redacted = redact_for_get_acl(&mixed, &[Id::new("ip", "127.0.0.1")]);
        assert_eq!(redacted[0], mixed[0]);
        assert_eq!(redacted[1], acl(31, "digest", "rkuser:x"));
        let owner = redact_for_get_acl(&mixed, &[Id::new("digest", "rkuser:abc=")]);
        assert_eq!(owner, mixed);
        assert_eq!(redact_digest("a:b:c"), "a:x");
        assert_eq!(redact_digest("a:b\nc:d"), "a:x\nc:x");
        assert_eq!(redact_digest("nocolon"), "nocolon");
    }
}
