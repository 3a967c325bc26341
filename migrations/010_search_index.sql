-- Search index tables (src/fhir/search). One row per extracted value, written in the same transaction as the
-- resource. Every table is keyed for two access paths:
--   (resource_type, code, value…, id)  finds matching ids without touching the resource JSON;
--   (resource_type, id, code)          replaces or removes a resource's rows, and probes one resource's values.
-- Text columns that are compared by prefix or sorted use COLLATE "C", so that a plain btree serves LIKE 'x%'
-- and byte order equals the order of our sortable encodings.

-- token: code, Coding, CodeableConcept, Identifier, ContactPoint, boolean, code-like strings.
-- Identifier types for :of-type are stored under code '<param>:of-type' with system = 'typeSystem|typeCode'.
CREATE TABLE search_token (
  resource_type text NOT NULL,
  id text NOT NULL,
  code text NOT NULL,
  system text COLLATE "C",
  value text COLLATE "C"
);
-- id right after value (system only INCLUDEd, checked from the index): a token's matches come out in id order,
-- so `code=X` paged by id merges with the resource key and stops after a page.
CREATE INDEX search_token_value_idx ON search_token (resource_type, code, value, id) INCLUDE (system);
CREATE INDEX search_token_res_idx ON search_token (resource_type, id, code);

-- string: lower-case, accent-free `value` (prefix / contains), and the original text for :exact.
-- Display texts of tokens (for :text) are stored here under code '<param>:text'.
CREATE TABLE search_string (
  resource_type text NOT NULL,
  id text NOT NULL,
  code text NOT NULL,
  value text COLLATE "C" NOT NULL,
  raw text NOT NULL
);
CREATE INDEX search_string_value_idx ON search_string (resource_type, code, value, id);
CREATE INDEX search_string_res_idx ON search_string (resource_type, id, code);

-- date: every date/dateTime/instant/Period/Timing as the closed range it denotes (precision → range);
-- open ends are -infinity / infinity.
CREATE TABLE search_date (
  resource_type text NOT NULL,
  id text NOT NULL,
  code text NOT NULL,
  low timestamptz NOT NULL,
  high timestamptz NOT NULL
);
CREATE INDEX search_date_low_idx ON search_date (resource_type, code, low, high);
CREATE INDEX search_date_high_idx ON search_date (resource_type, code, high);
-- covering: a date filter applied to ids found elsewhere (patient=…&date=…) probes the index only
CREATE INDEX search_date_res_idx ON search_date (resource_type, id, code) INCLUDE (low, high);

-- number and quantity: [low, high] (equal for a point value; a Range gives both ends), plus unit for quantities.
CREATE TABLE search_quantity (
  resource_type text NOT NULL,
  id text NOT NULL,
  code text NOT NULL,
  low numeric,
  high numeric,
  system text,
  unit text
);
CREATE INDEX search_quantity_value_idx ON search_quantity (resource_type, code, low, high);
CREATE INDEX search_quantity_res_idx ON search_quantity (resource_type, id, code);

-- reference: local references as target_type + target_id; anything else (absolute URL, canonical, urn)
-- as target_type NULL + target_id = the full reference string.
CREATE TABLE search_reference (
  resource_type text NOT NULL,
  id text NOT NULL,
  code text NOT NULL,
  target_type text,
  target_id text NOT NULL
);
CREATE INDEX search_reference_target_idx ON search_reference (resource_type, code, target_id, target_type, id);
CREATE INDEX search_reference_res_idx ON search_reference (resource_type, id, code);

-- uri (and canonical-typed uri params): exact, :below (prefix), :above (value in the prefixes of the search uri).
CREATE TABLE search_uri (
  resource_type text NOT NULL,
  id text NOT NULL,
  code text NOT NULL,
  value text COLLATE "C" NOT NULL
);
CREATE INDEX search_uri_value_idx ON search_uri (resource_type, code, value, id);
CREATE INDEX search_uri_res_idx ON search_uri (resource_type, id, code);

-- composite: one row per combination of component values taken from the same element. The first
-- component is a token (or a reference); the second one of token/string/reference (t2_*), quantity/number
-- (n2_*), or date (d2_*); a third (MolecularSequence coordinates) is a number (n3_*).
CREATE TABLE search_composite (
  resource_type text NOT NULL,
  id text NOT NULL,
  code text NOT NULL,
  c1_system text COLLATE "C",
  c1_value text COLLATE "C",
  t2_system text COLLATE "C",
  t2_value text COLLATE "C",
  n2_low numeric,
  n2_high numeric,
  n2_system text,
  n2_unit text,
  d2_low timestamptz,
  d2_high timestamptz,
  n3_low numeric,
  n3_high numeric
);
CREATE INDEX search_composite_value_idx ON search_composite (resource_type, code, c1_value, id);
CREATE INDEX search_composite_res_idx ON search_composite (resource_type, id, code);

-- Sort keys: one row per (resource, parameter) with the smallest (lo) and largest (hi) value in an encoding
-- whose byte order is the value order (ISO instants, normalized strings, order-preserving hex for numbers).
-- Ascending sorts use lo, descending hi (FHIR: sort by the lowest / highest value).
CREATE TABLE search_sort (
  resource_type text NOT NULL,
  id text NOT NULL,
  code text NOT NULL,
  lo text COLLATE "C" NOT NULL,
  hi text COLLATE "C" NOT NULL
);
-- Not a primary key on purpose: the indexer deletes old rows and inserts new ones in one statement, and a
-- unique check could see the old row before its delete ran.
-- covering: sorting a filtered set (patient=…&_sort=-date) reads the keys from the index only
CREATE INDEX search_sort_res_idx ON search_sort (resource_type, id, code) INCLUDE (lo, hi);
CREATE INDEX search_sort_lo_idx ON search_sort (resource_type, code, lo, id);
CREATE INDEX search_sort_hi_idx ON search_sort (resource_type, code, hi, id);
