//! "Look again" signals between replicas over LISTEN/NOTIFY, for the event
//! feed and the callback outbox: a NOTIFY is sent after commit by a task on a
//! connection of its own (never inside a write), debounced; a LISTEN
//! connection pokes this replica's waiter. Both reconnect after failures;
//! meanwhile the waiter's own poll is the safety net.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// At most one NOTIFY per this interval per replica; commits meanwhile
/// fold into the next one.
const NOTIFY_EVERY: Duration = Duration::from_millis(5);

/// Sends `NOTIFY channel` each time `trigger` is poked (debounced).
pub(super) async fn notify(
    cfg: tokio_postgres::Config,
    channel: &'static str,
    trigger: Arc<Notify>,
) {
    let mut client: Option<Client> = None;
    loop {
        trigger.notified().await;
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match cfg.connect(NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    // Nobody waits for a notification's commit record to reach the disk.
                    let _ = c.batch_execute("SET synchronous_commit = off").await;
                    Some(c)
                }
                Err(e) => {
                    tracing::debug!(error = %e, channel, "notify connection failed; other replicas will poll");
                    None
                }
            };
        }
        if let Some(c) = &client
            && let Err(e) = c.batch_execute(&format!("NOTIFY {channel}")).await
        {
            tracing::debug!(error = %e, channel, "notify failed; other replicas will poll");
            client = None;
        }
        tokio::time::sleep(NOTIFY_EVERY).await;
    }
}

/// Keeps `LISTEN channel` open and pokes `poke` on every notification and
/// after every (re)connect (something may have been missed meanwhile).
pub(super) async fn listen(cfg: tokio_postgres::Config, channel: &'static str, poke: Arc<Notify>) {
    loop {
        match cfg.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let on_message = poke.clone();
                let driver = tokio::spawn(async move {
                    while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        match msg {
                            Ok(AsyncMessage::Notification(_)) => on_message.notify_one(),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, channel, "listen connection lost");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {channel}")).await {
                    Ok(()) => {
                        poke.notify_one();
                        let _ = driver.await;
                    }
                    Err(e) => tracing::warn!(error = %e, channel, "listen failed"),
                }
                drop(client);
            }
            Err(e) => {
                tracing::debug!(error = %e, channel, "listen connection failed; polling meanwhile")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
