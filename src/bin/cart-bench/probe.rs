//! Reading the server from outside: its /metrics gauges over plain HTTP, and
//! the trend of a sampled series.

use super::*;

/// The body of `GET /metrics` from the server's operations port.
pub(crate) async fn scrape(addr: &str) -> anyhow::Result<String> {
    let addr = addr.to_string();
    // A blocking one-shot GET: one request every few milliseconds at most,
    // and it keeps the bench free of an HTTP client of its own.
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(&addr)
            .with_context(|| format!("connecting to metrics at {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .context("metrics answer has no body")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("metrics answered {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_string())
    })
    .await?
}

/// The value of an unlabelled sample `name` in an OpenMetrics text.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls /metrics until `cart_watch_streams_open` reads 0; answers how long
/// after `since` that was first seen (None: not within `patience`).
pub(crate) async fn streams_drained(
    addr: &str,
    since: Instant,
    patience: Duration,
) -> anyhow::Result<Option<Duration>> {
    loop {
        let text = scrape(addr).await?;
        let open = metric(&text, "cart_watch_streams_open").context("no open-streams gauge")?;
        if open == 0.0 {
            return Ok(Some(since.elapsed()));
        }
        if since.elapsed() > patience {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Theil-Sen slope (median of the pairwise slopes): a trend that one noisy
/// sample (a compile next door) cannot tilt the way least squares can.
pub(crate) fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    Some(slopes[slopes.len() / 2])
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theil_sen_ignores_one_outlier() {
        let mut pts: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 2.0 * i as f64)).collect();
        pts[10].1 = 1000.0;
        assert_eq!(theil_sen(&pts), Some(2.0));
        assert_eq!(theil_sen(&pts[..1]), None);
    }

    #[test]
    fn metric_reads_unlabelled_samples_only() {
        let text = "# HELP x\ncart_watch_streams_open 3\ncart_watch_streams_open_x 9\n";
        assert_eq!(metric(text, "cart_watch_streams_open"), Some(3.0));
        assert_eq!(metric(text, "missing"), None);
    }
}
