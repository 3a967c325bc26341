/**
 * A transaction's writes go to the database together: however many entries, one statement settles every
 * condition and one writes every resource (history, current row, search index). Counted on a real database.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, BundleEntry } from '@medplum/fhirtypes';
import type { Database, Tx } from '../../src/db/database.js';
import { loadConfig } from '../../src/config.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import { systemAccess } from '../../src/index.js';
import { testDatabases } from '../helpers/db.js';

/** The database, with every statement run inside a transaction recorded. */
function counting(db: Database, statements: string[]): Database {
  const wrapped = Object.create(db) as Database;
  wrapped.transaction = (fn) =>
    db.transaction((tx) => fn({ query: (sql, params) => (statements.push(sql.trim().slice(0, 40)), tx.query(sql, params)), exec: (sql) => tx.exec(sql) } as Tx));
  return wrapped;
}

function labBundle(tag: string, results: number): Bundle {
  const patient = `urn:uuid:${crypto.randomUUID()}`;
  const obs: BundleEntry[] = Array.from({ length: results }, (_, i) => ({
    fullUrl: `urn:uuid:${crypto.randomUUID()}`,
    resource: {
      resourceType: 'Observation',
      status: 'final',
      identifier: [{ system: 'urn:test:result', value: `${tag}-${i}` }],
      code: { coding: [{ system: 'http://loinc.org', code: '2823-3' }] },
      subject: { reference: patient },
      valueQuantity: { value: i, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' },
    },
    request: { method: 'PUT', url: `Observation?identifier=urn:test:result|${tag}-${i}` },
  }));
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: patient,
        resource: { resourceType: 'Patient', identifier: [{ system: 'urn:test:mrn', value: tag }] },
        request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=urn:test:mrn|${tag}` },
      },
      ...obs,
    ],
  };
}

describe.each(testDatabases())('transaction statements on $name', (tdb) => {
  let rt: Runtime;
  let drop: () => Promise<void>;
  const statements: string[] = [];
  beforeAll(async () => {
    const opened = await tdb.open();
    drop = opened.drop;
    rt = await createRuntime(await loadConfig({ AUTH: 'off', PORT: '0' }), { db: counting(opened.db, statements) });
  });
  afterAll(async () => {
    await rt?.close();
    await drop?.();
  });

  const post = (bundle: Bundle) => rt.router.handle({ method: 'POST', path: '', query: [], headers: {}, body: bundle, access: systemAccess('test') });

  it.each([2, 40])('%i conditional entries: one lock, one lookup, one write', async (n) => {
    statements.length = 0;
    const res = await post(labBundle(`T${n}-${Date.now()}`, n));
    expect(res.status).toBe(200);
    const entries = (res.resource as Bundle).entry!;
    expect(entries.map((e) => e.response!.status)).toEqual(Array(n + 1).fill('201 Created'));
    expect(statements.map((s) => s.split(/\s/)[0])).toEqual(['SELECT', '(SELECT', 'WITH']);
    // Everything was written: every Observation is found by its identifier and points at the new Patient.
    const patient = entries[0]!.response!.location!.split('/_history')[0]!;
    const search = await rt.router.handle({ method: 'GET', path: 'Observation', query: [['subject', patient], ['_summary', 'count']], headers: {}, access: systemAccess('test') });
    expect((search.resource as Bundle).total).toBe(n);
  });

  it('a resend of the same Bundle matches every condition and writes nothing new', async () => {
    const bundle = labBundle(`R-${Date.now()}`, 5);
    await post(bundle);
    statements.length = 0;
    const res = await post(bundle);
    const entries = (res.resource as Bundle).entry!;
    expect(entries.map((e) => e.response!.status)).toEqual(Array(6).fill('200 OK'));
  });
});
