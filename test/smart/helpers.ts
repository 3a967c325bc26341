import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import type { Resource } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

export interface SmartTestServer extends TestServer {
  base: string;
  tokenUrl: string;
  admin<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** Creates a resource as the system (no token involved). */
  seed<T extends Resource>(resource: T): Promise<T & { id: string }>;
}

export async function startSmartServer(db: Database, env: Record<string, string> = {}): Promise<SmartTestServer> {
  const server = await startTestServer(db, { AUTH: 'on', ...env });
  const base = server.runtime.config.baseUrl;
  return {
    ...server,
    base,
    tokenUrl: `${base}/auth/token`,
    async admin(method, path, body) {
      const res = await fetch(`${base}/admin${path}`, {
        method,
        headers: { authorization: `Bearer ${server.runtime.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    },
    async seed(resource) {
      return (await server.runtime.repo.create(resource)).resource as typeof resource & { id: string };
    },
  };
}

export interface BackendClient {
  clientId: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
  kid: string;
  /** A client assertion; override claims/header to build bad ones. */
  assertion(o?: { claims?: Record<string, unknown>; header?: Record<string, unknown>; key?: CryptoKey }): Promise<string>;
}

export async function makeKeyPair(alg: 'RS384' | 'ES384' = 'RS384') {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = randomUUID();
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg };
  return { publicKey, privateKey, publicJwk, kid, alg };
}

export async function registerBackend(s: SmartTestServer, o: { scope?: string; alg?: 'RS384' | 'ES384'; jwksUrl?: (jwk: JWK) => Promise<string> } = {}): Promise<BackendClient> {
  const alg = o.alg ?? 'RS384';
  const kp = await makeKeyPair(alg);
  const body: Record<string, unknown> = { name: 'bulk sync', scope: o.scope ?? 'system/*.rs' };
  if (o.jwksUrl) body.jwks_url = await o.jwksUrl(kp.publicJwk);
  else body.jwks = { keys: [kp.publicJwk] };
  const reg = await s.admin('POST', '/clients', body);
  if (reg.status !== 201) throw new Error(`client registration failed: ${JSON.stringify(reg.body)}`);
  const clientId = reg.body.client_id as string;
  return {
    clientId,
    privateKey: kp.privateKey,
    publicJwk: kp.publicJwk,
    kid: kp.kid,
    async assertion(x = {}) {
      const now = Math.floor(Date.now() / 1000);
      const claims = { iss: clientId, sub: clientId, aud: s.tokenUrl, exp: now + 240, jti: randomUUID(), ...x.claims };
      for (const [k, v] of Object.entries(claims)) if (v === undefined) delete (claims as Record<string, unknown>)[k];
      return new SignJWT(claims).setProtectedHeader({ alg, kid: kp.kid, typ: 'JWT', ...x.header } as any).sign(x.key ?? kp.privateKey);
    },
  };
}

export async function tokenRequest(s: SmartTestServer, form: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await fetch(s.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form),
  });
  return { status: res.status, body: (await res.json()) as any, headers: res.headers };
}

export async function backendToken(s: SmartTestServer, c: BackendClient, scope: string, assertion?: string) {
  return tokenRequest(s, {
    grant_type: 'client_credentials',
    scope,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion ?? (await c.assertion()),
  });
}

export async function fhirGet(s: SmartTestServer, path: string, token?: string) {
  const res = await fetch(`${s.fhir}/${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as any) : undefined, headers: res.headers };
}

export async function fhirSend(s: SmartTestServer, method: string, path: string, body: unknown, token: string) {
  const res = await fetch(`${s.fhir}/${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as any) : undefined };
}

export function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/** Two patients, each with a vital-signs and a laboratory Observation, and an Encounter for the first. */
export async function seedPatients(s: SmartTestServer) {
  const alice = await s.seed({ resourceType: 'Patient', name: [{ given: ['Alice'], family: 'Anders' }], birthDate: '1970-01-01' });
  const bob = await s.seed({ resourceType: 'Patient', name: [{ given: ['Bob'], family: 'Berg' }], birthDate: '1980-02-02' });
  const obs = (p: string, cat: string, code: string) =>
    s.seed({
      resourceType: 'Observation',
      status: 'final',
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: cat }] }],
      code: { coding: [{ system: 'http://loinc.org', code }] },
      subject: { reference: `Patient/${p}` },
    });
  const aliceVital = await obs(alice.id!, 'vital-signs', '8867-4');
  const aliceLab = await obs(alice.id!, 'laboratory', '2345-7');
  const bobVital = await obs(bob.id!, 'vital-signs', '8867-4');
  const bobLab = await obs(bob.id!, 'laboratory', '2345-7');
  const encounter = await s.seed({ resourceType: 'Encounter', status: 'in-progress', class: { code: 'IMP' }, subject: { reference: `Patient/${alice.id}` } });
  return { alice, bob, aliceVital, aliceLab, bobVital, bobLab, encounter };
}
