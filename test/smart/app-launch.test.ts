/**
 * SMART App Launch over real HTTP: the fhirclient library (Node entry) as the app, for standalone and EHR launch,
 * the server's real login/consent pages, and every refusal of the authorization code flow.
 */
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { authorizeUrl, Browser, codeRequest, signInAndConsent, startApp } from './flow.js';
import { fhirGet, seedPatients, type SmartTestServer, startSmartServer, tokenRequest } from './helpers.js';

const USER = { username: 'dr.who', password: 'correct horse battery' };

describe.each(testDatabases())('SMART App Launch on $name', (tdb) => {
  let s: SmartTestServer;
  let drop: () => Promise<void>;
  let db: Database;
  let data: Awaited<ReturnType<typeof seedPatients>>;
  let practitionerId: string;
  const redirect = 'http://127.0.0.1:9/callback';
  let publicId: string;

  beforeAll(async () => {
    const opened = await tdb.open();
    drop = opened.drop;
    db = opened.db;
    s = await startSmartServer(opened.db);
    data = await seedPatients(s);
    practitionerId = (await s.seed({ resourceType: 'Practitioner', name: [{ family: 'Who' }] })).id!;
    const u = await s.admin('POST', '/users', { username: USER.username, password: USER.password, fhir_user: `Practitioner/${practitionerId}` });
    expect(u.status).toBe(201);
    const c = await s.admin('POST', '/clients', { name: 'Hand-built app', redirect_uris: [redirect] });
    publicId = c.body.client_id;
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
    await drop?.();
  });

  /** Runs the code flow by hand up to the token response. */
  async function handFlow(scope: string, o: { untick?: string[]; patient?: string } = {}) {
    const req = codeRequest(s, publicId, redirect, scope);
    const back = new URL(await signInAndConsent(s, req.url, { ...USER, ...o }));
    expect(back.searchParams.get('state')).toBe(req.state);
    const code = back.searchParams.get('code')!;
    const exchange = (over: Record<string, string> = {}) =>
      tokenRequest(s, { grant_type: 'authorization_code', code, redirect_uri: redirect, client_id: publicId, code_verifier: req.verifier, ...over });
    return { code, exchange, req };
  }

  it('standalone launch with fhirclient: patient picker, patient-confined token, id_token, refresh token', async () => {
    const cfg = {
      clientId: '',
      scope: 'launch/patient openid fhirUser offline_access patient/*.read',
      iss: s.fhir,
      alsoRead: () => [`Patient/${data.bob.id}`, `Observation/${data.aliceLab.id}`, `Observation/${data.bobLab.id}`],
    };
    const app = await startApp(cfg);
    try {
      const reg = await s.admin('POST', '/clients', { name: 'Standalone app', redirect_uris: [app.redirectUri], scope: 'launch/patient openid fhirUser offline_access patient/*.rs' });
      cfg.clientId = reg.body.client_id;
      const b = new Browser();
      const toAuthorize = await b.request(`${app.base}/standalone`);
      expect(toAuthorize.status).toBe(302);
      const authUrl = new URL(toAuthorize.location!);
      expect(authUrl.origin + authUrl.pathname).toBe(`${s.base}/auth/authorize`);
      expect(authUrl.searchParams.get('code_challenge_method')).toBe('S256');
      const back = await signInAndConsent(s, toAuthorize.location!, { ...USER, patient: data.alice.id, browser: b });
      expect(back.startsWith(app.redirectUri)).toBe(true);
      const done = await b.request(back);
      expect(done.status).toBe(200);
      const r = await app.result;
      expect(r.patientId).toBe(data.alice.id);
      expect(r.reads).toEqual({
        [`Patient/${data.alice.id}`]: 200,
        [`Patient/${data.bob.id}`]: 403,
        [`Observation/${data.aliceLab.id}`]: 200,
        [`Observation/${data.bobLab.id}`]: 403,
      });
      const t = r.tokenResponse;
      expect(t).toMatchObject({ token_type: 'Bearer', patient: data.alice.id, need_patient_banner: true });
      expect(t.smart_style_url).toBe(`${s.base}/auth/smart-style.json`);
      expect(t.scope.split(' ')).toEqual(expect.arrayContaining(['launch/patient', 'openid', 'fhirUser', 'offline_access', 'patient/*.read']));
      expect(t.refresh_token).toBeTruthy();
      expect(t.expires_in).toBeGreaterThan(0);
      // The id_token verifies with the published keys and names the user.
      const jwks = createLocalJWKSet(await (await fetch(`${s.base}/auth/jwks`)).json());
      const { payload } = await jwtVerify(t.id_token, jwks, { issuer: s.fhir, audience: cfg.clientId });
      expect(payload.fhirUser).toBe(`${s.fhir}/Practitioner/${practitionerId}`);
    } finally {
      await app.close();
    }
  });

  it('EHR launch with fhirclient and a confidential (client_secret_basic) client: launch context from the admin API', async () => {
    const cfg = { clientId: '', clientSecret: '', scope: 'launch openid fhirUser patient/Patient.rs patient/Observation.rs', iss: s.fhir, alsoRead: () => [`Encounter/${data.encounter.id}`] };
    const app = await startApp(cfg);
    try {
      const reg = await s.admin('POST', '/clients', { name: 'EHR app', redirect_uris: [app.redirectUri], launch_uri: `${app.base}/launch`, confidential: true });
      expect(reg.body.client_secret).toBeTruthy();
      expect(reg.body.token_endpoint_auth_method).toBe('client_secret_basic');
      cfg.clientId = reg.body.client_id;
      cfg.clientSecret = reg.body.client_secret;
      const launch = await s.admin('POST', '/launch', { client_id: cfg.clientId, patient: data.alice.id, encounter: data.encounter.id });
      expect(launch.status).toBe(201);
      const launchUrl = new URL(launch.body.url);
      expect(launchUrl.searchParams.get('iss')).toBe(s.fhir);
      expect(launchUrl.searchParams.get('launch')).toBe(launch.body.launch);
      const b = new Browser();
      const toAuthorize = await b.request(launch.body.url);
      expect(new URL(toAuthorize.location!).searchParams.get('launch')).toBe(launch.body.launch);
      const back = await signInAndConsent(s, toAuthorize.location!, { ...USER, browser: b });
      await b.request(back);
      const r = await app.result;
      expect(r.patientId).toBe(data.alice.id);
      expect(r.encounterId).toBe(data.encounter.id);
      expect(r.tokenResponse).toMatchObject({ patient: data.alice.id, encounter: data.encounter.id, need_patient_banner: false });
      // Encounter is not in the granted scopes
      expect(r.reads[`Encounter/${data.encounter.id}`]).toBe(403);
    } finally {
      await app.close();
    }
  });

  it('an unknown or unregistered redirect_uri shows an error page and never redirects', async () => {
    const req = codeRequest(s, publicId, 'http://127.0.0.1:9/evil', 'patient/*.rs');
    const r = await new Browser().request(req.url);
    expect(r.status).toBe(400);
    expect(r.location).toBeUndefined();
    expect(r.html).toContain('is not registered');
    // prefix of a registered one is not a match either
    const r2 = await new Browser().request(codeRequest(s, publicId, `${redirect}/more`, 'patient/*.rs').url);
    expect(r2.status).toBe(400);
    expect(r2.location).toBeUndefined();
    const r3 = await new Browser().request(codeRequest(s, 'no-such-client', redirect, 'patient/*.rs').url);
    expect(r3.status).toBe(400);
    expect(r3.location).toBeUndefined();
  });

  async function refusedRedirect(extra: Record<string, string | undefined>, scope = 'launch/patient patient/*.rs') {
    const req = codeRequest(s, publicId, redirect, scope, extra);
    const r = await new Browser().request(req.url);
    expect(r.status).toBe(302);
    const back = new URL(r.location!);
    expect(back.origin + back.pathname).toBe(redirect);
    expect(back.searchParams.get('state')).toBe(extra.state ?? req.state);
    expect(back.searchParams.get('code')).toBeNull();
    return { error: back.searchParams.get('error'), description: back.searchParams.get('error_description') ?? '' };
  }

  it('refuses a request without PKCE, and with the plain method', async () => {
    expect(await refusedRedirect({ code_challenge: undefined, code_challenge_method: undefined })).toMatchObject({ error: 'invalid_request', description: expect.stringMatching(/PKCE/) });
    expect(await refusedRedirect({ code_challenge_method: 'plain' })).toMatchObject({ error: 'invalid_request', description: expect.stringMatching(/plain is refused/) });
  });

  it('refuses an aud that is not this FHIR base', async () => {
    expect(await refusedRedirect({ aud: 'https://other.example/fhir' })).toMatchObject({ error: 'invalid_request', description: expect.stringMatching(/aud/) });
  });

  it('refuses scopes beyond the registration and unknown scopes', async () => {
    const narrow = await s.admin('POST', '/clients', { name: 'narrow', redirect_uris: [redirect], scope: 'launch/patient patient/Observation.rs' });
    const req = codeRequest(s, narrow.body.client_id, redirect, 'launch/patient patient/*.cruds');
    const r = await new Browser().request(req.url);
    const back = new URL(r.location!);
    expect(back.searchParams.get('error')).toBe('invalid_scope');
    expect(back.searchParams.get('error_description')).toMatch(/patient\/\*\.cruds/);
    expect(await refusedRedirect({}, 'patient/Nonsense.rs')).toMatchObject({ error: 'invalid_scope' });
  });

  it('refuses an unknown launch and a launch of another client', async () => {
    expect(await refusedRedirect({ launch: 'bogus' }, 'launch patient/*.rs')).toMatchObject({ error: 'invalid_request', description: expect.stringMatching(/launch/) });
  });

  it('accepts POST to the authorize endpoint', async () => {
    const req = codeRequest(s, publicId, redirect, 'launch/patient patient/*.rs');
    const params = Object.fromEntries(new URL(req.url).searchParams);
    const r = await new Browser().request(`${s.base}/auth/authorize`, { form: params });
    expect(r.status).toBe(200);
    expect(r.html).toContain('name="password"');
  });

  it('refuses a wrong code_verifier, then the code is spent', async () => {
    const f = await handFlow('launch/patient patient/*.rs', { patient: data.alice.id });
    const wrong = await f.exchange({ code_verifier: 'x'.repeat(43) });
    expect(wrong.status).toBe(400);
    expect(wrong.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/code_verifier does not match/) });
    const missing = await f.exchange({ code_verifier: '' });
    expect(missing.body.error).toBe('invalid_request');
    expect((await f.exchange()).body.error).toBe('invalid_grant');
  });

  it('refuses a mismatching redirect_uri at the token endpoint', async () => {
    const f = await handFlow('launch/patient patient/*.rs', { patient: data.alice.id });
    const r = await f.exchange({ redirect_uri: 'http://127.0.0.1:9/other' });
    expect(r.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/redirect_uri/) });
  });

  it('a reused code is refused and revokes the tokens issued from it', async () => {
    const f = await handFlow('launch/patient patient/*.rs offline_access', { patient: data.alice.id });
    const first = await f.exchange();
    expect(first.status).toBe(200);
    expect((await fhirGet(s, `Patient/${data.alice.id}`, first.body.access_token)).status).toBe(200);
    const again = await f.exchange();
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');
    expect(again.body.error_description).toMatch(/already used/);
    expect((await fhirGet(s, `Patient/${data.alice.id}`, first.body.access_token)).status).toBe(401);
    const refresh = await tokenRequest(s, { grant_type: 'refresh_token', refresh_token: first.body.refresh_token, client_id: publicId });
    expect(refresh.body.error).toBe('invalid_grant');
  });

  it('the user may untick scopes; only ticked scopes are granted', async () => {
    const f = await handFlow('launch/patient patient/Patient.rs patient/Observation.rs', { patient: data.alice.id, untick: ['patient/Observation.rs'] });
    const t = await f.exchange();
    expect(t.body.scope).toBe('launch/patient patient/Patient.rs');
    expect((await fhirGet(s, `Observation/${data.aliceLab.id}`, t.body.access_token)).status).toBe(403);
  });

  it('the user may deny: access_denied with state', async () => {
    const req = codeRequest(s, publicId, redirect, 'launch/patient patient/*.rs');
    const back = new URL(await signInAndConsent(s, req.url, { ...USER, deny: true }));
    expect(back.searchParams.get('error')).toBe('access_denied');
    expect(back.searchParams.get('state')).toBe(req.state);
  });

  it('a wrong password re-shows the login page (401); consent needs the browser that signed in', async () => {
    const req = codeRequest(s, publicId, redirect, 'launch/patient patient/*.rs');
    const b = new Browser();
    const login = await b.request(req.url);
    const request = /name="request" value="([^"]*)"/.exec(login.html)![1];
    const bad = await b.request(`${s.base}/auth/login`, { form: { request, username: USER.username, password: 'wrong password' } });
    expect(bad.status).toBe(401);
    expect(bad.html).toContain('Wrong username or password');
    const ok = await b.request(`${s.base}/auth/login`, { form: { request, username: USER.username, password: USER.password } });
    expect(ok.status).toBe(303);
    const other = new Browser();
    const stolen = await other.request(`${s.base}/auth/consent`, { form: { request, decision: 'allow', scope: 'patient/*.rs', patient: data.alice.id } });
    expect(stolen.status).toBe(400);
    expect(stolen.location).toBeUndefined();
  });

  /** One sign-in attempt on a fresh authorization request, as a browser would make it. */
  async function signIn(username: string, password: string) {
    const req = codeRequest(s, publicId, redirect, 'launch/patient patient/*.rs');
    const b = new Browser();
    const login = await b.request(req.url);
    const request = /name="request" value="([^"]*)"/.exec(login.html)![1];
    return b.request(`${s.base}/auth/login`, { form: { request, username, password } });
  }

  it('sign-in throttling: five failures in a row lock the username, even against the right password, until the lockout ends', async () => {
    const who = { username: 'locked.out', password: 'a long enough password' };
    expect((await s.admin('POST', '/users', { ...who, fhir_user: `Practitioner/${practitionerId}` })).status).toBe(201);
    // A success clears the count: four failures, a success, four more never lock.
    for (let i = 0; i < 4; i++) expect((await signIn(who.username, 'wrong')).status).toBe(401);
    expect((await signIn(who.username, who.password)).status).toBe(303);
    for (let i = 0; i < 4; i++) expect((await signIn(who.username, 'wrong')).status).toBe(401);
    expect((await signIn(who.username, 'wrong')).status).toBe(401);
    const refused = await signIn(who.username, who.password);
    expect(refused.status).toBe(429);
    expect(refused.html).toContain('Too many failed sign-ins. Try again in 5 minutes.');
    // The lock is the username's: another user signs in from the same address.
    expect((await signIn(USER.username, USER.password)).status).toBe(303);
    // Lockout over (its time moved into the past): the right password works again.
    await db.query(`UPDATE smart_login_failure SET locked_until = now() - interval '1 second', last_at = now() - interval '1 hour' WHERE key = 'user:locked.out'`);
    expect((await signIn(who.username, who.password)).status).toBe(303);
  });

  it('sign-in throttling: twenty failures from one address, across usernames, lock the address (password spraying)', async () => {
    await db.query(`DELETE FROM smart_login_failure WHERE key LIKE 'ip:%'`);
    for (let i = 0; i < 20; i++) expect((await signIn(`spray.${i}`, 'Winter2026!')).status).toBe(401);
    expect((await signIn(USER.username, USER.password)).status).toBe(429);
    await db.query(`DELETE FROM smart_login_failure WHERE key LIKE 'ip:%'`);
    expect((await signIn(USER.username, USER.password)).status).toBe(303);
  });

  it('refresh tokens rotate; reusing a rotated one revokes the whole grant; scope cannot grow', async () => {
    const f = await handFlow('launch/patient patient/Patient.rs online_access', { patient: data.alice.id });
    const t1 = (await f.exchange()).body;
    const escalate = await tokenRequest(s, { grant_type: 'refresh_token', refresh_token: t1.refresh_token, client_id: publicId, scope: 'patient/*.cruds' });
    expect(escalate.body.error).toBe('invalid_scope');
    const t2 = await tokenRequest(s, { grant_type: 'refresh_token', refresh_token: t1.refresh_token, client_id: publicId });
    expect(t2.status).toBe(200);
    expect(t2.body.refresh_token).not.toBe(t1.refresh_token);
    expect(t2.body.patient).toBe(data.alice.id);
    expect((await fhirGet(s, `Patient/${data.alice.id}`, t2.body.access_token)).status).toBe(200);
    const reuse = await tokenRequest(s, { grant_type: 'refresh_token', refresh_token: t1.refresh_token, client_id: publicId });
    expect(reuse.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/already used/) });
    expect((await fhirGet(s, `Patient/${data.alice.id}`, t2.body.access_token)).status).toBe(401);
    const after = await tokenRequest(s, { grant_type: 'refresh_token', refresh_token: t2.body.refresh_token, client_id: publicId });
    expect(after.body.error).toBe('invalid_grant');
  });

  it('a confidential client must authenticate; a wrong secret is invalid_client', async () => {
    const conf = await s.admin('POST', '/clients', { name: 'conf', redirect_uris: [redirect], confidential: true });
    const req = codeRequest(s, conf.body.client_id, redirect, 'launch/patient patient/*.rs');
    const code = new URL(await signInAndConsent(s, req.url, { ...USER, patient: data.alice.id })).searchParams.get('code')!;
    const form = { grant_type: 'authorization_code', code, redirect_uri: redirect, code_verifier: req.verifier };
    const noAuth = await tokenRequest(s, { ...form, client_id: conf.body.client_id });
    expect(noAuth.status).toBe(401);
    expect(noAuth.body.error).toBe('invalid_client');
    const basic = (secret: string) => ({ authorization: `Basic ${Buffer.from(`${conf.body.client_id}:${secret}`).toString('base64')}` });
    const wrong = await tokenRequest(s, form, basic('nope'));
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('www-authenticate')).toMatch(/^Basic/);
    const ok = await tokenRequest(s, form, basic(conf.body.client_secret));
    expect(ok.status).toBe(200);
  });

  it('publishes discovery and rotates keys: old tokens keep working, new ones use the new kid', async () => {
    const cfg = (await fhirGet(s, '.well-known/smart-configuration')).body;
    expect(cfg.code_challenge_methods_supported).toEqual(['S256']);
    expect(cfg.token_endpoint_auth_methods_supported).toEqual(['client_secret_basic', 'private_key_jwt']);
    expect(cfg.token_endpoint_auth_signing_alg_values_supported).toEqual(['RS384', 'ES384']);
    for (const c of ['launch-ehr', 'launch-standalone', 'client-public', 'client-confidential-symmetric', 'client-confidential-asymmetric', 'context-ehr-patient', 'context-ehr-encounter', 'context-standalone-patient', 'permission-offline', 'permission-patient', 'permission-user', 'permission-v1', 'permission-v2', 'sso-openid-connect', 'authorize-post']) {
      expect(cfg.capabilities).toContain(c);
    }
    const meta = (await fhirGet(s, 'metadata')).body;
    const oauth = meta.rest[0].security.extension[0];
    expect(oauth.url).toBe('http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris');
    expect(oauth.extension).toContainEqual({ url: 'token', valueUri: cfg.token_endpoint });
    expect(oauth.extension).toContainEqual({ url: 'authorize', valueUri: cfg.authorization_endpoint });

    const f = await handFlow('launch/patient patient/Patient.rs', { patient: data.alice.id });
    const old = (await f.exchange()).body.access_token;
    const oldKid = (JSON.parse(Buffer.from(old.split('.')[0], 'base64url').toString()) as { kid: string }).kid;
    const rot = await s.admin('POST', '/keys/rotate');
    expect(rot.body.retired).toContain(oldKid);
    const jwks = await (await fetch(cfg.jwks_uri)).json();
    expect(jwks.keys.map((k: { kid: string }) => k.kid)).toEqual(expect.arrayContaining([oldKid, rot.body.kid]));
    expect(jwks.keys.every((k: Record<string, unknown>) => !('d' in k))).toBe(true);
    expect((await fhirGet(s, `Patient/${data.alice.id}`, old)).status).toBe(200);
    const f2 = await handFlow('launch/patient patient/Patient.rs', { patient: data.alice.id });
    const fresh = (await f2.exchange()).body.access_token;
    expect(JSON.parse(Buffer.from(fresh.split('.')[0], 'base64url').toString()).kid).toBe(rot.body.kid);
    expect(decodeJwt(fresh).patient).toBe(data.alice.id);
    expect((await fhirGet(s, `Patient/${data.alice.id}`, fresh)).status).toBe(200);
  });

  it('the launch admin API checks its input and writes an AuditEvent', async () => {
    expect((await s.admin('POST', '/launch', { client_id: publicId, patient: 'does-not-exist' })).status).toBe(400);
    expect((await s.admin('POST', '/launch', { client_id: 'nope', patient: data.alice.id })).status).toBe(404);
    const ok = await s.admin('POST', '/launch', { client_id: publicId, patient: data.alice.id });
    expect(ok.status).toBe(201);
    expect(ok.body.warning).toMatch(/no launch_uri/);
    const bundle = await s.runtime.repo.db.query<{ content: string }>("SELECT content FROM resource WHERE resource_type = 'AuditEvent' AND content LIKE '%launch-created%'");
    expect(bundle.rows.length).toBeGreaterThan(0);
  });

  it('the authorize URL helper keeps state through errors (sanity for authorizeUrl)', () => {
    expect(authorizeUrl(s, { a: 'b' })).toBe(`${s.base}/auth/authorize?a=b`);
  });
});
