//! Key entries: `tenant:key` (every scope) or `tenant:key:scope+scope`, from
//! `CART_API_KEYS` (comma-separated) or `CART_API_KEYS_FILE` (one a line,
//! `#` comments). Errors name the entry's place, never the key.

use std::fmt;

use crate::domain::{Scope, Scopes};

#[derive(Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub tenant: String,
    pub key: String,
    pub scopes: Scopes,
}

/// Debug never shows the key.
impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:***:{:?}", self.tenant, self.scopes)
    }
}

/// The keys of `CART_API_KEYS`.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct ApiKeys(pub Vec<KeyEntry>);

/// One entry; `place` says where it is in error messages ("entry 2", "line 7").
pub fn parse_entry(s: &str, place: &str) -> Result<KeyEntry, String> {
    let mut parts = s.split(':').map(str::trim);
    let (Some(tenant), Some(key)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "{place}: expected tenant:key or tenant:key:scope+scope"
        ));
    };
    if tenant.is_empty() || key.is_empty() {
        return Err(format!("{place}: tenant and key must both be non-empty"));
    }
    let scopes = match parts.next() {
        None => Scopes::EVERY,
        Some(list) => {
            let mut scopes = Vec::new();
            for name in list.split('+').map(str::trim) {
                let scope = Scope::parse(name).ok_or_else(|| {
                    let known: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                    format!(
                        "{place} (tenant {tenant}): unknown scope {name:?} (known: {})",
                        known.join(", ")
                    )
                })?;
                scopes.push(scope);
            }
            Scopes::of(&scopes)
        }
    };
    if parts.next().is_some() {
        return Err(format!(
            "{place} (tenant {tenant}): too many ':' (a key cannot contain ':')"
        ));
    }
    Ok(KeyEntry {
        tenant: tenant.to_string(),
        key: key.to_string(),
        scopes,
    })
}

/// `CART_API_KEYS`: entries separated by commas.
pub fn parse_list(s: &str) -> Result<ApiKeys, String> {
    let entries = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
        .map(|(i, p)| parse_entry(p, &format!("entry {}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(&entries)?;
    Ok(ApiKeys(entries))
}

/// `CART_API_KEYS_FILE`: one entry a line; blank lines and `#` comments skipped.
pub fn parse_file(text: &str) -> Result<Vec<KeyEntry>, String> {
    let entries = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| parse_entry(line, &format!("line {}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(&entries)?;
    Ok(entries)
}

/// A key given twice is a mistake that would make one tenant's key another's.
pub fn check_unique(entries: &[KeyEntry]) -> Result<(), String> {
    for (i, e) in entries.iter().enumerate() {
        if entries[..i].iter().any(|o| o.key == e.key) {
            return Err(format!("the same key is given twice (tenant {})", e.tenant));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_and_without_scopes() {
        let keys = parse_list("shop:k1, shop:k2:customer, shop:k3:read+watch").unwrap();
        assert_eq!(keys.0[0].scopes, Scopes::EVERY);
        assert_eq!(keys.0[1].scopes, Scopes::of(&[Scope::Customer]));
        assert_eq!(keys.0[2].scopes, Scopes::of(&[Scope::Read, Scope::Watch]));
        assert!(!format!("{keys:?}").contains("k1"));
    }

    #[test]
    fn bad_entries_say_where_without_the_key() {
        for bad in [
            "nocolon-secret",
            "t:secret:admin",
            "t:secret:",
            ":secret",
            "t:secret:read:x",
        ] {
            let err = parse_list(bad).unwrap_err();
            assert!(err.starts_with("entry 1"), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let err = parse_list("a:secret,b:secret").unwrap_err();
        assert!(!err.contains("secret") && err.contains("twice"), "{err}");
    }

    #[test]
    fn files_skip_comments_and_blank_lines() {
        let text = "# keys\n\nshop:k1 # the backend\nshop:k2:provider\n";
        let entries = parse_file(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key, "k1");
        let err = parse_file("shop:k1\nshop:k2:nope\n").unwrap_err();
        assert!(err.starts_with("line 2"), "{err}");
    }
}
