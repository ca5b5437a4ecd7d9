-- WAL written for THIS database between :'lsn0' and :'lsn1', per call
-- (:calls), from pg_walinspect (PG15). The cluster is shared (other
-- databases, other engineers' tests), so a record counts as ours when a
-- block it touches is in this database, or when its transaction touched
-- one (commit records have no block). Bytes are end_lsn - start_lsn of
-- each record (alignment and page headers included), so they add up to
-- the LSN distance when nothing else writes. Used by bench/storage.sh.
\set ON_ERROR_STOP on
\pset footer off
CREATE TEMP TABLE w AS
SELECT r.xid::text AS xid, r.resource_manager AS rmgr, r.record_type AS rtype,
       (r.end_lsn - r.start_lsn)::bigint AS bytes, r.fpi_length::bigint AS fpi,
       substring(r.block_ref FROM 'rel \d+/(\d+)/')::oid AS db,
       substring(r.block_ref FROM 'rel \d+/\d+/(\d+)')::oid AS filenode
FROM pg_get_wal_records_info(:'lsn0', :'lsn1') r;
CREATE TEMP TABLE ours AS
WITH me AS (SELECT oid FROM pg_database WHERE datname = current_database()),
     tx AS (SELECT DISTINCT xid FROM w, me WHERE w.db = me.oid AND w.xid <> '0')
SELECT w.* FROM w, me WHERE w.db = me.oid OR w.xid IN (SELECT xid FROM tx);

\echo '-- by record type (this database):'
SELECT rmgr, rtype, count(*) AS records, sum(bytes) AS bytes, sum(fpi) AS fpi_bytes,
       round(sum(bytes)::numeric / :calls, 1) AS bytes_per_call,
       round((sum(bytes) - sum(fpi))::numeric / :calls, 1) AS without_fpi_per_call
FROM ours GROUP BY 1, 2 ORDER BY sum(bytes) DESC;
\echo '-- by relation (the first block a record touches; commits and other records without one: -):'
SELECT coalesce(pg_filenode_relation(0, filenode)::text, '-') AS relation, count(*) AS records,
       sum(bytes) AS bytes, sum(fpi) AS fpi_bytes,
       round(sum(bytes)::numeric / :calls, 1) AS bytes_per_call,
       round((sum(bytes) - sum(fpi))::numeric / :calls, 1) AS without_fpi_per_call
FROM ours GROUP BY 1 ORDER BY sum(bytes) DESC;
\pset tuples_only on
\pset format unaligned
SELECT 'WALJSON ' || json_build_object(
    'calls', :calls,
    'lsn_distance', pg_wal_lsn_diff(:'lsn1', :'lsn0'),
    'cluster_records', (SELECT count(*) FROM w),
    'records', count(*),
    'bytes', sum(bytes),
    'fpi_bytes', sum(fpi),
    'fpi_records', count(*) FILTER (WHERE fpi > 0),
    'bytes_per_call', round(sum(bytes)::numeric / :calls, 1),
    'fpi_per_call', round(sum(fpi)::numeric / :calls, 1),
    'without_fpi_per_call', round((sum(bytes) - sum(fpi))::numeric / :calls, 1),
    'commits', count(*) FILTER (WHERE rmgr = 'Transaction' AND rtype LIKE 'COMMIT%'))
FROM ours;
