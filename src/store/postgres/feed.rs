//! The Postgres publisher of the event feed (see `crate::feed` for the
//! design): one task per replica computes the head of the event log and
//! publishes new events; a second keeps a LISTEN connection that wakes the
//! publisher when another replica commits. Both use their own connections,
//! outside the pool, so a busy pool never stalls watchers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Notify;
use tokio_postgres::{Client, NoTls, Statement};

use super::{channel, errors::pg, rows, sql};
use crate::{domain::CartError, feed::EventFeed};

/// Safety net: look again at least this often even when nothing woke us.
const POLL: Duration = Duration::from_millis(500);
/// Pause between two head computations while transactions are in flight.
const SETTLE: Duration = Duration::from_millis(1);
/// Head computations per wake-up before waiting for the next one.
const MAX_ROUNDS: usize = 100;
/// The same while nobody watches on this replica: a candidate read in the
/// first round is final in the second once its writers ended.
const IDLE_ROUNDS: usize = 2;
/// Events read per query when publishing.
const PAGE: i64 = 1000;

/// Finds the head: the largest sequence at or below which no event can
/// still appear. Writers take a write lock on the event log and their
/// transaction id before their sequence, so a transaction that may hold a
/// sequence at or below the sequence's last value was running (with its id
/// and that lock) when that value was read, or had ended. Reading the
/// value, then the ids of the event writers running (`sql::EVENT_WRITERS`),
/// gives a candidate and the transactions it waits for; once none of them
/// runs any more, the candidate is final. Only transactions that write
/// events count: one that writes anything else, or nothing, for however
/// long, never holds watchers back.
#[derive(Debug, Default)]
pub(super) struct Watermark {
    /// (candidate sequence, transaction ids it waits for)
    pending: Option<(i64, Vec<i64>)>,
    pub safe: i64,
}

impl Watermark {
    /// One observation: the sequence's `last` value, then the ids `running`.
    pub fn observe(&mut self, last: i64, running: Vec<i64>) {
        if let Some((candidate, waits_for)) = &self.pending
            && waits_for.iter().all(|x| !running.contains(x))
        {
            self.safe = self.safe.max(*candidate);
            self.pending = None;
        }
        if running.is_empty() {
            self.safe = self.safe.max(last);
            self.pending = None;
        } else if last > self.safe && self.pending.is_none() {
            self.pending = Some((last, running));
        }
    }

    pub fn settled(&self) -> bool {
        self.pending.is_none()
    }
}

/// One observation for `mark`; the two statements run in this order.
async fn observe(
    client: &Client,
    last: &Statement,
    running: &Statement,
    mark: &mut Watermark,
) -> Result<(), CartError> {
    let last: i64 = client.query_one(last, &[]).await.map_err(pg)?.get(0);
    let running: Vec<i64> = client.query_one(running, &[]).await.map_err(pg)?.get(0);
    mark.observe(last, running);
    Ok(())
}

/// A dedicated connection with the publisher's statements prepared.
struct Observer {
    client: Client,
    last: Statement,
    running: Statement,
    events: Statement,
}

impl Observer {
    async fn connect(cfg: &tokio_postgres::Config) -> Result<Observer, CartError> {
        let (client, conn) = cfg.connect(NoTls).await.map_err(pg)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "event feed connection ended");
            }
        });
        Ok(Observer {
            last: client.prepare(sql::LAST_SEQUENCE).await.map_err(pg)?,
            running: client.prepare(sql::EVENT_WRITERS).await.map_err(pg)?,
            events: client.prepare(sql::EVENTS_BETWEEN).await.map_err(pg)?,
            client,
        })
    }

    async fn observe(&self, mark: &mut Watermark) -> Result<(), CartError> {
        observe(&self.client, &self.last, &self.running, mark).await
    }
}

/// A head computed now: every event committed before the call is at or
/// below it, and nothing at or below it can still appear.
pub(super) async fn head_now(client: &Client) -> Result<i64, CartError> {
    let last = client.prepare(sql::LAST_SEQUENCE).await.map_err(pg)?;
    let running = client.prepare(sql::EVENT_WRITERS).await.map_err(pg)?;
    let mut mark = Watermark::default();
    for round in 0..MAX_ROUNDS * 10 {
        if round > 0 {
            tokio::time::sleep(SETTLE).await;
        }
        observe(client, &last, &running, &mut mark).await?;
        if mark.settled() {
            return Ok(mark.safe);
        }
    }
    Err(CartError::Unavailable(
        "transactions stay in flight; retry".into(),
    ))
}

/// What this replica's writes poke after each commit: the publisher (for
/// this replica's watchers, at once) and the notifier (for the others').
#[derive(Default)]
pub(super) struct Committed {
    publisher: Notify,
    /// Watched by `channel::notify`, which sends the NOTIFY after commit.
    notifier: Arc<Notify>,
}

impl Committed {
    pub fn poke(&self) {
        self.publisher.notify_one();
        self.notifier.notify_one();
    }
}

