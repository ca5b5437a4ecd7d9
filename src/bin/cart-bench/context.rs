//! The run's shared context (channels, auth, carts) and what every call
//! needs from it: requests with the run's metadata and deadline, failure
//! accounting with the overload backoff, request ids, the per-worker PRNG,
//! and the items and carts the scenarios send.

use super::*;

/// xorshift64*: small, fast, deterministic per worker. It also carries the
/// worker's run of consecutive OVERLOADED answers (its backoff exponent),
/// since it is the one piece of state every call of a worker gets.
pub(crate) struct Rng {
    x: u64,
    /// Consecutive RESOURCE_EXHAUSTED answers; 0 after any other outcome.
    pub(crate) refusals: u32,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng {
            x: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            refusals: 0,
        }
    }
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.x;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.x = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub(crate) struct Ctx {
    pub(crate) args: Args,
    pub(crate) channels: Vec<Channel>,
    pub(crate) auth: Option<MetadataValue<tonic::metadata::Ascii>>,
    pub(crate) carts: Vec<String>,
    pub(crate) request_seq: AtomicU64,
    pub(crate) run_id: u64,
}

impl Ctx {
    pub(crate) fn client(&self, worker: usize) -> Client {
        CartServiceClient::new(self.channels[worker % self.channels.len()].clone())
            .max_decoding_message_size(16 * 1024 * 1024)
    }

    pub(crate) fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        if let Some(d) = self.args.deadline {
            r.set_timeout(d);
        }
        r
    }

    /// Records a failed call; after an overload answer, backs off first.
    pub(crate) async fn failed(
        &self,
        rng: &mut Rng,
        stats: &mut Stats,
        op: &str,
        e: &tonic::Status,
    ) {
        // tonic's client answers its own deadline as CANCELLED "Timeout expired".
        let code = match e.code() {
            Code::Cancelled if e.message().contains("Timeout expired") => Code::DeadlineExceeded,
            c => c,
        };
        stats.error(op, code);
        // Codes no scenario expects: show what they were (a few).
        if matches!(
            code,
            Code::Unknown | Code::Cancelled | Code::Internal | Code::Unavailable
        ) && ODD_SHOWN.fetch_add(1, Ordering::Relaxed) < 5
        {
            eprintln!("  {op}: {code:?}: {e:?}");
        }
        if code == Code::ResourceExhausted {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            rng.refusals += 1;
            tokio::time::sleep(self.backoff(rng, e)).await;
        } else {
            rng.refusals = 0;
        }
    }

    /// How long to wait after the `rng.refusals`-th refusal in a row, as
    /// gRPC clients do (gRFC A6): the server's RetryInfo delay (else
    /// `--overload-backoff`) times 1.6 per earlier refusal, at most
    /// `--overload-backoff-max`, jittered +-20%.
    pub(crate) fn backoff(&self, rng: &mut Rng, e: &tonic::Status) -> Duration {
        use tonic_types::StatusExt as _;
        let base = e
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .unwrap_or(self.args.overload_backoff);
        let exp = 1.6f64.powi(rng.refusals.saturating_sub(1).min(30) as i32);
        let wait = base.mul_f64(exp).min(self.args.overload_backoff_max);
        wait.mul_f64(0.8 + 0.4 * (rng.below(1000) as f64 / 1000.0))
    }

    pub(crate) fn request_id(&self) -> String {
        if self.args.request_ids {
            let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
            format!("bench-{:x}-{n}", self.run_id)
        } else {
            String::new()
        }
    }
}

pub(crate) fn item(rng: &mut Rng, skus: usize) -> proto::ItemInput {
    item_n(rng.below(skus))
}

/// The line of SKU `n` (the same name and price every time).
pub(crate) fn item_n(n: usize) -> proto::ItemInput {
    proto::ItemInput {
        sku: format!("SKU-{n:04}"),
        name: format!("Bench item {n}"),
        quantity: 1,
        unit_price: format!("{}.{:02}", 1 + n % 50, (n * 37) % 100),
        list_price: String::new(),
        attributes: Default::default(),
    }
}

pub(crate) async fn connect(addr: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..connections.max(1) {
        let ch = Endpoint::from_shared(addr.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(8 << 20))
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        out.push(ch);
    }
    Ok(out)
}

pub(crate) fn new_cart_request(
    ctx: &Ctx,
    rng: &mut Rng,
    n: usize,
    items: usize,
) -> proto::CreateCartRequest {
    proto::CreateCartRequest {
        customer_id: format!("bench-customer-{n}"),
        currency: "USD".into(),
        items: (0..items).map(|_| item(rng, ctx.args.skus)).collect(),
        request_id: ctx.request_id(),
        ..Default::default()
    }
}

/// Unexpected failures printed so far.
static ODD_SHOWN: AtomicU64 = AtomicU64::new(0);
