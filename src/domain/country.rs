//! ISO 3166-1 alpha-2 country codes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country(isocountry::CountryCode);

impl Country {
    /// Case-insensitive parse of an assigned alpha-2 code.
    pub fn parse(code: &str) -> Option<Country> {
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        isocountry::CountryCode::for_alpha2_caseless(code)
            .ok()
            .map(Country)
    }

    pub fn code(self) -> &'static str {
        self.0.alpha2()
    }
}

impl TryFrom<String> for Country {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Country::parse(&s).ok_or_else(|| format!("unknown country {s:?}"))
    }
}

impl From<Country> for String {
    fn from(c: Country) -> String {
        c.code().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha2_codes() {
        assert_eq!(Country::parse("is").unwrap().code(), "IS");
        assert_eq!(Country::parse("US").unwrap().code(), "US");
        for bad in ["", "ZZ", "USA", "U1", "XX"] {
            assert!(Country::parse(bad).is_none(), "{bad}");
        }
    }
}
