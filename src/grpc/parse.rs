//! Proto -> domain: parses requests into checked domain values, collecting
//! every bad field so that one answer names them all.

use std::{collections::BTreeMap, time::Duration};

use chrono::DateTime;
use uuid::Uuid;

use crate::{
    domain::{
        Actor, Amount, CartError, CartStatus, ConfirmationType, Country, Currency, FieldViolation,
        ItemInput, MergeStrategy, NewCart, Reason,
        command::check_items,
        error::Violations,
        limits::{
            DEFAULT_PAGE_SIZE, MAX_CHANNEL_CHARS, MAX_DESCRIPTION_CHARS, MAX_ID_CHARS,
            MAX_PAGE_SIZE, MAX_REASON_CHARS, MAX_URL_CHARS,
        },
        text::{check_map, check_text, check_token, check_url},
    },
    ports::PageCursor,
    proto,
};

/// Whether an http(s) URL names one of `allowed` hosts (exact, case-insensitive).
pub fn url_host_allowed(url: &str, allowed: &[String]) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    allowed.iter().any(|a| a.eq_ignore_ascii_case(host))
}

/// A required cart id.
pub fn cart_id(s: &str, field: &str) -> Result<Uuid, CartError> {
    optional_cart_id(s, field)?
        .ok_or_else(|| CartError::invalid(field, Reason::InvalidField, "is required"))
}

/// A cart id that may be left empty.
pub fn optional_cart_id(s: &str, field: &str) -> Result<Option<Uuid>, CartError> {
    if s.is_empty() {
        return Ok(None);
    }
    Uuid::try_parse(s)
        .map(Some)
        .map_err(|_| CartError::invalid(field, Reason::InvalidField, "is not a UUID"))
}

pub fn expected_version(v: i64) -> Result<i64, CartError> {
    if v < 0 {
        return Err(CartError::invalid(
            "expected_version",
            Reason::InvalidField,
            "must not be negative",
        ));
    }
    Ok(v)
}

fn enum_field<T>(
    value: i32,
    field: &str,
    known: impl FnOnce(i32) -> Option<T>,
) -> Result<T, FieldViolation> {
    known(value).ok_or_else(|| {
        FieldViolation::new(
            field,
            Reason::InvalidField,
            format!("{value} is not a known value"),
        )
    })
}

pub fn actor(value: i32, required: bool) -> Result<Option<Actor>, CartError> {
    let a = enum_field(value, "actor", |v| proto::Actor::try_from(v).ok())
        .map_err(|v| CartError::Invalid(vec![v]))?;
    match a {
        proto::Actor::Customer => Ok(Some(Actor::Customer)),
        proto::Actor::Provider => Ok(Some(Actor::Provider)),
        proto::Actor::Unspecified if required => Err(CartError::invalid(
            "actor",
            Reason::InvalidField,
            "is required: ACTOR_CUSTOMER or ACTOR_PROVIDER",
        )),
        proto::Actor::Unspecified => Ok(None),
    }
}

pub fn merge_strategy(value: i32) -> Result<MergeStrategy, CartError> {
    let s = enum_field(value, "strategy", |v| {
        proto::MergeStrategy::try_from(v).ok()
    })
    .map_err(|v| CartError::Invalid(vec![v]))?;
    Ok(match s {
        proto::MergeStrategy::KeepSource => MergeStrategy::KeepSource,
        _ => MergeStrategy::CombineItems,
    })
}

pub fn statuses(values: &[i32]) -> Result<Vec<CartStatus>, CartError> {
    let mut v = Violations::default();
    let mut out = Vec::new();
    for (i, s) in values.iter().enumerate() {
        let field = format!("statuses[{i}]");
        let parsed = enum_field(*s, &field, |n| {
            match proto::CartStatus::try_from(n).ok()? {
                proto::CartStatus::Unspecified => None,
                p => CartStatus::parse(p.as_str_name().trim_start_matches("CART_STATUS_")),
            }
        });
        out.extend(v.check(parsed));
    }
    v.into_result()?;
    Ok(out)
}

fn amount(s: &str, field: &str) -> Result<Amount, FieldViolation> {
    Amount::parse(s, field)
}

