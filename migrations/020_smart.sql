-- SMART on FHIR authorization server (smart/). Secrets are never stored in the clear: client secrets, codes and
-- refresh tokens as SHA-256 (they are 256-bit random values), passwords as scrypt.

-- Registered apps and backend services.
CREATE TABLE smart_client (
  client_id text PRIMARY KEY,
  name text NOT NULL,
  -- 'public' | 'confidential-symmetric' (client_secret_basic) | 'confidential-asymmetric' (private_key_jwt)
  auth_type text NOT NULL,
  secret_hash text,
  redirect_uris text[] NOT NULL DEFAULT '{}',
  launch_uri text,
  jwks jsonb,
  jwks_url text,
  -- Space-separated scopes the client may be granted (requests beyond them are refused).
  scope text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Login users for the authorization pages.
CREATE TABLE smart_user (
  id text PRIMARY KEY,
  username text NOT NULL UNIQUE,
  password_hash text NOT NULL,
  fhir_user text,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- The server's signing keys. A retired key stays published until `publish_until` so tokens it signed still verify.
CREATE TABLE smart_signing_key (
  kid text PRIMARY KEY,
  alg text NOT NULL,
  private_jwk jsonb NOT NULL,
  public_jwk jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  retired_at timestamptz,
  publish_until timestamptz
);

-- EHR launch contexts (`launch` parameter), created by the chart (admin API / CLI `launch`).
CREATE TABLE smart_launch (
  id text PRIMARY KEY,
  client_id text NOT NULL REFERENCES smart_client(client_id) ON DELETE CASCADE,
  patient text,
  encounter text,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);

-- An authorization request between /auth/authorize and the code: login, consent, patient picker.
CREATE TABLE smart_auth_request (
  id text PRIMARY KEY,
  client_id text NOT NULL,
  params jsonb NOT NULL,
  user_id text,
  -- SHA-256 of the browser cookie set at login: only that browser may consent.
  browser_hash text,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);

-- Authorization codes: single use; `used_at` set atomically on redemption.
CREATE TABLE smart_code (
  code_hash text PRIMARY KEY,
  client_id text NOT NULL,
  redirect_uri text NOT NULL,
  code_challenge text NOT NULL,
  scope text NOT NULL,
  user_id text,
  context jsonb NOT NULL,
  -- Every token issued from this code shares this family; a reused code revokes the family.
  family text NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at timestamptz
);

-- Issued tokens. Access tokens are JWTs (row keyed by jti, checked for revocation on use); refresh tokens
-- are opaque (row keyed by their hash). `family` ties a grant's tokens together for revocation.
CREATE TABLE smart_token (
  id text PRIMARY KEY,
  kind text NOT NULL,
  client_id text NOT NULL,
  user_id text,
  scope text NOT NULL,
  context jsonb NOT NULL,
  family text NOT NULL,
  issued_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  revoked boolean NOT NULL DEFAULT false,
  -- Refresh tokens: set when rotated; presenting a rotated one again is reuse → the family is revoked.
  rotated_at timestamptz
);
CREATE INDEX smart_token_family_idx ON smart_token (family);
CREATE INDEX smart_token_expires_idx ON smart_token (expires_at);

-- Client assertion `jti`s seen, per client, until their `exp`: a replay is refused across processes.
CREATE TABLE smart_jti (
  client_id text NOT NULL,
  jti text NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (client_id, jti)
);
CREATE INDEX smart_jti_expires_idx ON smart_jti (expires_at);
