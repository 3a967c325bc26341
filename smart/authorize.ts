/**
 * The authorization endpoint and its pages: validate the request (errors about the client or redirect_uri are
 * shown, never redirected), sign in, consent (the user may untick scopes; standalone `launch/patient` picks a
 * patient), then redirect with a single-use code bound to the PKCE challenge.
 */
import { randomUUID } from 'node:crypto';
import express, { type Request, type Response } from 'express';
import type { Patient } from '@medplum/fhirtypes';
import { searchResources } from '../src/index.js';
import { findClient, type Client } from './clients.js';
import { fhirBase, type SmartCore } from './core.js';
import { consentPage, errorPage, loginPage } from './pages.js';
import { clearFailures, lockedFor, recordFailure } from './login-throttle.js';
import { parseScopes, scopeList, ScopeError, uncoveredScopes } from './scopes.js';
import { randomToken, safeEqual, sha256 } from './secrets.js';
import { checkLogin, findUser } from './users.js';
import { ConfluxError } from '../src/index.js';

interface Pending {
  clientId: string;
  clientName: string;
  redirectUri: string;
  state: string;
  scopes: string[];
  codeChallenge: string;
  /** EHR launch context. */
  launch?: { patient?: string; encounter?: string };
}

interface PendingRow {
  id: string;
  params: Pending | string;
  user_id: string | null;
  browser_hash: string | null;
  expires_at: Date;
}

const COOKIE = 'conflux_auth';
const PKCE_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;

/** Pages must not be framed (clickjacking on consent) nor cached. */
function pageHeaders(res: Response): Response {
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'");
  res.setHeader('Referrer-Policy', 'no-referrer');
  return res.type('html');
}

class ErrorPage extends ConfluxError {
  constructor(
    readonly title: string,
    message: string,
  ) {
    super('oauth', message);
  }
}

class RedirectError extends ConfluxError {
  constructor(
    readonly error: string,
    readonly description: string,
  ) {
    super('oauth', description);
  }
}

function redirectTo(uri: string, params: Record<string, string | undefined>): string {
  const u = new URL(uri);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v);
  return u.toString();
}

function formOf(req: Request): URLSearchParams {
  const q = new URLSearchParams(req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?') + 1) : '');
  if (req.method === 'POST' && typeof req.body === 'string') return new URLSearchParams(req.body);
  return q;
}

function cookieOf(req: Request): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === COOKIE) return v.join('=');
  }
  return undefined;
}

