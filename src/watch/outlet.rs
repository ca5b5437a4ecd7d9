//! A watcher loop as the response stream itself: the loop runs when the
//! stream is polled (by the HTTP/2 stream's own task), and each item it
//! sends is handed straight to that poll. No task and no channel per
//! stream: an open stream is its loop's state and little else (heaptrack:
//! the task and the channel were ~1 KiB of the ~6 KiB a stream held), a
//! delivery wakes one task instead of two, and a client that leaves drops
//! the stream and with it the loop and its subscriptions at once.
//!
//! A client that reads slowly is simply not polled: its loop waits where
//! it is, its live subscription lags, and it catches up from the log when
//! polled again (`crate::watch`). Writers never wait for it.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tokio_stream::Stream;

use super::Watched;
use crate::domain::CartError;

pub type Item = Result<Watched, Box<CartError>>;

type Slot = Arc<Mutex<Option<Item>>>;

fn take(slot: &Slot) -> Option<Item> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Where a loop sends its items.
#[derive(Clone, Default)]
pub struct Outlet(Slot);

impl Outlet {
    pub fn new() -> Outlet {
        Outlet::default()
    }

    /// Hands `item` to the stream's poll; resumes when the stream is polled
    /// for the next one.
    pub async fn send(&self, item: Item) {
        let previous = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(item);
        debug_assert!(
            previous.is_none(),
            "the stream takes each item before the loop runs on"
        );
        HandedOver(false).await
    }
}

/// Pending once, so that the stream's poll returns the item just sent;
/// ready when polled again. It registers no waker on purpose: the stream
/// returns Ready with the item, and its consumer polls again for the next.
struct HandedOver(bool);

impl Future for HandedOver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

/// The stream of what a loop sends through `outlet`; it ends when the loop ends.
pub struct WatchStream {
    slot: Slot,
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl WatchStream {
    pub fn new(outlet: &Outlet, run: impl Future<Output = ()> + Send + 'static) -> WatchStream {
        WatchStream {
            slot: outlet.0.clone(),
            run: Some(Box::pin(run)),
        }
    }
}

impl Stream for WatchStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if let Some(item) = take(&self.slot) {
            return Poll::Ready(Some(item));
        }
        let Some(run) = self.run.as_mut() else {
            return Poll::Ready(None);
        };
        let done = run.as_mut().poll(cx).is_ready();
        if done {
            self.run = None; // the loop's state goes now, not with the stream
        }
        match take(&self.slot) {
            Some(item) => Poll::Ready(Some(item)),
            None if done => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt as _;

    use super::*;

    fn marker(sequence: i64) -> Item {
        Ok(Watched::Progress {
            sequence,
            at: chrono::DateTime::UNIX_EPOCH,
        })
    }

    #[tokio::test]
    async fn every_item_arrives_in_order_then_the_end() {
        let out = Outlet::new();
        let o = out.clone();
        let stream = WatchStream::new(&out, async move {
            for n in 1..=3 {
                o.send(marker(n)).await;
            }
        });
        let got: Vec<_> = stream.collect().await;
        assert_eq!(got, vec![marker(1), marker(2), marker(3)]);
    }

    #[tokio::test]
    async fn the_loop_waits_for_its_reader() {
        let out = Outlet::new();
        let o = out.clone();
        let reached = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let r = reached.clone();
        let mut stream = WatchStream::new(&out, async move {
            for n in 1..=3 {
                r.store(n, std::sync::atomic::Ordering::SeqCst);
                o.send(marker(n)).await;
            }
        });
        assert_eq!(stream.next().await, Some(marker(1)));
        // Not polled since: the loop has not gone past its first item.
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(stream);
    }
}
