/**
 * SMART authorization cost, in one run on one in-memory PGlite:
 *   - client_credentials tokens/s (jose-signed RS384 assertion, jti insert, token row, AuditEvent each);
 *   - FHIR read latency p50/p99 with a Bearer token vs the same read on an AUTH=off server.
 * npx tsx bench/auth.ts   (BENCH_TOKENS, BENCH_READS to change the counts)
 */
import { randomUUID } from 'node:crypto';
import type { Patient } from '@medplum/fhirtypes';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { loadConfig } from '../src/config.js';
import { migrate } from '../src/db/migrate.js';
import { openDatabase } from '../src/db/open.js';
import { startServer } from '../src/server.js';

const TOKENS = Number(process.env.BENCH_TOKENS ?? 300);
const READS = Number(process.env.BENCH_READS ?? 2000);
const CONCURRENCY = 8;

for (const level of ['log', 'info', 'warn'] as const) console[level] = () => undefined;
const out = (s: string) => process.stdout.write(`${s}\n`);

async function server(auth: 'on' | 'off') {
  const db = await openDatabase({ dataDir: null });
  await migrate(db);
  const config = await loadConfig({ AUTH: auth, PORT: '0', MLLP_PORT: '0', DICOM_PORT: '0', DATA_DIR: '/tmp/conflux-bench' });
  const s = await startServer(config, { db });
  return { s, db, base: s.runtime.config.baseUrl, fhir: s.runtime.config.fhirBaseUrl };
}

function pct(sorted: number[], p: number) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function timedReads(url: string, headers: Record<string, string>): Promise<number[]> {
  const times: number[] = [];
  let next = 0;
  // warm-up
  for (let i = 0; i < 50; i++) await (await fetch(url, { headers })).arrayBuffer();
  await Promise.all(
    Array.from({ length: 1 }, async () => {
      while (next++ < READS) {
        const t0 = performance.now();
        const res = await fetch(url, { headers });
        await res.arrayBuffer();
        if (res.status !== 200) throw new Error(`read answered ${res.status}`);
        times.push(performance.now() - t0);
      }
    }),
  );
  return times.sort((a, b) => a - b);
}

async function main() {
  const on = await server('on');
  const off = await server('off');
  try {
    const { publicKey, privateKey } = await generateKeyPair('RS384');
    const kid = randomUUID();
    const reg = await fetch(`${on.base}/admin/clients`, {
      method: 'POST',
      headers: { authorization: `Bearer ${on.s.runtime.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bench', jwks: { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'RS384' }] }, scope: 'system/*.rs' }),
    });
    const clientId = ((await reg.json()) as { client_id: string }).client_id;
    const tokenUrl = `${on.base}/auth/token`;
    const getToken = async () => {
      const assertion = await new SignJWT({ iss: clientId, sub: clientId, aud: tokenUrl, jti: randomUUID() })
        .setProtectedHeader({ alg: 'RS384', kid })
        .setExpirationTime('4m')
        .sign(privateKey);
      const res = await fetch(tokenUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          scope: 'system/Patient.rs',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
        }),
      });
      const body = (await res.json()) as { access_token?: string };
      if (!body.access_token) throw new Error(JSON.stringify(body));
      return body.access_token;
    };
    await getToken();
    let issued = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (issued < TOKENS) {
          issued++;
          await getToken();
        }
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    out(`client_credentials: ${issued} tokens in ${secs.toFixed(2)} s = ${(issued / secs).toFixed(0)} tokens/s (${CONCURRENCY} concurrent clients; includes assertion signing on the client side)`);

    const token = await getToken();
    const patient: Patient = { resourceType: 'Patient', name: [{ family: 'Bench' }] };
    const pOn = (await on.s.runtime.repo.create(patient)).resource.id;
    const pOff = (await off.s.runtime.repo.create(patient)).resource.id;
    const withAuth = await timedReads(`${on.fhir}/Patient/${pOn}`, { authorization: `Bearer ${token}` });
    const without = await timedReads(`${off.fhir}/Patient/${pOff}`, {});
    const f = (n: number) => `${n.toFixed(3)} ms`;
    out(`FHIR read, AUTH=off:          p50 ${f(pct(without, 50))}  p99 ${f(pct(without, 99))}  (${READS} sequential reads)`);
    out(`FHIR read, Bearer token:      p50 ${f(pct(withAuth, 50))}  p99 ${f(pct(withAuth, 99))}`);
    out(`added by token checking:      p50 ${f(pct(withAuth, 50) - pct(without, 50))}  p99 ${f(pct(withAuth, 99) - pct(without, 99))}`);
  } finally {
    await on.s.stop();
    await off.s.stop();
    await on.db.close();
    await off.db.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack}\n`);
    process.exit(1);
  },
);
