//! The per-watcher loops behind WatchCart and WatchCarts: catch up from
//! the log, then follow the feed (`crate::feed`, where the design is told);
//! on lag, catch up again. WatchCarts may also send progress markers.
//!
//! # The position of a WatchCarts stream
//!
//! `cursor` is the sequence the stream has reached: every event of the
//! tenant at or below it that passes the filter has been sent, and none
//! at or below it can still commit. It only grows, and it is what a
//! progress marker carries, so markers never go back and a client that
//! resumes after a marker's sequence misses nothing and repeats nothing.
//! It moves when
//! - the log answers a catch-up: to the last event read, and once the log
//!   has nothing more, to the feed head read *before* the catch-up (the
//!   log answers everything up to a head at least that high);
//! - the feed hands over any event, of any tenant: the feed publishes in
//!   sequence order and only up to its head, so every event below one
//!   received was received before it or was already in the log when the
//!   catch-up read it.
//!
//! The head is not read when a marker is due: publishers raise the head
//! *before* they publish the events up to it (`EventFeed::advance`), so
//! events at or below a head just read may not have reached the broadcast
//! yet, and a marker there could pass them.

pub mod outlet;

use std::{pin::Pin, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::{
    sync::{
        broadcast::{
            self,
            error::{RecvError, TryRecvError},
        },
        watch,
    },
    time::{Instant, Sleep},
};

use crate::{
    domain::{CartError, CartEvent, CartId, CartStatus, TenantId, now},
    feed::CartSubscription,
    metrics::Metrics,
    ports::EventLog,
};

pub use outlet::{Outlet, WatchStream};

/// Events read from the log per query while catching up.
const BATCH: usize = 500;

/// What a watcher hands its client.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    Event(Arc<CartEvent>),
    /// WatchCarts only: every matching event up to `sequence` was sent.
    Progress {
        sequence: i64,
        at: DateTime<Utc>,
    },
}

/// Why a loop stopped early: the store failed. (A client that leaves
/// drops the stream, and the loop with it.)
struct Stop(CartError);

/// A watcher's outlet that counts the events it delivers.
struct Counted<'a> {
    out: &'a Outlet,
    metrics: &'a Metrics,
}

/// Sends cannot fail: a client that leaves drops the stream, and the
/// loop with it, so only the log's reads end a loop early.
async fn send(out: &Counted<'_>, ev: Arc<CartEvent>) {
    out.out.send(Ok(Watched::Event(ev))).await;
    out.metrics.event_delivered();
}

async fn end(out: &Outlet, r: Result<(), Stop>) {
    if let Err(Stop(e)) = r {
        out.send(Err(Box::new(e))).await;
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
    pub out: Outlet,
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

/// Runs a watcher loop until it ends, its lifetime passes or the server
/// shuts down (these two end the stream cleanly: the client resumes). A
/// client that leaves drops the stream and the loop with it.
///
/// `run` comes boxed: a future passed by value is kept in each future
/// that takes it on the way down, and a watcher's state is held for as
/// long as its stream is open (measured with heaptrack: 8.4 KiB per
/// WatchCart task before, most of a stream's memory).
async fn bounded(
    lifetime: Duration,
    mut closing: watch::Receiver<bool>,
    run: Pin<Box<dyn Future<Output = Result<(), Stop>> + Send + '_>>,
) -> Result<(), Stop> {
    tokio::select! {
        r = tokio::time::timeout(lifetime, run) => r.unwrap_or(Ok(())),
        _ = closing.wait_for(|c| *c) => Ok(()),
    }
}

/// When a progress marker is due: `every` after the last matching event
/// or marker.
struct Silence {
    every: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Silence {
    fn new(every: Duration) -> Silence {
        Silence {
            every,
            timer: Box::pin(tokio::time::sleep(every)),
        }
    }

    fn restart(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.every);
    }
}

/// A WatchCarts stream's state (see the module notes for `cursor`).
struct TenantStream<'a> {
    tenant: &'a TenantId,
    statuses: &'a [CartStatus],
    out: &'a Counted<'a>,
    cursor: i64,
    /// None: the client asked for no markers.
    silence: Option<Silence>,
}

impl TenantStream<'_> {
    /// Takes an event from the log or the feed, sending it when it is the
    /// tenant's, new and wanted.
    async fn take(&mut self, ev: Arc<CartEvent>) {
        if ev.sequence <= self.cursor {
            return; // already sent, or below where the stream started
        }
        self.cursor = ev.sequence;
        let wanted = self.statuses.is_empty() || self.statuses.contains(&ev.cart.status);
        if &ev.tenant == self.tenant && wanted {
            send(self.out, ev).await;
            if let Some(s) = &mut self.silence {
                s.restart();
            }
        }
    }

    fn marker_due(&self) -> bool {
        self.silence.as_ref().is_some_and(|s| s.timer.is_elapsed())
    }

    /// Resolves when a marker is due; never without markers.
    async fn silent(&mut self) {
        match &mut self.silence {
            Some(s) => s.timer.as_mut().await,
            None => std::future::pending().await,
        }
    }

    /// Sends a marker at the cursor (not counted as a delivered event).
    async fn mark(&mut self) {
        let marker = Watched::Progress {
            sequence: self.cursor,
            at: now(),
        };
        self.out.out.send(Ok(marker)).await;
        if let Some(s) = &mut self.silence {
            s.restart();
        }
    }

    /// Catches up from the log: everything of the tenant after the cursor.
    async fn catch_up(&mut self, log: &dyn EventLog) -> Result<(), Stop> {
        // Read first: the log then answers at least up to it.
        let head = log.feed().head();
        loop {
            let batch = log
                .tenant_events(self.tenant, self.cursor, BATCH)
                .await
                .map_err(Stop)?;
            let full = batch.len() == BATCH;
            for ev in batch.into_iter().map(Arc::new) {
                self.take(ev).await;
            }
            if !full {
                self.cursor = self.cursor.max(head);
                return Ok(());
            }
            // A long catch-up of unwanted events still shows progress.
            if self.marker_due() {
                self.mark().await;
            }
        }
    }

    /// Takes what the broadcast already holds (at most a batch, so a busy
    /// feed cannot hold the marker back). False when the watcher lagged
    /// and must catch up from the log.
    async fn drain(&mut self, live: &mut broadcast::Receiver<Arc<CartEvent>>) -> bool {
        for _ in 0..BATCH {
            match live.try_recv() {
                Ok(ev) => self.take(ev).await,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "watcher lagged; catching up from the log");
                    return false;
                }
                // The store is gone: the next recv ends the stream.
                Err(TryRecvError::Closed) => break,
            }
        }
        true
    }
}

