//! Checks of the bounded strings of a request.

use std::collections::BTreeMap;

use super::{
    error::{FieldViolation, Reason},
    limits::{MAX_MAP_ENTRIES, MAX_MAP_KEY_CHARS, MAX_MAP_VALUE_CHARS, MAX_SKU_CHARS},
};

/// Free text: at most `max` characters, no control characters except
/// newlines and tabs.
pub fn check_text(value: &str, field: &str, max: usize) -> Result<(), FieldViolation> {
    let n = value.chars().count();
    if n > max {
        return Err(FieldViolation::new(
            field,
            Reason::InvalidField,
            format!("is {n} characters long, more than {max}"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(FieldViolation::new(
            field,
            Reason::InvalidField,
            "contains control characters",
        ));
    }
    Ok(())
}

/// An identifier-like string (customer id, reference, channel): free text
/// without line breaks, tabs or surrounding spaces.
pub fn check_token(value: &str, field: &str, max: usize) -> Result<(), FieldViolation> {
    check_text(value, field, max)?;
    if value.chars().any(char::is_control) || value.trim() != value {
        return Err(FieldViolation::new(
            field,
            Reason::InvalidField,
            "must not contain control characters or surrounding spaces",
        ));
    }
    Ok(())
}

/// An SKU: 1..=128 visible characters (no spaces, no control characters).
pub fn check_sku(value: &str, field: &str) -> Result<(), FieldViolation> {
    let n = value.chars().count();
    let why = if n == 0 {
        "is required".to_string()
    } else if n > MAX_SKU_CHARS {
        format!("is {n} characters long, more than {MAX_SKU_CHARS}")
    } else if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "must be visible characters only (no spaces or control characters)".to_string()
    } else {
        return Ok(());
    };
    Err(FieldViolation::new(field, Reason::InvalidSku, why))
}

/// A metadata or attributes map: bounded entries, non-empty bounded keys.
pub fn check_map(map: &BTreeMap<String, String>, field: &str) -> Result<(), FieldViolation> {
    if map.len() > MAX_MAP_ENTRIES {
        return Err(FieldViolation::new(
            field,
            Reason::InvalidField,
            format!("has {} entries, more than {MAX_MAP_ENTRIES}", map.len()),
        ));
    }
    for (k, v) in map {
        if k.is_empty() {
            return Err(FieldViolation::new(
                field,
                Reason::InvalidField,
                "has an empty key",
            ));
        }
        check_token(k, &format!("{field}[{k:?}]"), MAX_MAP_KEY_CHARS)?;
        check_text(v, &format!("{field}[{k:?}]"), MAX_MAP_VALUE_CHARS)?;
    }
    Ok(())
}

/// A callback URL: empty, or an absolute http(s) URL with a host.
pub fn check_url(value: &str, field: &str, max: usize) -> Result<(), FieldViolation> {
    if value.is_empty() {
        return Ok(());
    }
    check_token(value, field, max)?;
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| {
            FieldViolation::new(
                field,
                Reason::InvalidField,
                "must be an http:// or https:// URL",
            )
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(FieldViolation::new(
            field,
            Reason::InvalidField,
            "must be an absolute URL with a host",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus() {
        assert!(check_sku("ABC-123", "s").is_ok());
        assert!(check_sku(&"x".repeat(128), "s").is_ok());
        for bad in ["", "a b", "a\u{0}", "\t", &"x".repeat(129)] {
            assert_eq!(
                check_sku(bad, "s").unwrap_err().reason,
                Reason::InvalidSku,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn text_and_tokens() {
        assert!(check_text("two\nlines", "d", 20).is_ok());
        assert!(check_text("bell\u{7}", "d", 20).is_err());
        assert!(check_text("é".repeat(5).as_str(), "d", 5).is_ok());
        assert!(check_text("é".repeat(6).as_str(), "d", 5).is_err());
        assert!(check_token(" padded", "c", 20).is_err());
        assert!(check_token("a\nb", "c", 20).is_err());
    }

    #[test]
    fn urls() {
        assert!(check_url("", "u", 100).is_ok());
        assert!(check_url("https://pay.example/cb?x=1", "u", 100).is_ok());
        for bad in [
            "ftp://x",
            "https://",
            "javascript:alert(1)",
            "http:///path",
            "https://a b",
        ] {
            assert!(check_url(bad, "u", 100).is_err(), "{bad}");
        }
    }
}
