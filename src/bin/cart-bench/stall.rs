//! Deadlines with Postgres stalled (issue 12).
//!
//! `pg-proxy` is a loopback TCP proxy for the server's DATABASE_URL that
//! stops forwarding on SIGUSR1 (connections stay open, bytes are held: a
//! stalled store) and forwards again on SIGUSR2. `deadlines` drives
//! AddItems closed-loop with `--deadline` (100 ms) through three phases:
//! `--warmup` with the store well, `--duration` with the proxy stalled,
//! `--after` with it forwarding again. Per phase it reports how long each
//! call took (every outcome, from the client's side) and how it ended,
//! the server's own durations for AddItems (its histogram, by bucket), and
//! the pool gauges sampled every 50 ms from /metrics: whether abandoned
//! work fills the pool while stalled, and how soon it drains after.
//!
//! The tonic client enforces the deadline itself too (it answers CANCELLED
//! "Timeout expired" at the deadline), so the client-side durations cannot
//! exceed it by much; which side answered first is in the codes: a server
//! answer is `DEADLINE_EXCEEDED`, the client's timer `client-timeout`.

use std::collections::BTreeMap;

use tokio::{
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use super::*;

/// Runs the proxy until killed; prints its address first.
pub(crate) async fn pg_proxy(args: &Args) -> anyhow::Result<serde_json::Value> {
    let listener = TcpListener::bind(&args.proxy_listen)
        .await
        .with_context(|| format!("binding {}", args.proxy_listen))?;
    let upstream = args.proxy_upstream.clone();
    println!("proxy listening on {}", listener.local_addr()?);
    let (paused, _) = watch::channel(false);
    let (mut stall, mut resume) = (
        signal(SignalKind::user_defined1())?,
        signal(SignalKind::user_defined2())?,
    );
    let control = paused.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stall.recv() => { control.send_replace(true); eprintln!("proxy: stalled"); }
                _ = resume.recv() => { control.send_replace(false); eprintln!("proxy: forwarding"); }
            }
        }
    });
    loop {
        let (inbound, _) = listener.accept().await?;
        let (paused, upstream) = (paused.subscribe(), upstream.clone());
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::join!(pump(ri, wo, paused.clone()), pump(ro, wi, paused));
        });
    }
}

/// Copies one direction, holding each chunk while the proxy is stalled.
async fn pump(from: OwnedReadHalf, to: OwnedWriteHalf, mut paused: watch::Receiver<bool>) {
    use std::io::ErrorKind::WouldBlock;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == WouldBlock => continue,
            Err(_) => return,
        };
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let mut done = 0;
        while done < n {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&buf[done..n]) {
                Ok(k) => done += k,
                Err(e) if e.kind() == WouldBlock => continue,
                Err(_) => return,
            }
        }
    }
}

const PHASES: [&str; 3] = ["before", "stalled", "after"];

/// One phase's calls: durations of every call, outcomes.
#[derive(Default)]
struct Phase {
    all: Option<Histogram<u64>>,
    codes: BTreeMap<String, u64>,
    over_150ms: u64,
}

impl Phase {
    fn add(&mut self, d: Duration, outcome: String) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        self.all.get_or_insert_with(histogram).record(us).ok();
        *self.codes.entry(outcome).or_default() += 1;
        self.over_150ms += u64::from(d > Duration::from_millis(150));
    }
    fn merge(&mut self, o: Phase) {
        if let Some(h) = o.all {
            self.all.get_or_insert_with(histogram).add(h).ok();
        }
        for (k, v) in o.codes {
            *self.codes.entry(k).or_default() += v;
        }
        self.over_150ms += o.over_150ms;
    }
}

fn kill(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill {sig} {pid} failed");
    Ok(())
}

/// AddItems duration buckets of the server (summed over codes), by `le`.
fn server_buckets(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("cart_rpc_duration_seconds_bucket{") else {
            continue;
        };
        if !rest.contains(r#"method="cart.v1.CartService/AddItems""#) {
            continue;
        }
        let Some(le) = rest.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *out.entry(le.to_string()).or_default() += v;
    }
    out
}

/// Pool use from /metrics: (in use, waiting, size).
fn pool(text: &str) -> Option<(f64, f64, f64)> {
    let size = probe::metric(text, "cart_db_pool_connections")?;
    let available = probe::metric(text, "cart_db_pool_available_connections")?;
    let waiting = probe::metric(text, "cart_db_pool_waiting_calls").unwrap_or(0.0);
    Some((size - available, waiting, size))
}

