//! Records attempts' outcomes in batches: one statement for every outcome
//! that came in while the previous one ran, so recording costs a round
//! trip per batch rather than per callback. The row stays leased until its
//! outcome is written, so no other attempt can start meanwhile; a crash in
//! between only means another attempt after the lease (at least once).

use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::ports::{Outbox, Outcome};

/// Most outcomes written by one statement.
const MAX_BATCH: usize = 512;

pub(super) type Outcomes = mpsc::UnboundedSender<(Uuid, Outcome)>;

/// Starts the recorder; it ends once every sender is gone and the last
/// outcomes are written (so attempts under way at shutdown are recorded).
pub(super) fn start(outbox: Arc<dyn Outbox>) -> Outcomes {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Uuid, Outcome)>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            if let Err(e) = outbox.record_callbacks(&batch).await {
                // The leases run out and other attempts follow: at least once.
                tracing::warn!(error = %e, count = batch.len(), "cannot record callback attempts");
            }
            batch.clear();
        }
    });
    tx
}
