import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, OperationOutcome, Patient, Resource } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { dataSets } from '../../tools/shared-data.js';

const synthea = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.json'));
const JSON_HEADERS = { 'content-type': 'application/fhir+json' };

/** Every `reference` string anywhere in a resource. */
function references(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) value.forEach((v) => references(v, out));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') out.push(v);
      else references(v, out);
    }
  }
  return out;
}

describe.each(testDatabases())('FHIR batch and transaction on $name', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  let base: string;
  const postBundle = async (bundle: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(base, { method: 'POST', headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(bundle) });
    return { status: res.status, body: (await res.json()) as Bundle & { issue?: OperationOutcome['issue'] } };
  };

  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    server = await startTestServer(db);
    base = server.fhir;
  });
  afterAll(async () => {
    await server.stop();
    await drop();
  });

  it.each(dataSets())('loads every Synthea transaction bundle of the $name with every urn:uuid rewritten, leaving no dangling reference', async (set) => {
    const dir = path.join(set.root, 'fhir/synthea');
    const before = Number((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM resource WHERE NOT deleted')).rows[0]!.n);
    let entries = 0;
    for (const file of synthea(dir)) {
      const bundle = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as Bundle;
      entries += bundle.entry?.length ?? 0;
      const { status, body } = await postBundle(bundle, { prefer: 'return=minimal' });
      expect(status, `${file}: ${JSON.stringify(body).slice(0, 300)}`).toBe(200);
      expect(body.type).toBe('transaction-response');
      expect(body.entry).toHaveLength(bundle.entry?.length ?? 0);
      expect(body.entry?.every((e) => e.response?.status === '201 Created')).toBe(true);
    }
    // The corpus's 40 patients hold 4,003 entries (its README); the fixtures are its first six.
    if (set.name === 'shared corpus') expect(entries).toBe(4003);
    else expect(entries).toBeGreaterThan(0);

    const rows = (await db.query<{ resource_type: string; id: string; content: string }>(
      'SELECT resource_type, id, content FROM resource WHERE NOT deleted',
    )).rows;
    expect(rows.length).toBeGreaterThanOrEqual(before + entries);
    const known = new Set(rows.map((r) => `${r.resource_type}/${r.id}`));
    const dangling: string[] = [];
    let checked = 0;
    for (const row of rows) {
      const resource = JSON.parse(row.content) as Resource & { contained?: Resource[] };
      const contained = new Set((resource.contained ?? []).map((c) => `#${c.id}`));
      for (const ref of references(resource)) {
        checked++;
        // `#id` points into the resource's own contained list; everything else must be a stored resource.
        const ok = ref.startsWith('#') ? contained.has(ref) : known.has(ref);
        if (!ok) dangling.push(`${row.resource_type}/${row.id} → ${ref}`);
      }
    }
    expect(checked).toBeGreaterThan(set.name === 'shared corpus' ? 5000 : 1000);
    expect(dangling).toEqual([]);
  });

  it('is atomic: one invalid entry rolls back every entry, and the error names the entry', async () => {
    const before = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM resource')).rows[0].n;
    const { status, body } = await postBundle({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:1', resource: { resourceType: 'Patient', name: [{ family: 'Atomic' }] }, request: { method: 'POST', url: 'Patient' } },
        { resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'urn:uuid:1' }, valueQuantity: { value: 'high' } }, request: { method: 'POST', url: 'Observation' } },
      ],
    });
    expect(status).toBe(400);
    expect(body.issue?.[0].diagnostics).toContain('Bundle.entry[1]');
    expect(body.issue?.[0].expression?.[0]).toMatch(/^Bundle\.entry\[1\]\.resource\.value/);
    const after = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM resource')).rows[0].n;
    expect(after).toBe(before);
  });

  it('processes DELETE, POST, PUT, GET in that order and resolves urn:uuid references in every entry', async () => {
    const victim = (await (await fetch(`${base}/Patient`, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify({ resourceType: 'Patient' }) })).json()) as Patient;
    const { status, body } = await postBundle({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { request: { method: 'GET', url: `Patient/${victim.id}/_history/1` } },
        { fullUrl: 'urn:uuid:obs', resource: { resourceType: 'Observation', status: 'final', code: { text: 'hr' }, subject: { reference: 'urn:uuid:pat' } }, request: { method: 'PUT', url: 'Observation/tx-obs-1' } },
        { fullUrl: 'urn:uuid:pat', resource: { resourceType: 'Patient', name: [{ family: 'Order' }] }, request: { method: 'POST', url: 'Patient' } },
        { request: { method: 'DELETE', url: `Patient/${victim.id}` } },
      ],
    });
    expect(status).toBe(200);
    expect(body.entry?.map((e) => e.response?.status)).toEqual(['200 OK', '201 Created', '201 Created', '200 OK']);
    const patientLocation = body.entry?.[2].response?.location as string;
    const patientId = /Patient\/([^/]+)\//.exec(patientLocation)?.[1];
    const obs = (await (await fetch(`${base}/Observation/tx-obs-1`)).json()) as { subject: { reference: string } };
    expect(obs.subject.reference).toBe(`Patient/${patientId}`);
    expect((await fetch(`${base}/Patient/${victim.id}`)).status).toBe(410);
  });

  it('refuses a reference to a urn:uuid no entry declares', async () => {
    const { status, body } = await postBundle({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'urn:uuid:nowhere' } }, request: { method: 'POST', url: 'Observation' } }],
    });
    expect(status).toBe(400);
    expect(body.issue?.[0].diagnostics).toContain('urn:uuid:nowhere');
  });

  it('runs batch entries independently: a failing entry does not undo the others', async () => {
    const { status, body } = await postBundle({
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { resource: { resourceType: 'Patient', name: [{ family: 'Batch' }] }, request: { method: 'POST', url: 'Patient' } },
        { resource: { resourceType: 'Patient', birthDate: 'not-a-date' }, request: { method: 'POST', url: 'Patient' } },
        { request: { method: 'GET', url: 'Patient/does-not-exist' } },
      ],
    });
    expect(status).toBe(200);
    expect(body.type).toBe('batch-response');
    expect(body.entry?.[0].response?.status).toBe('201 Created');
    expect(body.entry?.[1].response?.status).toBe('400');
    expect(body.entry?.[1].response?.outcome?.issue?.[0].diagnostics).toContain('Bundle.entry[1]');
    expect(body.entry?.[2].response?.status).toBe('404');
  });

  it('refuses Bundles that are neither batch nor transaction', async () => {
    const { status, body } = await postBundle({ resourceType: 'Bundle', type: 'collection' });
    expect(status).toBe(400);
    expect(body.issue?.[0].expression).toEqual(['Bundle.type']);
  });
});