pub(crate) async fn deadlines(ctx: Arc<Ctx>) -> anyhow::Result<serde_json::Value> {
    let args = &ctx.args;
    let proxy = args.proxy_pid.context("deadlines needs --proxy-pid")?;
    let metrics_addr = args
        .metrics_addr
        .clone()
        .context("deadlines needs --metrics-addr")?;
    anyhow::ensure!(args.deadline.is_some(), "deadlines needs --deadline");
    let begin = Instant::now();
    let stall_at = begin + args.warmup;
    let resume_at = stall_at + args.duration;
    let end = resume_at + args.after;
    let phase_of = move |t: Instant| usize::from(t >= stall_at) + usize::from(t >= resume_at);

    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = ctx.client(w);
            let mut rng = Rng::new(ctx.args.seed.wrapping_add(w as u64 * 7919));
            let mut phases: [Phase; 3] = Default::default();
            while Instant::now() < end {
                let started = Instant::now();
                let r = proto::AddItemsRequest {
                    cart_id: ctx.carts[rng.below(ctx.carts.len())].clone(),
                    items: vec![item(&mut rng, ctx.args.skus)],
                    expected_version: 0,
                    request_id: String::new(),
                };
                let res = c.add_items(ctx.req(r)).await;
                let took = started.elapsed();
                let outcome = match &res {
                    Ok(_) => "OK".to_string(),
                    Err(e)
                        if e.code() == Code::Cancelled
                            && e.message().contains("Timeout expired") =>
                    {
                        "client-timeout".to_string()
                    }
                    Err(e) => format!("{:?}", e.code()),
                };
                phases[phase_of(started)].add(took, outcome);
                if let Err(e) = &res
                    && e.code() == Code::ResourceExhausted
                {
                    // The same backoff as the overload scenario.
                    let mut scratch = Stats::default();
                    ctx.failed(&mut rng, &mut scratch, "add-items", e).await;
                }
            }
            phases
        }));
    }

    // The conductor: stalls and resumes the proxy, samples the pool and the
    // server's histogram at each phase boundary.
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    let mut buckets = vec![server_buckets(&probe::scrape(&metrics_addr).await?)];
    let mut stalled = false;
    let mut resumed = false;
    let mut pool_back: Option<f64> = None;
    let mut last_scrape = None;
    loop {
        let now = Instant::now();
        if !stalled && now >= stall_at {
            buckets.push(server_buckets(&probe::scrape(&metrics_addr).await?));
            kill(proxy, "-USR1")?;
            stalled = true;
        }
        if !resumed && now >= resume_at {
            kill(proxy, "-USR2")?;
            buckets.push(server_buckets(&probe::scrape(&metrics_addr).await?));
            resumed = true;
        }
        if now >= end {
            break;
        }
        if let Ok(text) = probe::scrape(&metrics_addr).await
            && let Some((used, waiting, size)) = pool(&text)
        {
            let t = begin.elapsed().as_secs_f64();
            samples.push((t, used, waiting));
            last_scrape = Some(size);
            // Drained: the first sample after the resume with a free connection and nobody waiting.
            if resumed && pool_back.is_none() && used < size && waiting == 0.0 {
                pool_back = Some(now.duration_since(resume_at).as_secs_f64() * 1000.0);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut phases: [Phase; 3] = Default::default();
    for t in tasks {
        for (i, p) in t.await?.into_iter().enumerate() {
            phases[i].merge(p);
        }
    }
    buckets.push(server_buckets(&probe::scrape(&metrics_addr).await?));

    let t_stall = args.warmup.as_secs_f64();
    let t_resume = t_stall + args.duration.as_secs_f64();
    let in_phase = |i: usize, s: &(f64, f64, f64)| match i {
        0 => s.0 < t_stall,
        1 => s.0 >= t_stall && s.0 < t_resume,
        _ => s.0 >= t_resume,
    };
    println!(
        "deadlines: {} clients, deadline {:?}, stall {:?} (load {}); pool size {:?}",
        args.concurrency,
        args.deadline.unwrap_or_default(),
        args.duration,
        loadavg(),
        last_scrape
    );
    let mut out = serde_json::Map::new();
    for (i, name) in PHASES.iter().enumerate() {
        let p = &phases[i];
        let h = p.all.clone().unwrap_or_else(histogram);
        let in_use = samples.iter().filter(|s| in_phase(i, s));
        let (max_used, max_waiting) =
            in_use.fold((0f64, 0f64), |(u, w), s| (u.max(s.1), w.max(s.2)));
        let server: BTreeMap<String, f64> = buckets[i + 1]
            .iter()
            .map(|(le, v)| (le.clone(), v - buckets[i].get(le).copied().unwrap_or(0.0)))
            .collect();
        println!(
            "  {name:<8} calls {:>6}  p50 {:>7.2}  p99 {:>7.2}  p99.9 {:>7.2}  max {:>7.2} ms  >150ms {:>4}  pool max in use {max_used}, waiting {max_waiting}",
            h.len(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
            p.over_150ms,
        );
        println!("           outcomes {:?}", p.codes);
        println!("           server AddItems by le (s) {server:?}");
        out.insert(
            name.to_string(),
            serde_json::json!({
                "calls": h.len(),
                "p50_ms": ms(h.value_at_quantile(0.5)),
                "p99_ms": ms(h.value_at_quantile(0.99)),
                "p999_ms": ms(h.value_at_quantile(0.999)),
                "max_ms": ms(h.max()),
                "over_150ms": p.over_150ms,
                "outcomes": p.codes,
                "pool_max_in_use": max_used,
                "pool_max_waiting": max_waiting,
                "server_add_items_le": server,
            }),
        );
    }
    println!("  pool drained {pool_back:?} ms after the resume");
    out.insert(
        "pool_drained_ms_after_resume".into(),
        serde_json::json!(pool_back),
    );
    out.insert(
        "pool_samples".into(),
        serde_json::json!(
            samples
                .iter()
                .map(|s| [(s.0 * 1000.0).round() / 1000.0, s.1, s.2])
                .collect::<Vec<_>>()
        ),
    );
    Ok(serde_json::Value::Object(out))
}
