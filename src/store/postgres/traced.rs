//! Trace spans of Postgres statements: a child of the call's span per
//! statement, named after the statement's constant in `sql` (never its
//! text's values: the parameters are not recorded). Statements run outside
//! any call (sweeper, publisher, callback claims) make no span, so they do
//! not start traces of their own.

use tracing::Span;

use super::sql;

/// Every statement by name. A statement missing here is named `SQL`
/// (a unit test keeps the list complete).
const NAMES: &[(&str, &str)] = &[
    ("GET_CARTS", sql::GET_CARTS),
    ("GET_CART", sql::GET_CART),
    ("STAMP_CARTS", sql::STAMP_CARTS),
    ("STAMP_CART", sql::STAMP_CART),
    ("LOCK_CARTS", sql::LOCK_CARTS),
    ("GET_KEY", sql::GET_KEY),
    ("FORGET_KEY", sql::FORGET_KEY),
    ("GET_BY_REFERENCE", sql::GET_BY_REFERENCE),
    ("INSERT_CART", sql::INSERT_CART),
    ("WRITE_CART", sql::WRITE_CART),
    ("WRITE_CART_ONE_LINE", sql::WRITE_CART_ONE_LINE),
    ("WRITE_CART_PLAIN", sql::WRITE_CART_PLAIN),
    ("WRITE_CART_ONE_LINE_PLAIN", sql::WRITE_CART_ONE_LINE_PLAIN),
    ("LIST_CARTS", sql::LIST_CARTS),
    ("LIST_CUSTOMER_CARTS", sql::LIST_CUSTOMER_CARTS),
    ("LIST_STATUS_CARTS", sql::LIST_STATUS_CARTS),
    (
        "LIST_CUSTOMER_STATUS_CARTS",
        sql::LIST_CUSTOMER_STATUS_CARTS,
    ),
    ("TENANT_EVENTS", sql::TENANT_EVENTS),
    ("CART_EVENTS", sql::CART_EVENTS),
    ("CURRENT_EVENT", sql::CURRENT_EVENT),
    ("CART_AT_VERSION", sql::CART_AT_VERSION),
    ("EVENTS_BETWEEN", sql::EVENTS_BETWEEN),
    ("LAST_SEQUENCE", sql::LAST_SEQUENCE),
    ("EVENT_WRITERS", sql::EVENT_WRITERS),
    ("DUE_CARTS", sql::DUE_CARTS),
    ("FORGET_OLD_KEYS", sql::FORGET_OLD_KEYS),
    ("LOCK_COMPACTION", sql::LOCK_COMPACTION),
    ("PURGE_EVENTS", sql::PURGE_EVENTS),
    ("PURGE_CARTS", sql::PURGE_CARTS),
    ("PURGE_DELIVERIES", sql::PURGE_DELIVERIES),
    ("CLAIM_CALLBACKS", sql::CLAIM_CALLBACKS),
    ("CALLBACK_BACKLOG", sql::CALLBACK_BACKLOG),
    ("RECORD_CALLBACKS", sql::RECORD_CALLBACKS),
    ("CALLBACKS_OF", sql::CALLBACKS_OF),
];

/// The span of one execution of `query` (a constant of `sql`).
pub(super) fn statement(query: &str) -> Span {
    if !crate::telemetry::exporting() || Span::current().is_none() {
        return Span::none();
    }
    let name = name_of(query);
    tracing::info_span!(
        "db",
        otel.name = name,
        otel.kind = "client",
        db.system = "postgresql",
        db.system.name = "postgresql",
        db.operation.name = name,
    )
}

fn name_of(query: &str) -> &'static str {
    NAMES
        .iter()
        .find(|(_, text)| *text == query)
        .map_or("SQL", |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Constants of `sql` that are not statements.
    const NOT_STATEMENTS: &[&str] = &["CHANNEL", "CALLBACK_CHANNEL"];

    #[test]
    fn every_statement_has_its_name() {
        let source = [
            include_str!("sql/carts.rs"),
            include_str!("sql/events.rs"),
            include_str!("sql/upkeep.rs"),
        ];
        let consts: Vec<&str> = source
            .iter()
            .flat_map(|file| file.lines())
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split_once(':').map(|(name, _)| name))
            .filter(|name| !NOT_STATEMENTS.contains(name))
            .collect();
        assert!(consts.len() >= NAMES.len(), "{consts:?}");
        for name in consts {
            let (_, text) = NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("sql::{name} is missing from traced::NAMES"));
            assert_eq!(name_of(text), name);
        }
        assert_eq!(name_of("SELECT 1"), "SQL");
    }
}