/** Validates an authorization request; throws ErrorPage before redirect_uri is trusted, RedirectError after. */
async function validate(core: SmartCore, p: URLSearchParams): Promise<{ client: Client; pending: Pending }> {
  const clientId = p.get('client_id');
  if (!clientId) throw new ErrorPage('Invalid request', 'client_id is missing');
  const client = await findClient(core.db, clientId);
  if (!client) throw new ErrorPage('Unknown application', `client_id "${clientId}" is not registered with this server`);
  const redirectUri = p.get('redirect_uri');
  if (!redirectUri) throw new ErrorPage('Invalid request', 'redirect_uri is missing');
  // Exact string comparison (no prefix, no normalisation): anything else is an open redirector.
  if (!client.redirectUris.includes(redirectUri)) {
    throw new ErrorPage('Invalid redirect_uri', `redirect_uri "${redirectUri}" is not registered for ${client.name}`);
  }
  if (p.get('response_type') !== 'code') throw new RedirectError('unsupported_response_type', 'response_type must be "code"');
  const state = p.get('state');
  if (!state) throw new RedirectError('invalid_request', 'state is required');
  const challenge = p.get('code_challenge');
  const method = p.get('code_challenge_method');
  if (!challenge) throw new RedirectError('invalid_request', 'PKCE is required: code_challenge is missing');
  if (method !== 'S256') throw new RedirectError('invalid_request', `code_challenge_method must be S256 (got "${method ?? ''}"; plain is refused)`);
  if (!PKCE_CHALLENGE.test(challenge)) throw new RedirectError('invalid_request', 'code_challenge must be the 43-character base64url SHA-256 of the verifier');
  const aud = (p.get('aud') ?? '').replace(/\/+$/, '');
  if (aud !== fhirBase(core)) throw new RedirectError('invalid_request', `aud "${p.get('aud') ?? ''}" is not this server's FHIR base ${fhirBase(core)}`);
  const scope = p.get('scope') ?? '';
  if (!scope.trim()) throw new RedirectError('invalid_scope', 'scope is required');
  try {
    parseScopes(scope);
  } catch (e) {
    if (e instanceof ScopeError) throw new RedirectError('invalid_scope', e.message);
    throw e;
  }
  const beyond = uncoveredScopes(scope, client.scope);
  if (beyond.length) throw new RedirectError('invalid_scope', `scope not registered for this client: ${beyond.join(' ')}`);
  const scopes = scopeList(scope);
  const launchId = p.get('launch');
  let launch: Pending['launch'];
  if (launchId) {
    if (!scopes.includes('launch')) throw new RedirectError('invalid_scope', 'a launch parameter needs the "launch" scope');
    const r = await core.db.query<{ patient: string | null; encounter: string | null }>(
      'SELECT patient, encounter FROM smart_launch WHERE id = $1 AND client_id = $2 AND expires_at > now()',
      [launchId, client.clientId],
    );
    if (!r.rows[0]) throw new RedirectError('invalid_request', 'launch is unknown, expired, or was created for another client');
    launch = { patient: r.rows[0].patient ?? undefined, encounter: r.rows[0].encounter ?? undefined };
  } else if (scopes.includes('launch')) {
    throw new RedirectError('invalid_request', 'the "launch" scope needs a launch parameter (EHR launch); standalone apps ask for launch/patient');
  }
  return { client, pending: { clientId: client.clientId, clientName: client.name, redirectUri, state, scopes, codeChallenge: challenge, launch } };
}

async function loadPending(core: SmartCore, id: string | null): Promise<PendingRow | undefined> {
  if (!id) return undefined;
  const r = await core.db.query<PendingRow>('SELECT id, params, user_id, browser_hash, expires_at FROM smart_auth_request WHERE id = $1 AND expires_at > now()', [id]);
  return r.rows[0];
}
const pendingOf = (row: PendingRow): Pending => (typeof row.params === 'string' ? (JSON.parse(row.params) as Pending) : row.params);

/** Patient picker needed: standalone launch asking for a patient. */
const needsPicker = (p: Pending) => !p.launch && p.scopes.includes('launch/patient');

function patientLabel(p: Patient): string {
  const n = p.name?.[0];
  const name = n ? [n.given?.join(' '), n.family].filter(Boolean).join(' ') || n.text : undefined;
  return `${name ?? '(no name)'}${p.birthDate ? `, born ${p.birthDate}` : ''} — Patient/${p.id}`;
}

