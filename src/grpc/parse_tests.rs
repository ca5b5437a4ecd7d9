//! Unit tests of request parsing (kept beside it, in their own file).

use super::*;

#[test]
fn callback_hosts() {
    let allowed = vec!["pay.example".to_string(), "127.0.0.1".to_string()];
    assert!(url_host_allowed("https://pay.example/cb", &allowed));
    assert!(url_host_allowed("http://127.0.0.1:8080/x", &allowed));
    assert!(url_host_allowed("https://user@PAY.example:443/", &allowed));
    assert!(!url_host_allowed(
        "https://evil.example/pay.example",
        &allowed
    ));
    assert!(!url_host_allowed("https://pay.example.evil.com/", &allowed));
}

#[test]
fn page_tokens_round_trip() {
    let c = PageCursor {
        created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        id: Uuid::new_v4(),
    };
    assert_eq!(parse_page_token(&page_token(&c)).unwrap(), Some(c));
    for bad in ["x", "1.2", "abc.00000000-0000-0000-0000-000000000000"] {
        assert!(parse_page_token(bad).is_err());
    }
}

#[test]
fn progress_intervals() {
    let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
    assert_eq!(progress_interval(None).unwrap(), None);
    assert_eq!(progress_interval(Some(&d(0, 0))).unwrap(), None);
    assert_eq!(
        progress_interval(Some(&d(0, 100_000_000))).unwrap(),
        Some(MIN_PROGRESS_INTERVAL)
    );
    assert_eq!(
        progress_interval(Some(&d(3600, 0))).unwrap(),
        Some(MAX_PROGRESS_INTERVAL)
    );
    for bad in [
        d(-1, 0),
        d(0, -1),
        d(0, 99_999_999),
        d(3600, 1),
        d(i64::MAX, 0),
        d(i64::MIN, 0),
        d(0, 1_000_000_000),
        d(0, i32::MIN),
        d(1, -1),
    ] {
        let Err(CartError::Invalid(v)) = progress_interval(Some(&bad)) else {
            panic!("{bad:?} accepted")
        };
        assert_eq!(v[0].field, "progress_interval");
        assert_eq!(v[0].reason, Reason::InvalidField);
    }
}

#[test]
fn every_bad_item_field_is_named() {
    let bad = proto::ItemInput {
        sku: String::new(),
        quantity: 0,
        unit_price: "1e3".into(),
        ..Default::default()
    };
    let Err(CartError::Invalid(v)) = items(&[bad], false) else {
        panic!()
    };
    let fields: Vec<_> = v.iter().map(|v| (v.field.as_str(), v.reason)).collect();
    assert_eq!(
        fields,
        [
            ("items[0].unit_price", Reason::InvalidAmount),
            ("items[0].sku", Reason::InvalidSku),
            ("items[0].quantity", Reason::InvalidQuantity),
        ]
    );
}