/// WatchCarts: every event of `tenant` after sequence `after`, filtered by
/// `statuses`, until the client leaves or `lifetime` passes; with
/// `progress`, a marker after each such stretch without a matching event.
pub async fn tenant_events(
    w: Watcher,
    statuses: Vec<CartStatus>,
    after: i64,
    progress: Option<Duration>,
) {
    let Watcher {
        log,
        tenant,
        lifetime,
        closing,
        metrics,
        out,
    } = w;
    let _open = OpenStream::new(&metrics);
    let to_client = &Counted {
        out: &out,
        metrics: &metrics,
    };
    let run = Box::pin(async {
        let mut live = log.feed().subscribe();
        let mut stream = TenantStream {
            tenant: &tenant,
            statuses: &statuses,
            out: to_client,
            cursor: after,
            silence: progress.map(Silence::new),
        };
        loop {
            stream.catch_up(log.as_ref()).await?;
            loop {
                let received = tokio::select! {
                    r = live.recv() => r,
                    () = stream.silent() => {
                        // Whatever is already here first: a matching event
                        // ends the silence, and the rest moves the cursor.
                        if !stream.drain(&mut live).await {
                            break;
                        }
                        if stream.marker_due() {
                            stream.mark().await;
                        }
                        continue;
                    }
                };
                match received {
                    Ok(ev) => stream.take(ev).await,
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "watcher lagged; catching up from the log");
                        break;
                    }
                    Err(RecvError::Closed) => return Ok(()),
                }
            }
        }
    });
    let r = bounded(lifetime, closing, run).await;
    end(&out, r).await;
}

/// WatchCart: `first` (the cart as it stands, when not resuming; read
/// after `live` subscribed), then every change after `after_version`,
/// ending after a final status.
pub async fn cart_events(
    w: Watcher,
    cart: CartId,
    first: Option<Arc<CartEvent>>,
    after_version: i64,
    mut live: CartSubscription,
) {
    let Watcher {
        log,
        tenant,
        lifetime,
        closing,
        metrics,
        out,
    } = w;
    let _open = OpenStream::new(&metrics);
    let to_client = &Counted {
        out: &out,
        metrics: &metrics,
    };
    let run = Box::pin(async {
        let mut cursor = after_version;
        // `first` was read after `live` subscribed, so every later change
        // comes live (or shows as a gap there): no read of the log yet.
        // Halves the queries of opening many streams at once.
        let mut read_log = first.is_none();
        if let Some(ev) = first {
            cursor = ev.version();
            let done = ev.is_final();
            send(to_client, ev).await;
            if done {
                return Ok(());
            }
        }
        loop {
            while read_log {
                let batch = log
                    .cart_events(&tenant, cart, cursor, BATCH)
                    .await
                    .map_err(Stop)?;
                let full = batch.len() == BATCH;
                // Arcs before the loop: a `CartEvent` bound by the loop
                // would keep its ~350 bytes in the stream's state for as
                // long as the stream is open, though moved at once.
                for ev in batch.into_iter().map(Arc::new) {
                    cursor = ev.version();
                    let done = ev.is_final();
                    send(to_client, ev).await;
                    if done {
                        return Ok(());
                    }
                }
                read_log = full;
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
                        send(to_client, ev).await;
                        if done {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return Ok(()),
                }
            }
            read_log = true;
        }
    });
    let r = bounded(lifetime, closing, run).await;
    end(&out, r).await;
}