/// Items as callers send them, checked for shape.
pub fn items(input: &[proto::ItemInput], allow_zero: bool) -> Result<Vec<ItemInput>, CartError> {
    let mut v = Violations::default();
    let mut out = Vec::with_capacity(input.len());
    for (i, it) in input.iter().enumerate() {
        let unit = v.check(amount(&it.unit_price, &format!("items[{i}].unit_price")));
        let list = if it.list_price.is_empty() {
            Some(None)
        } else {
            v.check(amount(&it.list_price, &format!("items[{i}].list_price")))
                .map(Some)
        };
        out.push(ItemInput {
            sku: it.sku.clone(),
            name: it.name.clone(),
            quantity: it.quantity,
            unit_price: unit.unwrap_or(Amount(Default::default())),
            list_price: list.flatten(),
            attributes: it.attributes.clone(),
        });
    }
    check_items(&out, "items", allow_zero, &mut v);
    v.into_result()?;
    Ok(out)
}

pub fn country(s: &str, field: &str) -> Result<Option<Country>, FieldViolation> {
    if s.is_empty() {
        return Ok(None);
    }
    Country::parse(s).map(Some).ok_or_else(|| {
        FieldViolation::new(
            field,
            Reason::InvalidCountry,
            format!("{s:?} is not an ISO 3166-1 alpha-2 code"),
        )
    })
}

pub fn currency(s: &str, default: Currency) -> Result<Currency, FieldViolation> {
    if s.is_empty() {
        return Ok(default);
    }
    Currency::parse(s).ok_or_else(|| {
        FieldViolation::new(
            "currency",
            Reason::InvalidCurrency,
            format!("{s:?} is not an ISO 4217 currency code"),
        )
    })
}

fn confirmation_type(value: i32) -> Result<ConfirmationType, FieldViolation> {
    let t = enum_field(value, "confirmation_type", |v| {
        proto::ConfirmationType::try_from(v).ok()
    })?;
    Ok(match t {
        proto::ConfirmationType::ServerCallback => ConfirmationType::ServerCallback,
        proto::ConfirmationType::Manual => ConfirmationType::Manual,
        _ => ConfirmationType::Automatic,
    })
}

pub fn new_cart(
    r: &proto::CreateCartRequest,
    default_currency: Currency,
) -> Result<NewCart, CartError> {
    let mut v = Violations::default();
    let items = match items(&r.items, false) {
        Ok(items) => items,
        Err(CartError::Invalid(bad)) => {
            bad.into_iter().for_each(|b| v.push(b));
            Vec::new()
        }
        Err(other) => return Err(other),
    };
    let currency = v.check(currency(&r.currency, default_currency));
    let country = v.check(country(&r.country, "country"));
    let confirmation_type = v.check(confirmation_type(r.confirmation_type));
    v.check(check_token(&r.customer_id, "customer_id", MAX_ID_CHARS));
    v.check(check_token(&r.reference, "reference", MAX_ID_CHARS));
    v.check(check_token(&r.channel, "channel", MAX_CHANNEL_CHARS));
    v.check(check_text(
        &r.description,
        "description",
        MAX_DESCRIPTION_CHARS,
    ));
    v.check(check_map(&r.metadata, "metadata"));
    v.check(check_url(&r.callback_url, "callback_url", MAX_URL_CHARS));
    v.check(check_url(
        &r.callback_cancel_url,
        "callback_cancel_url",
        MAX_URL_CHARS,
    ));
    v.into_result()?;
    let (Some(currency), Some(country), Some(confirmation_type)) =
        (currency, country, confirmation_type)
    else {
        return Err(CartError::internal("checked fields missing"));
    };
    Ok(NewCart {
        customer_id: r.customer_id.clone(),
        reference: r.reference.clone(),
        currency,
        country,
        channel: if r.channel.is_empty() {
            "default".into()
        } else {
            r.channel.clone()
        },
        description: r.description.clone(),
        metadata: r.metadata.clone(),
        confirmation_type,
        callback_url: r.callback_url.clone(),
        callback_cancel_url: r.callback_cancel_url.clone(),
        items,
    })
}

