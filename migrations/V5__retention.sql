-- Retention (see src/store/postgres/retention.rs): the event log's
-- compaction point, and the indexes that let the purges find what is due
-- without scanning whole tables.

-- Exactly one row. Every event at or below compacted_through is deleted,
-- except each existing cart's current event; watchers' reads take it in the
-- same statement as the events. PURGE_EVENTS holds the row FOR UPDATE
-- while it moves it, PURGE_CARTS FOR SHARE: the two never delete the same
-- events at once, and neither waits (SKIP LOCKED).
CREATE TABLE cart_events_compaction (
    one_row           boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    compacted_through bigint  NOT NULL
);
INSERT INTO cart_events_compaction (compacted_through) VALUES (0);

-- Final carts by their last change, for PURGE_CARTS (the predicate is the
-- statement's, word for word).
CREATE INDEX carts_final_updated_idx ON carts (updated_at)
    WHERE status IN ('CONFIRMED', 'CANCELLED', 'EXPIRED', 'MERGED');

-- Finished deliveries by when they finished, for PURGE_DELIVERIES. A
-- delivery given up has no time of its own: its last attempt's due time
-- stands for it (the attempt ended within a claim and a timeout of it).
CREATE INDEX callback_deliveries_finished_idx ON callback_deliveries ((coalesce(delivered_at, next_attempt_at)))
    WHERE state IN ('delivered', 'failed');
