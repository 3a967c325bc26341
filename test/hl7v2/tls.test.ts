/**
 * MLLP over TLS with real certificates (a throwaway CA made with the openssl CLI), real sockets and the real
 * repository: server authentication, the settings read from MLLP_TLS_*, and mutual TLS when a CA is given.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Patient } from '@medplum/fhirtypes';
import { loadConfig } from '../../src/config.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import { getMessage, listMessages } from '../../src/messages/message-log.js';
import { frame, MllpDecoder } from '../../facades/hl7v2/mllp.js';
import { inboundDeps } from '../../facades/hl7v2/index.js';
import { startMllpListener, type MllpListener } from '../../facades/hl7v2/inbound/listener.js';
import { tlsFromEnv } from '../../facades/hl7v2/config.js';
import type { ProcessorDeps } from '../../facades/hl7v2/inbound/processor.js';
import { DB_KINDS, openTestDb, type TestDb } from './test-db.js';
import { msa } from './harness.js';

const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

interface Pki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate signed by a CA the server does not trust. */
  strangerCert: string;
  strangerKey: string;
}

function makePki(): Pki {
  const dir = mkdtempSync(path.join(tmpdir(), 'conflux-mllp-tls-'));
  const f = (name: string) => path.join(dir, name);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string) => ssl('req', '-x509', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.crt`), '-days', '2', '-subj', `/CN=${name}`);
  const leaf = (name: string, issuer: string, ext: string) => {
    writeFileSync(f(`${name}.ext`), ext);
    ssl('req', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${name}`);
    ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f(`${issuer}.crt`), '-CAkey', f(`${issuer}.key`), '-CAcreateserial', '-days', '2', '-out', f(`${name}.crt`), '-extfile', f(`${name}.ext`));
  };
  ca('test-ca');
  ca('stranger-ca');
  leaf('localhost', 'test-ca', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  leaf('lab-sender', 'test-ca', 'extendedKeyUsage=clientAuth\n');
  leaf('stranger', 'stranger-ca', 'extendedKeyUsage=clientAuth\n');
  return {
    dir,
    caCert: f('test-ca.crt'),
    serverCert: f('localhost.crt'),
    serverKey: f('localhost.key'),
    clientCert: f('lab-sender.crt'),
    clientKey: f('lab-sender.key'),
    strangerCert: f('stranger.crt'),
    strangerKey: f('stranger.key'),
  };
}

const ADT = (id: string, mrn: string) =>
  [
    `MSH|^~\\&|REG|HOSP|CONFLUX|HOSP|20240102030405+0100||ADT^A04^ADT_A01|${id}|P|2.5.1`,
    'EVN|A04|20240102030405+0100',
    `PID|1||${mrn}^^^HOSP^MR||Tls^Tessa^^^Ms||19750301|F`,
    `PV1|1|O|CLINIC^1^1||||1234^Welby^Marcus|||||||||||${mrn}-V1`,
  ].join('\r');

/** What a sender saw on one connection: the ACK frames it got, and how the connection ended. */
interface Outcome {
  secured: boolean;
  frames: string[];
  error?: NodeJS.ErrnoException;
}

/**
 * Connects (TLS or plain TCP), sends one framed message once connected, and waits for either an ACK or the
 * end of the connection. Resolves when the server answered or closed; never on a timer.
 */
function exchange(connect: () => net.Socket, payload: string, secureEvent: 'secureConnect' | 'connect'): Promise<Outcome> {
  return new Promise((resolve) => {
    const out: Outcome = { secured: false, frames: [] };
    const s = connect();
    const done = () => {
      s.destroy();
      resolve(out);
    };
    const dec = new MllpDecoder({
      frame: (p) => {
        out.frames.push(p.toString('utf8'));
        done();
      },
    });
    s.once(secureEvent, () => {
      out.secured = secureEvent === 'secureConnect';
      s.write(frame(Buffer.from(payload, 'utf8')));
    });
    s.on('data', (c: Buffer) => dec.push(c));
    s.on('error', (e: NodeJS.ErrnoException) => {
      out.error ??= e;
    });
    s.on('close', done);
  });
}

const tlsClient = (port: number, pki: Pki, client?: { cert: string; key: string }) => () =>
  tls.connect({
    host: '127.0.0.1',
    port,
    servername: 'localhost',
    ca: readFileSync(pki.caCert),
    ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}),
  });

