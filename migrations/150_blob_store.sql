-- Blobs in the database (BLOB_STORE=postgres): every node of a cluster reads and writes the same blobs with nothing
-- but PostgreSQL. A blob's bytes are chunk rows under a generation id; the blob row points at the generation that
-- is visible, so a blob appears whole or not at all and a replacement never mixes two uploads.
CREATE TABLE blob (
  key text PRIMARY KEY,
  generation uuid NOT NULL,
  size bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE blob_chunk (
  generation uuid NOT NULL,
  n int NOT NULL,
  data bytea NOT NULL,
  written_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (generation, n)
);
