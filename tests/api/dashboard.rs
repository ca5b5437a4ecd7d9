//! The Grafana dashboard (ops/grafana/cart-service.json) queries only
//! metrics that the service exports: every metric name in its queries is
//! checked against a real scrape of /metrics.

use std::collections::BTreeSet;

use cart_service::proto::GetCartRequest;

use crate::helpers::{Backend, create_cart, http_get, item, spawn_app};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/grafana/cart-service.json");

/// Every PromQL expression of the dashboard: panel targets and template variables.
fn queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(q) = var["query"]["query"].as_str() {
            out.push(q.to_string());
        }
    }
    out
}

/// The metric names a query reads: identifiers starting with `cart_`.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("cart_") {
        // Only at the start of an identifier (not inside a label value).
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !matches!(before, Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '"') {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_reads_exported_metrics() {
    let text = std::fs::read_to_string(DASHBOARD).expect("the dashboard file");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let queries = queries(&dashboard);
    assert!(queries.len() >= 10, "{queries:?}");

    // Postgres, so that the pool gauges are real; calls, so that the
    // per-method series exist.
    let app = spawn_app(Backend::Postgres).await;
    let mut client = app.client.clone();
    create_cart(&mut client, vec![item("A", 1, "1.00")]).await;
    let missing = GetCartRequest {
        cart_id: uuid::Uuid::new_v4().to_string(),
    };
    assert!(client.get_cart(missing).await.is_err());
    let (status, scrape) = http_get(app.metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    assert!(exported.contains("cart_rpc_requests_total"), "{scrape}");

    for query in &queries {
        let names = metric_names(query);
        assert!(!names.is_empty(), "a query of no service metric: {query}");
        for name in names {
            assert!(
                exported.contains(name.as_str()),
                "{name} (in {query}) is not in /metrics: {exported:?}"
            );
        }
    }
}

#[test]
fn metric_names_are_found_outside_label_values() {
    assert_eq!(
        metric_names(r#"sum(rate(cart_a_total{x="cart_b"}[1m])) / cart_c"#),
        ["cart_a_total", "cart_c"]
    );
}
