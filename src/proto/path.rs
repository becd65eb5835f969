//! ZooKeeper path rules (PathUtils.validatePath), checked by the server for writes.

/// Why a path is not a valid znode path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path must not end with '/'")]
    TrailingSlash,
    #[error("path has an empty component")]
    EmptyComponent,
    #[error("path has a '.' or '..' component")]
    RelativeComponent,
    #[error("path has a forbidden character")]
    BadCharacter,
}

/// Full validation (section 10 of the protocol reference).
pub fn validate(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(PathError::TrailingSlash);
    }
    for component in path[1..].split('/') {
        match component {
            "" => return Err(PathError::EmptyComponent),
            "." | ".." => return Err(PathError::RelativeComponent),
            _ => {}
        }
    }
    if path.chars().any(forbidden) {
        return Err(PathError::BadCharacter);
    }
    Ok(())
}

fn forbidden(c: char) -> bool {
    // ZooKeeper checks UTF-16 code units: a character beyond U+FFFF is a surrogate pair
    // there, and surrogates (U+D800..U+DFFF) fall in its forbidden U+D800..U+F8FF range.
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..)
}

/// The parent of a valid, non-root path (`/a/b` → `/a`, `/a` → `/`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a non-root path.
pub fn name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `parent` + `/` + `name`, without a double slash under the root.
pub fn join(parent: &str, name: &str) -> String {
    let mut s = String::with_capacity(parent.len() + 1 + name.len());
    s.push_str(parent);
    if parent != "/" {
        s.push('/');
    }
    s.push_str(name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_paths() {
        for ok in ["/", "/a", "/a/b", "/a.b", "/..x", "/été", "/a/b-0000000001"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate(""), Err(PathError::Empty));
        assert_eq!(validate("a"), Err(PathError::NotAbsolute));
        assert_eq!(validate("/a/"), Err(PathError::TrailingSlash));
        assert_eq!(validate("/a//b"), Err(PathError::EmptyComponent));
        assert_eq!(validate("/a/./b"), Err(PathError::RelativeComponent));
        assert_eq!(validate("/.."), Err(PathError::RelativeComponent));
        assert_eq!(validate("/a\u{0}b"), Err(PathError::BadCharacter));
        assert_eq!(validate("/a\u{1}b"), Err(PathError::BadCharacter));
        assert_eq!(validate("/a\u{e000}"), Err(PathError::BadCharacter));
    }

    #[test]
    fn forbidden_character_boundaries() {
        let bad = [
            '\u{1f}',
            '\u{7f}',
            '\u{9f}',
            '\u{e000}',
            '\u{f8ff}',
            '\u{fff0}',
            '\u{ffff}',
            '\u{10000}',
            '\u{1f600}',
        ];
        let good = [' ', '~', '\u{a0}', '\u{d7ff}', '\u{f900}', '\u{ffef}'];
        for c in bad {
            assert_eq!(
                validate(&format!("/a{c}")),
                Err(PathError::BadCharacter),
                "{:x}",
                c as u32
            );
        }
        for c in good {
            assert_eq!(validate(&format!("/a{c}")), Ok(()), "{:x}", c as u32);
        }
        // The jute decoder turns invalid UTF-8 into U+FFFD, which writes then reject.
        assert_eq!(validate("/a\u{fffd}"), Err(PathError::BadCharacter));
    }

    #[test]
    fn parent_name_join() {
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(name("/a/b"), "b");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
