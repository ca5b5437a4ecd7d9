//! Money: ISO 4217 currencies with their minor unit, and exact decimal
//! amounts that never hold more decimals than their currency allows.

use std::{fmt, str::FromStr};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::error::{FieldViolation, Reason};

/// The largest amount accepted for one unit price (1e12).
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0);

/// An ISO 4217 currency that has a minor unit (so not XXX, XAU, XTS...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Case-insensitive parse of an alphabetic ISO 4217 code.
    pub fn parse(code: &str) -> Option<Currency> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        let c = iso_currency::Currency::from_code(&code.to_ascii_uppercase())?;
        c.exponent()?;
        Some(Currency(c))
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Number of decimals of the minor unit (USD 2, ISK 0, BHD 3).
    pub fn minor_unit(self) -> u32 {
        self.0.exponent().map_or(0, u32::from)
    }

    /// The amount written with exactly this currency's decimals ("0.30", "1500").
    pub fn format(self, amount: Decimal) -> String {
        let mut out = String::with_capacity(16);
        self.format_to(amount, &mut out);
        out
    }

    /// As [`Currency::format`], appended to `out`.
    pub fn format_to(self, amount: Decimal, out: &mut String) {
        let scale = self.minor_unit();
        let mut a = amount.round_dp(scale);
        a.rescale(scale);
        fixed_point(a, scale as usize, out)
    }

    /// Checks that an amount fits this currency's minor unit.
    pub fn check_scale(self, amount: Amount, field: &str) -> Result<Decimal, FieldViolation> {
        if amount.0.normalize().scale() > self.minor_unit() {
            return Err(FieldViolation::new(
                field,
                Reason::InvalidAmount,
                format!(
                    "{} has more decimals than {} allows ({})",
                    amount.0,
                    self.code(),
                    self.minor_unit()
                ),
            ));
        }
        Ok(amount.0)
    }
}

/// `a` (at scale `scale`) as `Decimal`'s `Display` writes it, digits put
/// together by `itoa` instead of the formatting machinery: every answer
/// formats three amounts a line, and `Display` was ~12% of the server's CPU
/// for a 300-line cart.
fn fixed_point(a: Decimal, scale: usize, out: &mut String) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(a.mantissa().unsigned_abs());
    let (whole, fraction) = digits.split_at(digits.len().saturating_sub(scale));
    if a.is_sign_negative() {
        out.push('-');
    }
    out.push_str(if whole.is_empty() { "0" } else { whole });
    if scale > 0 {
        out.push('.');
        out.extend(std::iter::repeat_n('0', scale - fraction.len()));
        out.push_str(fraction);
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::parse(&s).ok_or_else(|| format!("unknown currency {s:?}"))
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_string()
    }
}

/// A non-negative decimal amount of at most 1e12, written as plain digits
/// with an optional fraction ("5.99", "1500"). Its fit to a currency is
/// checked separately, once the currency is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub Decimal);

impl Amount {
    pub fn parse(s: &str, field: &str) -> Result<Amount, FieldViolation> {
        let bad =
            |why: &str| FieldViolation::new(field, Reason::InvalidAmount, format!("{s:?} {why}"));
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
            return Err(bad("is not a decimal amount like \"5.99\""));
        }
        if int.len() > 13 || frac.len() > 20 {
            return Err(bad("is too large or too precise"));
        }
        let d = Decimal::from_str(s).map_err(|_| bad("is not a decimal amount"))?;
        if d > MAX_AMOUNT {
            return Err(bad("is above the limit of 1000000000000"));
        }
        Ok(Amount(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn minor_units_follow_iso_4217() {
        for (code, unit) in [("USD", 2), ("ISK", 0), ("JPY", 0), ("BHD", 3), ("eur", 2)] {
            assert_eq!(Currency::parse(code).unwrap().minor_unit(), unit, "{code}");
        }
    }

    #[test]
    fn codes_without_a_minor_unit_or_unknown_are_refused() {
        for code in ["XXX", "XAU", "XTS", "ABC", "US", "USDD", "", "U$D"] {
            assert!(Currency::parse(code).is_none(), "{code}");
        }
    }

    #[test]
    fn sums_are_exact() {
        let a = Amount::parse("0.10", "a").unwrap().0 + Amount::parse("0.20", "b").unwrap().0;
        assert_eq!(usd().format(a), "0.30");
        assert_eq!(
            Currency::parse("ISK").unwrap().format(Decimal::from(1500)),
            "1500"
        );
        assert_eq!(
            Currency::parse("BHD").unwrap().format(Decimal::new(15, 1)),
            "1.500"
        );
    }

    /// The fast writer answers what `Decimal`'s `Display` wrote, for any
    /// mantissa, sign and scale (negative zero included).
    #[test]
    fn fixed_point_writes_what_display_wrote() {
        use proptest::prelude::*;
        let display = |a: Decimal| a.to_string();
        let fixed_point = |a: Decimal, scale: usize| {
            let mut out = "x".to_string();
            super::fixed_point(a, scale, &mut out);
            out.split_off(1)
        };
        for (m, scale) in [
            (0i64, 0u32),
            (0, 2),
            (5, 2),
            (-5, 3),
            (150, 0),
            (-1, 0),
            (99, 2),
        ] {
            let a = Decimal::new(m, scale);
            assert_eq!(fixed_point(a, scale as usize), display(a), "{m} e-{scale}");
        }
        let negative_zero = -Decimal::new(0, 2);
        assert_eq!(fixed_point(negative_zero, 2), display(negative_zero));
        proptest!(|(m in any::<i64>(), hi in any::<u32>(), scale in 0u32..=4, negative in any::<bool>())| {
            let a = Decimal::from_i128_with_scale(
                (i128::from(hi) << 64 | i128::from(m.unsigned_abs())) * if negative { -1 } else { 1 },
                scale,
            );
            prop_assert_eq!(fixed_point(a, scale as usize), display(a));
        });
    }

    #[test]
    fn scale_is_checked_against_the_currency() {
        let f = |s: &str, c: &str| {
            Currency::parse(c)
                .unwrap()
                .check_scale(Amount::parse(s, "x").unwrap(), "x")
        };
        assert!(f("1.005", "USD").is_err());
        assert!(f("10.5", "ISK").is_err());
        assert!(
            f("1.500", "USD").is_ok(),
            "trailing zeros are not extra precision"
        );
        assert!(f("1.005", "BHD").is_ok());
        assert!(f("10", "ISK").is_ok());
    }

    #[test]
    fn malformed_amounts_are_refused() {
        for s in [
            "",
            "-1",
            "-0",
            "+1",
            "1e3",
            "1e400",
            "NaN",
            "inf",
            " 1",
            "1.",
            ".5",
            "1,5",
            "0x10",
            "1000000000000.01",
            "99999999999999",
        ] {
            let e = Amount::parse(s, "items[0].unit_price").unwrap_err();
            assert_eq!(e.reason, Reason::InvalidAmount, "{s}");
            assert_eq!(e.field, "items[0].unit_price");
        }
        assert_eq!(Amount::parse("1000000000000", "x").unwrap().0, MAX_AMOUNT);
        assert_eq!(Amount::parse("0", "x").unwrap().0, Decimal::ZERO);
    }
}