/// Starts the publisher, the notifier and the listener; answers what
/// commits poke.
pub(super) async fn start(cfg: tokio_postgres::Config, feed: Arc<EventFeed>) -> Arc<Committed> {
    let local = Arc::new(Committed::default());
    let remote = Arc::new(Notify::new());
    let mut publisher = Publisher {
        cfg: cfg.clone(),
        observer: None,
        feed,
        mark: Watermark::default(),
        published: 0,
    };
    // Start from the present: history is read from the log by watchers.
    if let Err(e) = publisher.settle(false, MAX_ROUNDS).await {
        tracing::warn!(error = %e, "event feed could not read the log head yet");
    }
    publisher.published = publisher.mark.safe;
    publisher.feed.advance(publisher.mark.safe);
    tokio::spawn(channel::listen(cfg.clone(), sql::CHANNEL, remote.clone()));
    tokio::spawn(channel::notify(cfg, sql::CHANNEL, local.notifier.clone()));
    tokio::spawn(publisher.run(local.clone(), remote));
    local
}

struct Publisher {
    cfg: tokio_postgres::Config,
    observer: Option<Observer>,
    feed: Arc<EventFeed>,
    mark: Watermark,
    published: i64,
}

impl Publisher {
    async fn run(mut self, local: Arc<Committed>, remote: Arc<Notify>) {
        let mut failing = false;
        let mut refreshed = Instant::now();
        loop {
            let subscribed = tokio::select! {
                () = local.publisher.notified() => false,
                () = remote.notified() => false,
                () = self.feed.subscribed() => true,
                () = tokio::time::sleep(POLL) => false,
            };
            let watched = subscribed || self.feed.has_subscribers();
            // Nobody watches here: the head only needs to stay about as
            // fresh as the poll, and one candidate moving on is enough.
            if !watched && refreshed.elapsed() < POLL {
                continue;
            }
            let rounds = if watched { MAX_ROUNDS } else { IDLE_ROUNDS };
            refreshed = Instant::now();
            match self.settle(true, rounds).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("event feed reading the log again");
                }
                Ok(()) => {}
                Err(e) => {
                    self.observer = None; // reconnect next time
                    if !failing {
                        failing = true;
                        tracing::warn!(error = %e, "event feed cannot read the log; retrying");
                    }
                }
            }
        }
    }

    async fn observer(&mut self) -> Result<&Observer, CartError> {
        if self.observer.is_none() {
            self.observer = Some(Observer::connect(&self.cfg).await?);
        }
        Ok(self.observer.as_ref().expect("just connected"))
    }

    /// Moves the head as far as transactions allow, publishing as it goes.
    async fn settle(&mut self, publish: bool, rounds: usize) -> Result<(), CartError> {
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(SETTLE).await;
            }
            let mut mark = std::mem::take(&mut self.mark);
            let observed = self.observer().await?.observe(&mut mark).await;
            self.mark = mark;
            observed?;
            if publish && self.mark.safe > self.published {
                self.publish(self.mark.safe).await?;
            }
            if self.mark.settled() {
                break;
            }
        }
        Ok(())
    }

    async fn publish(&mut self, head: i64) -> Result<(), CartError> {
        // The head moves first: a watcher subscribing now catches up to it.
        self.feed.advance(head);
        if !self.feed.has_subscribers() {
            self.published = head;
            return Ok(());
        }
        while self.published < head {
            let from = self.published;
            let o = self.observer().await?;
            let rows = o
                .client
                .query(&o.events, &[&from, &head, &PAGE])
                .await
                .map_err(pg)?;
            let events = rows::events(&rows)?;
            let full = events.len() as i64 == PAGE;
            for event in events {
                self.published = event.sequence;
                self.feed.publish(Arc::new(event));
            }
            if !full {
                self.published = head;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Watermark;

    #[test]
    fn a_candidate_waits_for_the_transactions_running_when_it_was_read() {
        let mut w = Watermark::default();
        // Sequence at 10 while 100 and 101 run.
        w.observe(10, vec![100, 101]);
        assert_eq!(w.safe, 0);
        w.observe(12, vec![101, 102]);
        assert_eq!(w.safe, 0, "101 still runs");
        // 100 and 101 ended: 10 is final; 12 waits for 102 and 103.
        w.observe(12, vec![102, 103]);
        assert_eq!(w.safe, 10);
        assert!(!w.settled());
        w.observe(13, vec![104]);
        assert_eq!(w.safe, 12);
        w.observe(13, vec![]);
        assert_eq!(w.safe, 13);
        assert!(w.settled());
    }

    #[test]
    fn an_idle_database_is_final_at_once_and_never_moves_back() {
        let mut w = Watermark::default();
        w.observe(7, vec![]);
        assert_eq!(w.safe, 7);
        assert!(w.settled());
        w.observe(7, vec![]);
        assert_eq!(w.safe, 7);
    }
}