pub fn details(r: &proto::UpdateCartRequest) -> Result<crate::domain::Details, CartError> {
    let mut v = Violations::default();
    if let Some(c) = &r.customer_id {
        v.check(check_token(c, "customer_id", MAX_ID_CHARS));
    }
    let country = r.country.as_deref().map(|c| v.check(country(c, "country")));
    if let Some(d) = &r.description {
        v.check(check_text(d, "description", MAX_DESCRIPTION_CHARS));
    }
    for (field, url) in [
        ("callback_url", &r.callback_url),
        ("callback_cancel_url", &r.callback_cancel_url),
    ] {
        if let Some(u) = url {
            v.check(check_url(u, field, MAX_URL_CHARS));
        }
    }
    v.check(check_map(&r.metadata, "metadata"));
    if r.clear_metadata && !r.metadata.is_empty() {
        v.push(FieldViolation::new(
            "clear_metadata",
            Reason::InvalidField,
            "cannot be set together with metadata",
        ));
    }
    v.into_result()?;
    let metadata = if r.clear_metadata {
        Some(BTreeMap::new())
    } else {
        (!r.metadata.is_empty()).then(|| r.metadata.clone())
    };
    let d = crate::domain::Details {
        customer_id: r.customer_id.clone(),
        country: country.map(|c| c.flatten()),
        description: r.description.clone(),
        callback_url: r.callback_url.clone(),
        callback_cancel_url: r.callback_cancel_url.clone(),
        metadata,
    };
    if d.is_empty() {
        return Err(CartError::invalid(
            "cart_id",
            Reason::InvalidField,
            "the request changes nothing: set at least one detail",
        ));
    }
    Ok(d)
}

pub fn skus(list: &[String]) -> Result<Vec<String>, CartError> {
    let mut v = Violations::default();
    if list.is_empty() {
        v.push(FieldViolation::new(
            "skus",
            Reason::InvalidSku,
            "is required",
        ));
    }
    for (i, s) in list.iter().enumerate() {
        v.check(crate::domain::text::check_sku(s, &format!("skus[{i}]")));
    }
    v.into_result()?;
    Ok(list.to_vec())
}

pub fn expected_total(s: &str) -> Result<Option<Amount>, CartError> {
    if s.is_empty() {
        return Ok(None);
    }
    amount(s, "expected_total")
        .map(Some)
        .map_err(|v| CartError::Invalid(vec![v]))
}

pub fn cancel_reason(s: &str) -> Result<String, CartError> {
    check_text(s, "reason", MAX_REASON_CHARS).map_err(|v| CartError::Invalid(vec![v]))?;
    Ok(s.to_string())
}

pub fn customer_id(s: &str) -> Result<String, CartError> {
    check_token(s, "customer_id", MAX_ID_CHARS).map_err(|v| CartError::Invalid(vec![v]))?;
    Ok(s.to_string())
}

pub fn page_size(n: i32) -> Result<usize, CartError> {
    match n {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1.. if n as usize <= MAX_PAGE_SIZE => Ok(n as usize),
        _ => Err(CartError::invalid(
            "page_size",
            Reason::InvalidField,
            format!("must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"),
        )),
    }
}

/// The shortest progress interval: markers more often than this would cost
/// more than they tell.
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// The longest: past it a client's liveness check means nothing.
pub const MAX_PROGRESS_INTERVAL: Duration = Duration::from_secs(3600);

/// WatchCarts' `progress_interval`: None when unset or zero (no markers).
pub fn progress_interval(d: Option<&prost_types::Duration>) -> Result<Option<Duration>, CartError> {
    let Some(d) = d else { return Ok(None) };
    let bad = |why: &str| CartError::invalid("progress_interval", Reason::InvalidField, why);
    // A Duration's parts share one sign and nanos stay below a second.
    if d.nanos.unsigned_abs() >= 1_000_000_000
        || (d.seconds != 0 && d.nanos != 0 && (d.seconds < 0) != (d.nanos < 0))
    {
        return Err(bad("is not a valid duration"));
    }
    if d.seconds < 0 || d.nanos < 0 {
        return Err(bad("must not be negative"));
    }
    let d = Duration::new(d.seconds as u64, d.nanos as u32);
    if d.is_zero() {
        return Ok(None);
    }
    if d < MIN_PROGRESS_INTERVAL || d > MAX_PROGRESS_INTERVAL {
        return Err(bad(
            "must be between 100ms and 1h (0 or unset: no progress markers)",
        ));
    }
    Ok(Some(d))
}

/// Page tokens are `<created_at micros>.<cart id>` of the last cart shown.
pub fn page_token(c: &PageCursor) -> String {
    format!("{}.{}", c.created_at.timestamp_micros(), c.id)
}

pub fn parse_page_token(s: &str) -> Result<Option<PageCursor>, CartError> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || {
        CartError::invalid(
            "page_token",
            Reason::InvalidField,
            "is not a token this service gave",
        )
    };
    let (micros, id) = s.split_once('.').ok_or_else(bad)?;
    let created_at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    let id = Uuid::try_parse(id).map_err(|_| bad())?;
    Ok(Some(PageCursor { created_at, id }))
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