export function authorizeRoutes(core: SmartCore): express.Router {
  const r = express.Router();
  const form = express.text({ type: 'application/x-www-form-urlencoded', limit: '64kb' });
  const ip = (req: Request) => req.ip;

  async function refuse(req: Request, res: Response, err: unknown, clientId?: string, redirect?: { uri: string; state?: string }) {
    if (err instanceof ErrorPage) {
      // The auditor logged its own failure; a refusal is answered the same whether or not its audit was stored.
      await core.audit({ action: 'authorize-refused', success: false, clientId, detail: `${err.title}: ${err.message}`, ip: ip(req) }).catch(() => undefined);
      pageHeaders(res).status(400).send(errorPage(err.title, err.message));
      return;
    }
    if (err instanceof RedirectError && redirect) {
      // (As above: logged by the auditor, the refusal stands either way.)
      await core.audit({ action: 'authorize-refused', success: false, clientId, detail: `${err.error}: ${err.description}`, ip: ip(req) }).catch(() => undefined);
      res.redirect(302, redirectTo(redirect.uri, { error: err.error, error_description: err.description, state: redirect.state }));
      return;
    }
    throw err;
  }

  const authorize = async (req: Request, res: Response) => {
    const p = formOf(req);
    let validated;
    try {
      validated = await validate(core, p);
    } catch (err) {
      const client = p.get('client_id') ? await findClient(core.db, p.get('client_id')!) : undefined;
      const uri = p.get('redirect_uri');
      return refuse(req, res, err, client?.clientId, uri && client?.redirectUris.includes(uri) ? { uri, state: p.get('state') ?? undefined } : undefined);
    }
    const id = randomToken();
    await core.db.query(
      `INSERT INTO smart_auth_request (id, client_id, params, expires_at) VALUES ($1, $2, $3, now() + make_interval(secs => $4))`,
      [id, validated.client.clientId, JSON.stringify(validated.pending), core.settings.authRequestTtl],
    );
    pageHeaders(res).send(loginPage({ requestId: id, clientName: validated.client.name }));
  };
  r.get('/auth/authorize', authorize);
  r.post('/auth/authorize', form, authorize);

  r.post('/auth/login', form, async (req, res) => {
    const p = formOf(req);
    const row = await loadPending(core, p.get('request'));
    if (!row || row.user_id) {
      pageHeaders(res).status(400).send(errorPage('Sign-in expired', 'This sign-in request is unknown, expired or already used. Start again from the application.'));
      return;
    }
    const pending = pendingOf(row);
    const username = p.get('username') ?? '';
    const address = ip(req) ?? 'unknown';
    const locked = await lockedFor(core.db, username, address);
    if (locked > 0) {
      await core.audit({ action: 'login-failed', success: false, clientId: pending.clientId, user: username || undefined, detail: 'refused: too many failed sign-ins (locked out)', ip: ip(req) });
      const minutes = Math.ceil(locked / 60);
      pageHeaders(res)
        .status(429)
        .setHeader('Retry-After', String(locked))
        .send(loginPage({ requestId: row.id, clientName: pending.clientName, username, error: `Too many failed sign-ins. Try again in ${minutes} minute${minutes === 1 ? '' : 's'}.` }));
      return;
    }
    const user = await checkLogin(core.db, username, p.get('password') ?? '');
    if (!user) {
      await recordFailure(core.db, username, address, core.settings.login);
      await core.audit({ action: 'login-failed', success: false, clientId: pending.clientId, user: username || undefined, detail: 'wrong username or password', ip: ip(req) });
      pageHeaders(res).status(401).send(loginPage({ requestId: row.id, clientName: pending.clientName, username, error: 'Wrong username or password.' }));
      return;
    }
    await clearFailures(core.db, username);
    const browser = randomToken();
    const upd = await core.db.query('UPDATE smart_auth_request SET user_id = $1, browser_hash = $2 WHERE id = $3 AND user_id IS NULL', [user.id, sha256(browser), row.id]);
    if (!upd.rowCount) {
      pageHeaders(res).status(409).send(errorPage('Sign-in conflict', 'This request was already signed in elsewhere.'));
      return;
    }
    const secure = core.config.baseUrl.startsWith('https:') ? '; Secure' : '';
    res.setHeader('Set-Cookie', `${COOKIE}=${browser}; Path=/auth; HttpOnly; SameSite=Lax; Max-Age=${core.settings.authRequestTtl}${secure}`);
    res.redirect(303, `/auth/consent?request=${encodeURIComponent(row.id)}`);
  });

  /** The pending request after login, only for the browser that signed in. */
  async function signedIn(req: Request, id: string | null) {
    const row = await loadPending(core, id);
    const cookie = cookieOf(req);
    if (!row || !row.user_id || !row.browser_hash || !cookie || !safeEqual(sha256(cookie), row.browser_hash)) return undefined;
    const user = await findUser(core.db, row.user_id);
    return user ? { row, pending: pendingOf(row), user } : undefined;
  }

  async function patientsFor(user: { fhirUser?: string }, query: string | undefined) {
    // A patient signing in may only pick themselves.
    if (user.fhirUser?.startsWith('Patient/')) {
      try {
        const p = await core.repo.readResource<Patient>('Patient', user.fhirUser.slice(8));
        return [{ id: p.id as string, label: patientLabel(p) }];
      } catch {
        return [];
      }
    }
    const bundle = await searchResources(core.db, {
      resourceType: 'Patient',
      params: [['_count', '50'], ...(query ? ([['name', query]] as Array<[string, string]>) : [])],
      baseUrl: fhirBase(core),
      handling: 'lenient',
    });
    return (bundle.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => ({ id: e.resource!.id as string, label: patientLabel(e.resource as Patient) }));
  }

  const expired = (res: Response) =>
    pageHeaders(res).status(400).send(errorPage('Request expired', 'This authorization request is unknown, expired, or belongs to another browser. Start again from the application.'));

  r.get('/auth/consent', async (req, res) => {
    const p = formOf(req);
    const s = await signedIn(req, p.get('request'));
    if (!s) return expired(res);
    const query = p.get('patient_name') ?? undefined;
    pageHeaders(res).send(
      consentPage({
        requestId: s.row.id,
        clientName: s.pending.clientName,
        user: s.user.fhirUser ? `${s.user.username} (${s.user.fhirUser})` : s.user.username,
        scopes: s.pending.scopes,
        patients: needsPicker(s.pending) ? await patientsFor(s.user, query) : undefined,
        patientQuery: query,
      }),
    );
  });

  r.post('/auth/consent', form, async (req, res) => {
    const p = formOf(req);
    const s = await signedIn(req, p.get('request'));
    if (!s) return expired(res);
    const { pending, user } = s;
    const done = await core.db.query('DELETE FROM smart_auth_request WHERE id = $1 RETURNING id', [s.row.id]);
    if (!done.rowCount) return expired(res);
    if (p.get('decision') !== 'allow') {
      await core.audit({ action: 'authorize-refused', success: false, clientId: pending.clientId, user: user.fhirUser ?? user.username, detail: 'user denied consent', ip: ip(req) });
      res.redirect(303, redirectTo(pending.redirectUri, { error: 'access_denied', error_description: 'The user denied access', state: pending.state }));
      return;
    }
    // Only scopes that were requested can be granted: a tampered form cannot add any.
    const ticked = new Set(p.getAll('scope'));
    let scopes = pending.scopes.filter((x) => ticked.has(x));
    let patient = pending.launch?.patient;
    const encounter = scopes.includes('launch') ? pending.launch?.encounter : undefined;
    if (!scopes.includes('launch')) patient = undefined;
    if (!pending.launch && scopes.includes('launch/patient')) {
      const picked = p.get('patient');
      const allowed = Boolean(picked) && (!user.fhirUser?.startsWith('Patient/') || user.fhirUser === `Patient/${picked}`);
      if (!picked || !allowed) {
        res.redirect(303, redirectTo(pending.redirectUri, { error: 'access_denied', error_description: 'no patient was selected', state: pending.state }));
        return;
      }
      try {
        await core.repo.read('Patient', picked);
      } catch {
        res.redirect(303, redirectTo(pending.redirectUri, { error: 'invalid_request', error_description: `Patient/${picked} does not exist`, state: pending.state }));
        return;
      }
      patient = picked;
    }
    if (user.fhirUser?.startsWith('Patient/')) patient = user.fhirUser.slice(8);
    // Without a patient in context, patient/ scopes would grant nothing: do not claim them.
    if (!patient) scopes = scopes.filter((x) => !x.startsWith('patient/'));
    const code = randomToken();
    const family = randomUUID();
    await core.db.query(
      `INSERT INTO smart_code (code_hash, client_id, redirect_uri, code_challenge, scope, user_id, context, family, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))`,
      [
        sha256(code),
        pending.clientId,
        pending.redirectUri,
        pending.codeChallenge,
        scopes.join(' '),
        user.id,
        JSON.stringify({ patient, encounter, needPatientBanner: !pending.launch }),
        family,
        core.settings.codeTtl,
      ],
    );
    res.redirect(303, redirectTo(pending.redirectUri, { code, state: pending.state }));
  });

  return r;
}