describe.skipIf(!hasOpenssl).each(DB_KINDS)('MLLP over TLS (%s)', (kind) => {
  let pki: Pki;
  let t: TestDb;
  let rt: Runtime;
  let deps: ProcessorDeps;
  const warnings: string[] = [];
  const listeners: MllpListener[] = [];

  async function listen(env: NodeJS.ProcessEnv): Promise<MllpListener> {
    const l = await startMllpListener(deps, { port: 0, host: '127.0.0.1', idleTimeoutMs: 60_000, tls: tlsFromEnv(env) });
    listeners.push(l);
    return l;
  }
  async function storedPatient(controlId: string): Promise<Patient | undefined> {
    const [log] = await listMessages(rt.db, { controlId });
    if (!log) return undefined;
    const ref = (await getMessage(rt.db, log.id))!.resourceRefs.find((r) => r.startsWith('Patient/'));
    if (!ref) return undefined;
    return JSON.parse((await rt.repo.read('Patient', ref.split('/')[1]!)).content!) as Patient;
  }

  beforeAll(async () => {
    pki = makePki();
    t = await openTestDb(kind);
    const config = await loadConfig({ AUTH: 'off', DATA_DIR: '/tmp/conflux-hl7-test', PORT: '0' });
    rt = await createRuntime(config, { db: t.db });
    deps = await inboundDeps({ db: rt.db, router: rt.router, write: rt.write, log: { info: () => undefined, warn: (m: string) => void warnings.push(m), error: () => undefined } });
  }, 60_000);
  afterAll(async () => {
    for (const l of listeners) await l.close();
    await t?.close();
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  });

  describe('server certificate only (MLLP_TLS_CERT + MLLP_TLS_KEY)', () => {
    let l: MllpListener;
    beforeAll(async () => {
      l = await listen({ MLLP_TLS_CERT: pki.serverCert, MLLP_TLS_KEY: pki.serverKey });
    });

    it('an ADT^A04 over a verified TLS connection is acknowledged AA and the Patient is stored', async () => {
      const out = await exchange(tlsClient(l.port, pki), ADT('TLS-1', 'TLS-MRN-1'), 'secureConnect');
      expect(out.error).toBeUndefined();
      expect(out.secured).toBe(true);
      expect(out.frames).toHaveLength(1);
      expect(msa(out.frames[0]!)).toMatchObject({ code: 'AA', controlId: 'TLS-1' });
      const p = await storedPatient('TLS-1');
      expect(p?.identifier?.[0]?.value).toBe('TLS-MRN-1');
      expect(p?.name?.[0]).toMatchObject({ family: 'Tls', given: ['Tessa'] });
    }, 30_000);

    it('a plain-TCP MLLP sender gets no ACK: the connection is closed and nothing is logged or stored', async () => {
      const seen = warnings.length;
      const out = await exchange(() => net.connect(l.port, '127.0.0.1'), ADT('PLAIN-1', 'PLAIN-MRN-1'), 'connect');
      expect(out.frames).toEqual([]);
      expect(await listMessages(rt.db, { controlId: 'PLAIN-1' })).toEqual([]);
      expect(warnings.slice(seen).join('\n')).toMatch(/TLS connection refused: .*wrong version number/);
    }, 30_000);

    it('a client that does not trust the server certificate gives up (server authentication works)', async () => {
      const out = await exchange(
        () => tls.connect({ host: '127.0.0.1', port: l.port, servername: 'localhost', ca: readFileSync(path.join(pki.dir, 'stranger-ca.crt')) }),
        ADT('UNTRUSTED-1', 'UNTRUSTED-MRN-1'),
        'secureConnect',
      );
      expect(out.secured).toBe(false);
      expect(out.error?.code).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
      expect(out.frames).toEqual([]);
    }, 30_000);
  });

  describe('mutual TLS (MLLP_TLS_CA set)', () => {
    let l: MllpListener;
    beforeAll(async () => {
      l = await listen({ MLLP_TLS_CERT: pki.serverCert, MLLP_TLS_KEY: pki.serverKey, MLLP_TLS_CA: pki.caCert });
    });

    it('a client certificate from the CA is accepted: AA and the Patient stored', async () => {
      const out = await exchange(tlsClient(l.port, pki, { cert: pki.clientCert, key: pki.clientKey }), ADT('MTLS-1', 'MTLS-MRN-1'), 'secureConnect');
      expect(out.error).toBeUndefined();
      expect(msa(out.frames[0] ?? '')).toMatchObject({ code: 'AA', controlId: 'MTLS-1' });
      expect((await storedPatient('MTLS-1'))?.identifier?.[0]?.value).toBe('MTLS-MRN-1');
    }, 30_000);

    it.each([
      ['without a client certificate', undefined, 'NOCERT-1', /TLS connection refused: .*peer did not return a certificate/],
      ['with a certificate from another CA', 'stranger', 'STRANGER-1', /TLS connection refused: client certificate refused \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/],
    ] as const)('a client %s is refused: no ACK, nothing logged or stored', async (_label, who, id, reason) => {
      const seen = warnings.length;
      const client = who ? { cert: pki.strangerCert, key: pki.strangerKey } : undefined;
      const out = await exchange(tlsClient(l.port, pki, client), ADT(id, `${id}-MRN`), 'secureConnect');
      expect(out.frames).toEqual([]);
      expect(warnings.slice(seen).join('\n')).toMatch(reason);
      expect(await listMessages(rt.db, { controlId: id })).toEqual([]);
    }, 30_000);
  });

  describe('settings', () => {
    it('a half-done TLS configuration is an error, never a silent fallback to plain TCP', () => {
      expect(() => tlsFromEnv({ MLLP_TLS_CERT: pki.serverCert })).toThrow(/MLLP_TLS_KEY not set/);
      expect(() => tlsFromEnv({ MLLP_TLS_CA: pki.caCert })).toThrow(/MLLP_TLS_CERT and MLLP_TLS_KEY not set/);
      expect(() => tlsFromEnv({ MLLP_TLS_CERT: pki.serverCert, MLLP_TLS_KEY: path.join(pki.dir, 'missing.key') })).toThrow(/MLLP_TLS_KEY: cannot read .*missing\.key/);
      expect(tlsFromEnv({})).toBeUndefined();
      expect(tlsFromEnv({ MLLP_TLS_CERT: pki.serverCert, MLLP_TLS_KEY: pki.serverKey, MLLP_TLS_CA: pki.caCert })?.requestCert).toBe(true);
    });

    it('close() ends connections still in the TLS handshake instead of waiting for them', async () => {
      const l2 = await listen({ MLLP_TLS_CERT: pki.serverCert, MLLP_TLS_KEY: pki.serverKey });
      const idle = net.connect(l2.port, '127.0.0.1');
      await new Promise<void>((r) => idle.once('connect', () => r()));
      const closed = new Promise<void>((r) => idle.once('close', () => r()));
      idle.on('error', () => undefined);
      await l2.close();
      await closed;
      expect(idle.destroyed).toBe(true);
    }, 30_000);
  });
});
