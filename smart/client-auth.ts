/**
 * Who is calling the token, introspection or revocation endpoint: a public client (client_id only), a
 * confidential client with client_secret_basic, or one proving a private key (private_key_jwt, RFC 7523) —
 * the SMART Backend Services assertion with every check the spec lists.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTVerifyGetKey,
} from 'jose';
import { findClient, type Client } from './clients.js';
import { OAuthError, tokenUrl, type SmartCore } from './core.js';
import { safeEqual, sha256 } from './secrets.js';

export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
export const ASSERTION_ALGS = ['RS384', 'ES384'];
/** SMART Backend Services: exp no more than five minutes in the future. */
const MAX_ASSERTION_LIFETIME = 300;
/** Clock skew tolerated between the client and us, seconds. */
const SKEW = 10;

export interface AuthenticatedClient {
  client: Client;
  method: 'none' | 'client_secret_basic' | 'private_key_jwt';
}

const invalidClient = (msg: string, basic = false) =>
  new OAuthError('invalid_client', msg, 401, basic ? { 'WWW-Authenticate': 'Basic realm="conflux"' } : {});

/** Remote JWKS per URL (jose caches keys and refetches on an unknown kid, with a cooldown). */
const remoteSets = new Map<string, JWTVerifyGetKey>();

function keySetOf(core: SmartCore, client: Client): JWTVerifyGetKey {
  if (client.jwks) return createLocalJWKSet(client.jwks);
  if (!client.jwksUrl) throw invalidClient(`client ${client.clientId} has no registered keys (jwks or jwks_url)`);
  let set = remoteSets.get(client.jwksUrl);
  if (!set) {
    set = createRemoteJWKSet(new URL(client.jwksUrl), {
      timeoutDuration: core.settings.jwksTimeoutMs,
      cacheMaxAge: core.settings.jwksCacheMs,
      cooldownDuration: 30_000,
    });
    remoteSets.set(client.jwksUrl, set);
  }
  return set;
}

function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'client_assertion has expired (exp is in the past)';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `client_assertion claim "${err.claim}" is invalid: ${err.message}`;
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'no registered key matches the client_assertion kid/alg';
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) return 'several registered keys match the client_assertion; give a kid';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'client_assertion signature does not verify with the registered key';
  if (err instanceof joseErrors.JWKSTimeout) return 'fetching the client JWKS timed out';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return `client_assertion alg is not allowed (use ${ASSERTION_ALGS.join(' or ')})`;
  return `client_assertion could not be verified: ${(err as Error).message}`;
}

/** Verifies a private_key_jwt client assertion and records its jti; returns the client it proves. */
export async function verifyClientAssertion(core: SmartCore, assertion: string): Promise<Client> {
  let header;
  let unverified;
  try {
    header = decodeProtectedHeader(assertion);
    unverified = decodeJwt(assertion);
  } catch {
    throw invalidClient('client_assertion is not a JWT');
  }
  // Checked before anything else: `none` and HMAC (which would use a public key as a secret) never get near a key.
  if (typeof header.alg !== 'string' || !ASSERTION_ALGS.includes(header.alg)) {
    throw invalidClient(`client_assertion alg "${String(header.alg)}" is refused; only ${ASSERTION_ALGS.join(' and ')} are accepted`);
  }
  if (!header.kid) throw invalidClient('client_assertion header has no kid');
  const iss = unverified.iss;
  if (typeof iss !== 'string' || !iss) throw invalidClient('client_assertion has no iss (must be the client_id)');
  if (unverified.sub !== iss) throw invalidClient(`client_assertion sub "${String(unverified.sub)}" must equal iss "${iss}" (the client_id)`);
  const client = await findClient(core.db, iss);
  if (!client) throw invalidClient(`client_assertion iss "${iss}" is not a registered client`);
  if (client.authType !== 'confidential-asymmetric') throw invalidClient(`client ${iss} is not registered for private_key_jwt (no jwks/jwks_url)`);
  let payload;
  try {
    ({ payload } = await jwtVerify(assertion, keySetOf(core, client), {
      algorithms: ASSERTION_ALGS,
      issuer: iss,
      subject: iss,
      audience: tokenUrl(core),
      requiredClaims: ['iss', 'sub', 'aud', 'exp', 'jti'],
      clockTolerance: SKEW,
    }));
  } catch (err) {
    throw invalidClient(describeJoseError(err));
  }
  const now = Math.floor(Date.now() / 1000);
  const exp = payload.exp as number;
  if (exp > now + MAX_ASSERTION_LIFETIME + SKEW) {
    throw invalidClient(`client_assertion exp is ${exp - now}s ahead; at most ${MAX_ASSERTION_LIFETIME}s is accepted`);
  }
  const jti = payload.jti as string;
  // The primary key makes the check atomic across processes sharing the database.
  const inserted = await core.db.query(
    `INSERT INTO smart_jti (client_id, jti, expires_at) VALUES ($1, $2, to_timestamp($3)) ON CONFLICT DO NOTHING RETURNING jti`,
    [iss, jti, exp + SKEW],
  );
  if (!inserted.rowCount) throw invalidClient(`client_assertion jti "${jti}" was already used (replay)`);
  return client;
}

function parseBasic(header: string): { id: string; secret: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return undefined;
  // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
  const dec = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));
  try {
    return { id: dec(decoded.slice(0, i)), secret: dec(decoded.slice(i + 1)) };
  } catch {
    return undefined;
  }
}

/** Authenticates the caller of an OAuth endpoint from the Authorization header or the form body. */
export async function authenticateClient(core: SmartCore, authorization: string | undefined, form: URLSearchParams): Promise<AuthenticatedClient> {
  const bodyId = form.get('client_id') ?? undefined;
  let result: AuthenticatedClient;
  if (authorization && /^Basic\s/i.test(authorization)) {
    const basic = parseBasic(authorization);
    if (!basic) throw invalidClient('malformed Basic authorization header', true);
    const client = await findClient(core.db, basic.id);
    if (!client || client.authType !== 'confidential-symmetric' || !client.secretHash || !safeEqual(sha256(basic.secret), client.secretHash)) {
      throw invalidClient('client authentication failed (unknown client or wrong secret)', true);
    }
    result = { client, method: 'client_secret_basic' };
  } else if (form.has('client_assertion') || form.has('client_assertion_type')) {
    if (form.get('client_assertion_type') !== JWT_BEARER) throw invalidClient(`client_assertion_type must be ${JWT_BEARER}`);
    const assertion = form.get('client_assertion');
    if (!assertion) throw invalidClient('client_assertion is missing');
    result = { client: await verifyClientAssertion(core, assertion), method: 'private_key_jwt' };
  } else if (form.has('client_secret')) {
    throw invalidClient('client_secret_post is not supported; send the secret with HTTP Basic (client_secret_basic)');
  } else {
    if (!bodyId) throw invalidClient('client authentication is missing (client_id, Basic credentials or client_assertion)');
    const client = await findClient(core.db, bodyId);
    if (!client) throw invalidClient(`client_id "${bodyId}" is not registered`);
    if (client.authType !== 'public') {
      throw invalidClient(`client ${bodyId} is confidential and must authenticate (${client.authType === 'confidential-symmetric' ? 'client_secret_basic' : 'private_key_jwt'})`);
    }
    result = { client, method: 'none' };
  }
  if (bodyId && bodyId !== result.client.clientId) throw invalidClient('client_id in the body does not match the authenticated client');
  return result;
}
