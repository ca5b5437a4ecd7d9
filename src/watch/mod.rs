//! The per-watcher loops behind WatchCart and WatchCarts: catch up from
//! the log, then follow the feed (`crate::feed`, where the design is told);
//! on lag, catch up again.

use std::{sync::Arc, time::Duration};

use tokio::sync::{broadcast::error::RecvError, mpsc, watch};

use crate::{
    domain::{CartError, CartEvent, CartId, CartStatus, TenantId},
    feed::CartSubscription,
    metrics::Metrics,
    ports::EventLog,
};

/// Events read from the log per query while catching up.
const BATCH: usize = 500;
/// Events buffered per watcher between its loop and the client.
pub const CLIENT_BUFFER: usize = 64;

pub type Sender = mpsc::Sender<Result<Arc<CartEvent>, CartError>>;

/// Why a loop stopped early: the client left, or the store failed.
enum Stop {
    ClientGone,
    Failed(CartError),
}

/// A watcher's channel that counts the events it delivers.
struct Counted<'a> {
    tx: &'a Sender,
    metrics: &'a Metrics,
}

async fn send(out: &Counted<'_>, ev: Arc<CartEvent>) -> Result<(), Stop> {
    out.tx.send(Ok(ev)).await.map_err(|_| Stop::ClientGone)?;
    out.metrics.event_delivered();
    Ok(())
}

async fn end(tx: &Sender, r: Result<(), Stop>) {
    if let Err(Stop::Failed(e)) = r {
        let _ = tx.send(Err(e)).await;
    }
}

/// What every watcher loop needs: where to read, whose events, for how
/// long, and where to send them.
pub struct Watcher {
    pub log: Arc<dyn EventLog>,
    pub tenant: TenantId,
    pub lifetime: Duration,
    /// Turns true when the server shuts down: the stream then ends cleanly.
    pub closing: watch::Receiver<bool>,
    pub metrics: Metrics,
    pub tx: Sender,
}

/// Counts a stream as open for as long as it lives.
struct OpenStream(Metrics);

impl OpenStream {
    fn new(m: &Metrics) -> OpenStream {
        m.watch_stream_opened();
        OpenStream(m.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.watch_stream_closed();
    }
}

/// Runs a watcher loop until it ends, its lifetime passes, the server
/// shuts down (these two end the stream cleanly: the client resumes) or
/// the client leaves. The last is watched on its own: a loop waiting for
/// an event that may never come would otherwise hold its subscriptions
/// (and its memory) until the lifetime ends.
async fn bounded(
    lifetime: Duration,
    mut closing: watch::Receiver<bool>,
    tx: &Sender,
    run: impl Future<Output = Result<(), Stop>>,
) -> Result<(), Stop> {
    tokio::select! {
        r = tokio::time::timeout(lifetime, run) => r.unwrap_or(Ok(())),
        _ = closing.wait_for(|c| *c) => Ok(()),
        () = tx.closed() => Err(Stop::ClientGone),
    }
}

/// WatchCarts: every event of `tenant` after sequence `after`, filtered by
/// `statuses`, until the client leaves or `lifetime` passes.
pub async fn tenant_events(w: Watcher, statuses: Vec<CartStatus>, after: i64) {
    let Watcher {
        log,
        tenant,
        lifetime,
        closing,
        metrics,
        tx,
    } = w;
    let _open = OpenStream::new(&metrics);
    let tx = &Counted {
        tx: &tx,
        metrics: &metrics,
    };
    let run = async {
        let mut live = log.feed().subscribe();
        let mut cursor = after;
        let wanted = |ev: &CartEvent| statuses.is_empty() || statuses.contains(&ev.cart.status);
        loop {
            loop {
                let batch = log
                    .tenant_events(&tenant, cursor, BATCH)
                    .await
                    .map_err(Stop::Failed)?;
                let full = batch.len() == BATCH;
                for ev in batch {
                    cursor = ev.sequence;
                    if wanted(&ev) {
                        send(tx, Arc::new(ev)).await?;
                    }
                }
                if !full {
                    break;
                }
            }
            loop {
                match live.recv().await {
                    Ok(ev) if ev.tenant == tenant && ev.sequence > cursor => {
                        cursor = ev.sequence;
                        if wanted(&ev) {
                            send(tx, ev).await?;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "watcher lagged; catching up from the log");
                        break;
                    }
                    Err(RecvError::Closed) => return Ok(()),
                }
            }
        }
    };
    let r = bounded(lifetime, closing, tx.tx, run).await;
    end(tx.tx, r).await;
}

/// WatchCart: `first` (the cart as it stands, when not resuming), then
/// every change after `after_version`, ending after a final status.
pub async fn cart_events(
    w: Watcher,
    cart: CartId,
    first: Option<CartEvent>,
    after_version: i64,
    mut live: CartSubscription,
) {
    let Watcher {
        log,
        tenant,
        lifetime,
        closing,
        metrics,
        tx,
    } = w;
    let _open = OpenStream::new(&metrics);
    let tx = &Counted {
        tx: &tx,
        metrics: &metrics,
    };
    let run = async {
        let mut cursor = after_version;
        if let Some(ev) = first {
            cursor = ev.version();
            let done = ev.is_final();
            send(tx, Arc::new(ev)).await?;
            if done {
                return Ok(());
            }
        }
        loop {
            loop {
                let batch = log
                    .cart_events(&tenant, cart, cursor, BATCH)
                    .await
                    .map_err(Stop::Failed)?;
                let full = batch.len() == BATCH;
                for ev in batch {
                    cursor = ev.version();
                    let done = ev.is_final();
                    send(tx, Arc::new(ev)).await?;
                    if done {
                        return Ok(());
                    }
                }
                if !full {
                    break;
                }
            }
            loop {
                match live.recv().await {
                    Ok(ev)
                        if ev.tenant == tenant && ev.cart.id == cart && ev.version() > cursor =>
                    {
                        if ev.version() != cursor + 1 {
                            break; // a version is missing here: read it from the log
                        }
                        cursor = ev.version();
                        let done = ev.is_final();
                        send(tx, ev).await?;
                        if done {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return Ok(()),
                }
            }
        }
    };
    let r = bounded(lifetime, closing, tx.tx, run).await;
    end(tx.tx, r).await;
}
