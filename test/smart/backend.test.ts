/**
 * SMART Backend Services over real HTTP: jose-signed client assertions, every refusal the spec names,
 * JWKS by URL, introspection, revocation, admin-scoped tokens, 401/403 on the FHIR API.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, UnsecuredJWT, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabases } from '../helpers/db.js';
import { backendToken, fhirGet, makeKeyPair, registerBackend, seedPatients, tokenRequest, type BackendClient, type SmartTestServer, startSmartServer } from './helpers.js';

describe.each(testDatabases())('SMART Backend Services on $name', (tdb) => {
  let s: SmartTestServer;
  let drop: () => Promise<void>;
  let data: Awaited<ReturnType<typeof seedPatients>>;
  let client: BackendClient;

  beforeAll(async () => {
    const opened = await tdb.open();
    drop = opened.drop;
    s = await startSmartServer(opened.db);
    data = await seedPatients(s);
    client = await registerBackend(s, { scope: 'system/*.rs system/Patient.cruds' });
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
    await drop?.();
  });

  async function refusalOf(assertion: string, scope = 'system/*.rs') {
    const r = await backendToken(s, client, scope, assertion);
    expect(r.status).toBe(401);
    expect(r.body.error).toBe('invalid_client');
    return r.body.error_description as string;
  }

  it('issues a short-lived token for a valid RS384 assertion and the token reads FHIR data', async () => {
    const r = await backendToken(s, client, 'system/Patient.rs system/Observation.rs');
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.body).toMatchObject({ token_type: 'Bearer', scope: 'system/Patient.rs system/Observation.rs' });
    expect(r.body.expires_in).toBeLessThanOrEqual(300);
    expect(r.body.refresh_token).toBeUndefined();
    const read = await fhirGet(s, `Patient/${data.alice.id}`, r.body.access_token);
    expect(read.status).toBe(200);
    const search = await fhirGet(s, 'Observation?_count=50', r.body.access_token);
    expect(search.status).toBe(200);
    expect(search.body.entry.length).toBe(4);
  });

  it('accepts ES384 assertions', async () => {
    const es = await registerBackend(s, { alg: 'ES384' });
    const r = await backendToken(s, es, 'system/*.rs');
    expect(r.status).toBe(200);
  });

  it('refuses an expired assertion', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect(await refusalOf(await client.assertion({ claims: { exp: now - 120 } }))).toMatch(/expired/);
  });

  it('refuses an assertion whose exp is more than 5 minutes ahead', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect(await refusalOf(await client.assertion({ claims: { exp: now + 3600 } }))).toMatch(/at most 300s/);
  });

  it('refuses a replayed jti, also after the first use succeeded', async () => {
    const a = await client.assertion({ claims: { jti: 'same-jti-1' } });
    expect((await backendToken(s, client, 'system/*.rs', a)).status).toBe(200);
    const b = await client.assertion({ claims: { jti: 'same-jti-1' } });
    expect(await refusalOf(b)).toMatch(/already used/);
  });

  it('refuses alg none', async () => {
    const now = Math.floor(Date.now() / 1000);
    const unsigned = new UnsecuredJWT({ iss: client.clientId, sub: client.clientId, aud: s.tokenUrl, exp: now + 60, jti: crypto.randomUUID() }).encode();
    expect(await refusalOf(unsigned)).toMatch(/alg "none" is refused/);
  });

  it('refuses HS256 (an HMAC keyed with anything, e.g. the public key)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const hs = await new SignJWT({ iss: client.clientId, sub: client.clientId, aud: s.tokenUrl, exp: now + 60, jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'HS256', kid: client.kid })
      .sign(new TextEncoder().encode(JSON.stringify(client.publicJwk)));
    expect(await refusalOf(hs)).toMatch(/alg "HS256" is refused/);
  });

  it('refuses RS256 (only RS384/ES384)', async () => {
    const { generateKeyPair } = await import('jose');
    const rs256 = await generateKeyPair('RS256');
    expect(await refusalOf(await client.assertion({ header: { alg: 'RS256' }, key: rs256.privateKey }))).toMatch(/RS256" is refused/);
  });

  it('refuses a wrong aud', async () => {
    expect(await refusalOf(await client.assertion({ claims: { aud: `${s.base}/fhir` } }))).toMatch(/aud/);
  });

  it('refuses iss != sub and an unknown iss', async () => {
    expect(await refusalOf(await client.assertion({ claims: { sub: 'someone-else' } }))).toMatch(/sub .* must equal iss/);
    expect(await refusalOf(await client.assertion({ claims: { iss: 'nobody', sub: 'nobody' } }))).toMatch(/not a registered client/);
  });

  it('refuses a missing jti and a missing exp', async () => {
    expect(await refusalOf(await client.assertion({ claims: { jti: undefined } }))).toMatch(/jti/);
    expect(await refusalOf(await client.assertion({ claims: { exp: undefined } }))).toMatch(/exp/);
  });

  it('refuses an unknown kid and a signature by another key', async () => {
    expect(await refusalOf(await client.assertion({ header: { kid: 'not-registered' } }))).toMatch(/no registered key/);
    const other = await makeKeyPair('RS384');
    expect(await refusalOf(await client.assertion({ key: other.privateKey }))).toMatch(/signature/);
  });

  it('refuses scope escalation beyond the registration and non-system scopes', async () => {
    const r = await backendToken(s, client, 'system/Observation.cruds');
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: 'invalid_scope' });
    expect(r.body.error_description).toMatch(/system\/Observation\.cruds/);
    const p = await backendToken(s, client, 'patient/*.rs');
    expect(p.body.error).toBe('invalid_scope');
  });

  it('refuses client_credentials with a public client', async () => {
    const app = await s.admin('POST', '/clients', { name: 'app', redirect_uris: ['http://127.0.0.1:9/cb'] });
    const r = await tokenRequest(s, { grant_type: 'client_credentials', client_id: app.body.client_id, scope: 'system/*.rs' });
    expect(r.status).toBe(400);
    expect(r.body.error).toBe('unauthorized_client');
  });

  it('fetches the client JWKS from its URL (with a timeout and cache)', async () => {
    let served: JWK | undefined;
    let fetches = 0;
    const jwksServer = http.createServer((_req, res) => {
      fetches++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [served] }));
    });
    await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
      const remote = await registerBackend(s, {
        jwksUrl: async (jwk) => {
          served = jwk;
          return url;
        },
      });
      expect((await backendToken(s, remote, 'system/*.rs')).status).toBe(200);
      expect((await backendToken(s, remote, 'system/*.rs')).status).toBe(200);
      expect(fetches).toBe(1);
    } finally {
      jwksServer.close();
    }
  });

  it('refuses registration of a JWKS that carries a private key', async () => {
    const { exportJWK, generateKeyPair } = await import('jose');
    const kp = await generateKeyPair('RS384', { extractable: true });
    const r = await s.admin('POST', '/clients', { name: 'leaky', jwks: { keys: [{ ...(await exportJWK(kp.privateKey)), kid: 'k' }] } });
    expect(r.status).toBe(400);
    expect(r.body.issue[0].diagnostics).toMatch(/PRIVATE key material/);
  });

  it('answers 401 with WWW-Authenticate: Bearer for a missing, malformed, forged or revoked token', async () => {
    const none = await fhirGet(s, `Patient/${data.alice.id}`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer realm="conflux"');
    expect(none.body.resourceType).toBe('OperationOutcome');
    const junk = await fhirGet(s, `Patient/${data.alice.id}`, 'not-a-jwt');
    expect(junk.status).toBe(401);
    expect(junk.headers.get('www-authenticate')).toMatch(/^Bearer realm="conflux", error="invalid_token"/);
    // Signed by a key that is not ours:
    const other = await makeKeyPair('RS384');
    const forged = await new SignJWT({ client_id: client.clientId, scope: 'system/*.rs' })
      .setProtectedHeader({ alg: 'RS384', kid: other.kid, typ: 'at+jwt' })
      .setIssuer(s.fhir)
      .setAudience(s.fhir)
      .setJti(crypto.randomUUID())
      .setExpirationTime('5m')
      .sign(other.privateKey);
    expect((await fhirGet(s, `Patient/${data.alice.id}`, forged)).status).toBe(401);
  });

  it('introspects (RFC 7662) and revokes (RFC 7009) a token', async () => {
    const t = (await backendToken(s, client, 'system/Patient.rs')).body.access_token as string;
    const auth = async () => ({
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await client.assertion(),
    });
    const intro = async (token: string) =>
      (await fetch(`${s.base}/auth/introspect`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token, ...(await auth()) }) })).json();
    const active = (await intro(t)) as any;
    expect(active).toMatchObject({ active: true, client_id: client.clientId, scope: 'system/Patient.rs', token_type: 'Bearer' });
    const revoke = await fetch(`${s.base}/auth/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: t, ...(await auth()) }) });
    expect(revoke.status).toBe(200);
    expect(((await intro(t)) as any).active).toBe(false);
    const read = await fhirGet(s, `Patient/${data.alice.id}`, t);
    expect(read.status).toBe(401);
    expect(read.body.issue[0].diagnostics).toMatch(/revoked/);
    // unauthenticated introspection is refused
    const anon = await fetch(`${s.base}/auth/introspect`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: t }) });
    expect(anon.status).toBe(401);
  });

  it('403 with an OperationOutcome when the scope does not cover the interaction', async () => {
    const t = (await backendToken(s, client, 'system/Patient.rs')).body.access_token as string;
    const r = await fhirGet(s, `Observation/${data.aliceVital.id}`, t);
    expect(r.status).toBe(403);
    expect(r.body.issue[0]).toMatchObject({ code: 'forbidden' });
    const w = await fetch(`${s.fhir}/Patient`, { method: 'POST', headers: { authorization: `Bearer ${t}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Patient' }) });
    expect(w.status).toBe(403);
    const t2 = (await backendToken(s, client, 'system/Patient.cruds')).body.access_token as string;
    const w2 = await fetch(`${s.fhir}/Patient`, { method: 'POST', headers: { authorization: `Bearer ${t2}`, 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Patient' }) });
    expect(w2.status).toBe(201);
  });

  it('lets only a full-system token (system/*.cruds) use the admin API', async () => {
    const t = (await backendToken(s, client, 'system/*.rs')).body.access_token as string;
    const list = (tok: string) => fetch(`${s.base}/admin/clients`, { headers: { authorization: `Bearer ${tok}` } });
    expect((await list(t)).status).toBe(401);
    const adminClient = await registerBackend(s, { scope: 'system/*.cruds' });
    const at = (await backendToken(s, adminClient, 'system/*.cruds')).body.access_token as string;
    expect((await list(at)).status).toBe(200);
  });

  it('writes an AuditEvent for issued and refused tokens', async () => {
    const t = (await backendToken(s, client, 'system/AuditEvent.rs')).body.access_token as string;
    const issued = await fhirGet(s, `AuditEvent?_count=200`, t);
    const codes = issued.body.entry.map((e: any) => `${e.resource.subtype[0].code}:${e.resource.outcome}`);
    expect(codes).toContain('token-issued:0');
    expect(codes).toContain('token-refused:4');
  });
});
