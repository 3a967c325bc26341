-- Timeline index (src/fhir/search/timeline.ts): the rows a device or results viewer searches by, denormalised so
-- that one patient's readings of one code can be walked in date order and the walk stops at the page size.
-- One row per (resource, hot token parameter, token value), plus one row under code '*' for "any code", each
-- carrying the resource's subject and its date. Only types listed in TIMELINE (timeline-config.ts) get rows.
--
-- Why a table of its own rather than the general index tables: a search on subject + code sorted by date
-- joins three of them (search_reference, search_token, search_sort), and no index can serve a join; PostgreSQL
-- then either walks everybody's dates filtered by subject or sorts every match of the patient. Here one
-- btree holds (subject, code, value, date), so the first page reads _count rows whatever the patient's depth.
CREATE TABLE search_timeline (
  resource_type text NOT NULL,
  id text NOT NULL,
  -- the subject reference (type NULL for an absolute URL, which is then kept whole in subject_id)
  subject_type text,
  subject_id text NOT NULL,
  -- the search parameter code ('code', 'category', or '*' for the resource's "any code" row)
  code text NOT NULL,
  -- the value's system when the resource has it under one system; under several, the first one and multi = true
  -- (a system|value search then checks search_token for the others)
  system text COLLATE "C",
  value text COLLATE "C" NOT NULL,
  multi boolean NOT NULL DEFAULT false,
  -- the date parameter's descending sort key (the same text as search_sort.hi), NULL when the resource has no date
  hi text COLLATE "C",
  -- the date parameter's range when it has exactly one value (else NULL: date filters then read search_date)
  low timestamptz,
  high timestamptz
);
-- _sort=-date: a backward walk from the newest reading; keyset cursors are (hi, id) bounds on the same index.
-- Covering (INCLUDE): every condition a walk checks is on the index tuple, so walks are index-only scans once
-- VACUUM has set the visibility map, and a walk that must read a few thousand entries stays well under a ms.
CREATE INDEX search_timeline_date_idx ON search_timeline (resource_type, subject_id, code, value, hi, id)
  INCLUDE (subject_type, system, multi, low, high);
-- no _sort (id order): a forward walk in id order (without hi: a query that reads hi can be index-only only on
-- the date index, which keeps date-range reads on it)
CREATE INDEX search_timeline_id_idx ON search_timeline (resource_type, subject_id, code, value, id)
  INCLUDE (subject_type, system, multi, low, high);
-- resources without a date come after the dated ones in a date sort; few, so a small partial index
CREATE INDEX search_timeline_nodate_idx ON search_timeline (resource_type, subject_id, code, value, id) WHERE hi IS NULL;
-- replaces or removes a resource's rows
CREATE INDEX search_timeline_res_idx ON search_timeline (resource_type, id);

-- Statistics: the hot plans do not depend on them (each query's ORDER BY is one index's key after its
-- equality prefix), but counts and other queries do. A device burst can double a table between two automatic
-- ANALYZEs at the default 10 %; analyse after 1 % (plus 10,000 rows) instead. subject, code and value are
-- strongly dependent (a patient has few codes); without extended statistics the planner multiplies their
-- selectivities and expects ~0 rows.
-- Inserts also trigger a VACUUM after 1 % (default 20 %), which sets the visibility map the index-only walks need.
ALTER TABLE search_timeline SET (autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 10000,
                                 autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.01,
                                 autovacuum_vacuum_insert_threshold = 10000);
CREATE STATISTICS search_timeline_key_stats (ndistinct, dependencies) ON subject_id, code, value FROM search_timeline;

-- Backfill from the general index tables (same content as the extraction writes for new resources).
INSERT INTO search_timeline (resource_type, id, subject_type, subject_id, code, system, value, multi, hi, low, high)
SELECT t.resource_type, t.id, s.target_type, s.target_id, t.code, t.system, t.value, t.multi, so.hi, d.low, d.high
FROM (
  SELECT resource_type, id, code, min(system) AS system, value, count(*) > 1 AS multi
    FROM search_token
   WHERE resource_type IN ('Observation', 'DiagnosticReport') AND code IN ('code', 'category') AND value IS NOT NULL
   GROUP BY resource_type, id, code, value
  UNION ALL
  SELECT resource_type, id, '*', NULL, '*', false FROM resource
   WHERE resource_type IN ('Observation', 'DiagnosticReport') AND NOT deleted
) t
JOIN LATERAL (
  SELECT target_type, target_id FROM search_reference r
   WHERE r.resource_type = t.resource_type AND r.id = t.id AND r.code = 'subject'
   ORDER BY target_type NULLS LAST, target_id LIMIT 1
) s ON true
LEFT JOIN search_sort so ON so.resource_type = t.resource_type AND so.id = t.id AND so.code = 'date'
LEFT JOIN LATERAL (
  SELECT CASE WHEN count(*) = 1 THEN min(low) END AS low, CASE WHEN count(*) = 1 THEN max(high) END AS high
    FROM search_date sd WHERE sd.resource_type = t.resource_type AND sd.id = t.id AND sd.code = 'date'
) d ON true;
