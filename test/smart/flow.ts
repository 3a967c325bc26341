/** A cookie-keeping, redirect-stepping HTTP "browser" for the server-rendered pages, and a fhirclient-based app. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { pkce, type SmartTestServer } from './helpers.js';

const require = createRequire(import.meta.url);
// fhirclient's Node entry (CommonJS).
const smart = require('fhirclient/lib/entry/node') as (req: http.IncomingMessage, res: http.ServerResponse, storage: unknown) => any;

export class Browser {
  private cookies = new Map<string, string>();

  async request(url: string, init: { method?: string; form?: Record<string, string | string[]> } = {}) {
    const body = init.form ? new URLSearchParams() : undefined;
    for (const [k, v] of Object.entries(init.form ?? {})) for (const x of [v].flat()) body!.append(k, x);
    const res = await fetch(url, {
      method: init.method ?? (body ? 'POST' : 'GET'),
      redirect: 'manual',
      headers: {
        ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        ...(this.cookies.size ? { cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {}),
      },
      body,
    });
    for (const c of res.headers.getSetCookie()) {
      const [kv] = c.split(';');
      const [k, ...v] = kv.split('=');
      this.cookies.set(k.trim(), v.join('='));
    }
    const location = res.headers.get('location');
    return { status: res.status, location: location ? new URL(location, url).toString() : undefined, html: await res.text() };
  }

  clearCookies() {
    this.cookies.clear();
  }
}

export const hidden = (html: string, name: string) => new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1];

/**
 * From an authorize URL to the redirect back to the app: sign in, (un)tick scopes, pick a patient, allow.
 * Returns the final redirect URL (with code or error).
 */
export async function signInAndConsent(
  s: SmartTestServer,
  authorizeUrl: string,
  o: { username: string; password: string; untick?: string[]; patient?: string; deny?: boolean; browser?: Browser },
): Promise<string> {
  const b = o.browser ?? new Browser();
  const login = await b.request(authorizeUrl);
  if (login.status !== 200) throw new Error(`authorize answered ${login.status} ${login.location ?? login.html.slice(0, 300)}`);
  const request = hidden(login.html, 'request')!;
  const after = await b.request(`${s.base}/auth/login`, { form: { request, username: o.username, password: o.password } });
  if (after.status !== 303) throw new Error(`login answered ${after.status}: ${after.html.slice(0, 300)}`);
  const consent = await b.request(after.location!);
  const scopes = [...consent.html.matchAll(/name="scope" value="([^"]*)"/g)].map((m) => m[1].replace(/&#39;/g, "'").replace(/&amp;/g, '&').replace(/&quot;/g, '"'));
  const form: Record<string, string | string[]> = {
    request,
    decision: o.deny ? 'deny' : 'allow',
    scope: scopes.filter((x) => !(o.untick ?? []).includes(x)),
  };
  if (o.patient) form.patient = o.patient;
  const done = await b.request(`${s.base}/auth/consent`, { form });
  if (done.status !== 303 || !done.location) throw new Error(`consent answered ${done.status}: ${done.html.slice(0, 300)}`);
  return done.location;
}

export function authorizeUrl(s: SmartTestServer, params: Record<string, string | undefined>): string {
  const u = new URL(`${s.base}/auth/authorize`);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v);
  return u.toString();
}

/** A hand-built, spec-following authorization request (for the negative tests). */
export function codeRequest(s: SmartTestServer, clientId: string, redirectUri: string, scope: string, extra: Record<string, string | undefined> = {}) {
  const p = pkce();
  const state = `st-${Math.random().toString(36).slice(2)}`;
  const url = authorizeUrl(s, {
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirectUri,
    scope,
    state,
    aud: s.fhir,
    code_challenge: p.challenge,
    code_challenge_method: 'S256',
    ...extra,
  });
  return { url, state, verifier: p.verifier };
}

export interface AppResult {
  tokenResponse: any;
  patientId?: string;
  encounterId?: string;
  /** FHIR reads the app did with its client: path → HTTP status. */
  reads: Record<string, number>;
}

/**
 * A SMART app (Node, fhirclient) on its own port: /launch (EHR launch), /standalone, /callback.
 * After the callback it reads its patient and the paths in `alsoRead`, and resolves `result`.
 */
export async function startApp(o: { clientId: string; scope: string; clientSecret?: string; iss: string; alsoRead?: (patient?: string) => string[] }) {
  const store = new Map<string, unknown>();
  const storage = {
    get: async (k: string) => store.get(k),
    set: async (k: string, v: unknown) => (store.set(k, v), v),
    unset: async (k: string) => store.delete(k),
  };
  let resolve!: (r: AppResult) => void;
  let reject!: (e: Error) => void;
  let result = new Promise<AppResult>((a, b) => ((resolve = a), (reject = b)));
  let lastClient: any;
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url!, 'http://x');
    try {
      const opts = { clientId: o.clientId, scope: o.scope, redirectUri: '/callback', clientSecret: o.clientSecret, pkceMode: 'required' };
      if (url.pathname === '/launch') return await smart(req, res, storage).authorize(opts);
      if (url.pathname === '/standalone') return await smart(req, res, storage).authorize({ ...opts, iss: o.iss });
      if (url.pathname === '/callback') {
        const client = await smart(req, res, storage).ready();
        lastClient = client;
        const reads: Record<string, number> = {};
        const patientId = client.patient?.id ?? undefined;
        for (const path of [...(patientId ? [`Patient/${patientId}`] : []), ...(o.alsoRead?.(patientId) ?? [])]) {
          try {
            await client.request({ url: path, flat: true });
            reads[path] = 200;
          } catch (e) {
            reads[path] = (e as { status?: number; statusCode?: number }).status ?? (e as { statusCode?: number }).statusCode ?? 0;
          }
        }
        resolve({ tokenResponse: client.state.tokenResponse, patientId, encounterId: client.encounter?.id ?? undefined, reads });
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end(`<!doctype html><p id="done">Signed in; patient ${patientId ?? '(none)'}</p>`);
        return;
      }
      res.writeHead(404).end();
    } catch (e) {
      reject(e as Error);
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String((e as Error).message));
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    redirectUri: `${base}/callback`,
    get result() {
      return result;
    },
    reset() {
      result = new Promise<AppResult>((a, b) => ((resolve = a), (reject = b)));
    },
    client: () => lastClient,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** Runs the whole code flow (public client, real pages) and returns the token response. */
export async function appToken(s: SmartTestServer, o: { scope: string; patient?: string; username: string; password: string }) {
  const redirect = 'http://127.0.0.1:9/cb';
  const reg = await s.admin('POST', '/clients', { name: 'test app', redirect_uris: [redirect] });
  const req = codeRequest(s, reg.body.client_id, redirect, o.scope);
  const back = new URL(await signInAndConsent(s, req.url, { username: o.username, password: o.password, patient: o.patient }));
  const code = back.searchParams.get('code');
  if (!code) throw new Error(`no code: ${back}`);
  const res = await fetch(`${s.base}/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirect, client_id: reg.body.client_id, code_verifier: req.verifier }),
  });
  const body = (await res.json()) as any;
  if (!body.access_token) throw new Error(`token: ${JSON.stringify(body)}`);
  return body as { access_token: string; scope: string; patient?: string };
}
