-- cart_events.txid was never read: the feed's publisher tells in-flight
-- sequences from pg_stat_activity's backend xids instead. Dropping it also
-- spares every event insert a pg_current_xact_id() call.
ALTER TABLE cart_events DROP COLUMN txid;
