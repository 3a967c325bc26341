-- Failed sign-ins per username and per client address: after too many, that key is locked for a while
-- (brute force and password spraying), in the database so every server process sees the same count.
CREATE TABLE smart_login_failure (
  key text PRIMARY KEY,
  failures integer NOT NULL,
  last_at timestamptz NOT NULL,
  locked_until timestamptz
);
