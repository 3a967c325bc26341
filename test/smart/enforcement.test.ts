/**
 * Scope enforcement on the FHIR API with real tokens: patient compartment escapes through read, vread, search,
 * _include/_revinclude, history, writes, batch and transaction entries; granular v2 scopes; patient users.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabases } from '../helpers/db.js';
import { appToken } from './flow.js';
import { fhirGet, fhirSend, seedPatients, type SmartTestServer, startSmartServer } from './helpers.js';

const DOC = { username: 'doc', password: 'password-1234' };
const VITALS = 'http://terminology.hl7.org/CodeSystem/observation-category|vital-signs';

describe.each(testDatabases())('scope enforcement on $name', (tdb) => {
  let s: SmartTestServer;
  let drop: () => Promise<void>;
  let d: Awaited<ReturnType<typeof seedPatients>>;
  let aliceRead: string;
  let aliceWrite: string;

  beforeAll(async () => {
    const opened = await tdb.open();
    drop = opened.drop;
    s = await startSmartServer(opened.db);
    d = await seedPatients(s);
    await s.admin('POST', '/users', { ...DOC, fhir_user: 'Practitioner/doc-1' });
    aliceRead = (await appToken(s, { ...DOC, scope: 'launch/patient patient/*.rs', patient: d.alice.id })).access_token;
    aliceWrite = (await appToken(s, { ...DOC, scope: 'launch/patient patient/*.cruds', patient: d.alice.id })).access_token;
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
    await drop?.();
  });

  const ids = (bundle: any) => (bundle.entry ?? []).filter((e: any) => e.resource?.resourceType !== 'OperationOutcome').map((e: any) => `${e.resource.resourceType}/${e.resource.id}`).sort();

  it('read and vread stay inside the patient compartment', async () => {
    expect((await fhirGet(s, `Patient/${d.alice.id}`, aliceRead)).status).toBe(200);
    expect((await fhirGet(s, `Observation/${d.aliceLab.id}`, aliceRead)).status).toBe(200);
    const bob = await fhirGet(s, `Patient/${d.bob.id}`, aliceRead);
    expect(bob.status).toBe(403);
    expect(bob.body.issue[0].diagnostics).toMatch(/outside the patient compartment/);
    expect((await fhirGet(s, `Observation/${d.bobLab.id}`, aliceRead)).status).toBe(403);
    expect((await fhirGet(s, `Observation/${d.bobLab.id}/_history/1`, aliceRead)).status).toBe(403);
  });

  it('search returns only the patient compartment, whatever the criteria', async () => {
    expect(ids((await fhirGet(s, 'Observation', aliceRead)).body)).toEqual([`Observation/${d.aliceLab.id}`, `Observation/${d.aliceVital.id}`].sort());
    expect(ids((await fhirGet(s, `Observation?subject=Patient/${d.bob.id}`, aliceRead)).body)).toEqual([]);
    expect(ids((await fhirGet(s, `Observation?_id=${d.bobLab.id}`, aliceRead)).body)).toEqual([]);
    expect(ids((await fhirGet(s, 'Patient', aliceRead)).body)).toEqual([`Patient/${d.alice.id}`]);
    expect(ids((await fhirGet(s, `?_type=Patient,Observation`, aliceRead)).body)).toHaveLength(3);
  });

  it('_include and _revinclude cannot pull in another patient', async () => {
    // An Observation of Alice that references Bob as focus: including its targets must not reveal Bob.
    await s.seed({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${d.alice.id}` }, focus: [{ reference: `Patient/${d.bob.id}` }] });
    const inc = await fhirGet(s, 'Observation?_include=Observation:focus&_include=Observation:subject', aliceRead);
    expect(inc.status).toBe(200);
    expect(ids(inc.body)).not.toContain(`Patient/${d.bob.id}`);
    expect(ids(inc.body)).toContain(`Patient/${d.alice.id}`);
    const rev = await fhirGet(s, `Patient?_revinclude=Observation:subject&_id=${d.alice.id},${d.bob.id}`, aliceRead);
    expect(ids(rev.body).some((x: string) => x.includes(d.bob.id!) || x.includes(d.bobLab.id!) || x.includes(d.bobVital.id!))).toBe(false);
    expect(ids(rev.body)).toContain(`Observation/${d.aliceLab.id}`);
  });

  it('history does not leak another patient', async () => {
    const h = await fhirGet(s, `Observation/${d.bobLab.id}/_history`, aliceRead);
    expect(h.status === 403 || (h.status === 200 && (h.body.entry ?? []).length === 0)).toBe(true);
    const all = await fhirGet(s, 'Observation/_history', aliceRead);
    expect(all.status).toBe(200);
    const text = JSON.stringify(all.body);
    expect(text).not.toContain(d.bobLab.id!);
    expect(text).not.toContain(d.bobVital.id!);
    expect(text).toContain(d.aliceLab.id!);
  });

  it('writes: only inside the compartment, and never moving a resource out of another one', async () => {
    const obs = (p: string) => ({ resourceType: 'Observation', status: 'final', code: { text: 'w' }, subject: { reference: `Patient/${p}` } });
    expect((await fhirSend(s, 'POST', 'Observation', obs(d.alice.id!), aliceWrite)).status).toBe(201);
    expect((await fhirSend(s, 'POST', 'Observation', obs(d.bob.id!), aliceWrite)).status).toBe(403);
    expect((await fhirSend(s, 'POST', 'Observation', obs(d.alice.id!), aliceRead)).status).toBe(403);
    // Take over Bob's Observation by re-pointing it at Alice:
    expect((await fhirSend(s, 'PUT', `Observation/${d.bobLab.id}`, { ...obs(d.alice.id!), id: d.bobLab.id }, aliceWrite)).status).toBe(403);
    // Push Alice's Observation into Bob's record:
    expect((await fhirSend(s, 'PUT', `Observation/${d.aliceLab.id}`, { ...obs(d.bob.id!), id: d.aliceLab.id }, aliceWrite)).status).toBe(403);
    expect((await fetch(`${s.fhir}/Observation/${d.bobLab.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${aliceWrite}` } })).status).toBe(403);
    expect((await fhirGet(s, `Observation/${d.bobLab.id}`, aliceRead)).status).toBe(403); // still exists, still Bob's
    const still = await s.runtime.repo.readResource('Observation', d.bobLab.id!);
    expect((still as any).subject.reference).toBe(`Patient/${d.bob.id}`);
  });

  it('transaction: one entry outside the compartment refuses the whole Bundle and writes nothing', async () => {
    const before = (await s.runtime.db.query<{ n: string }>("SELECT count(*) AS n FROM resource WHERE resource_type = 'Observation'")).rows[0].n;
    const tx = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:1', resource: { resourceType: 'Observation', status: 'final', code: { text: 'a' }, subject: { reference: `Patient/${d.alice.id}` } }, request: { method: 'POST', url: 'Observation' } },
        { fullUrl: 'urn:uuid:2', resource: { resourceType: 'Observation', status: 'final', code: { text: 'b' }, subject: { reference: `Patient/${d.bob.id}` } }, request: { method: 'POST', url: 'Observation' } },
      ],
    };
    const r = await fhirSend(s, 'POST', '', tx, aliceWrite);
    expect(r.status).toBe(403);
    const after = (await s.runtime.db.query<{ n: string }>("SELECT count(*) AS n FROM resource WHERE resource_type = 'Observation'")).rows[0].n;
    expect(after).toBe(before);
    const read = await fhirSend(s, 'POST', '', { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'GET', url: `Patient/${d.bob.id}` } }] }, aliceWrite);
    expect(read.status).toBe(403);
  });

  it('batch: the entry outside the compartment gets its own 403', async () => {
    const r = await fhirSend(s, 'POST', '', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [{ request: { method: 'GET', url: `Patient/${d.alice.id}` } }, { request: { method: 'GET', url: `Patient/${d.bob.id}` } }, { request: { method: 'GET', url: `Observation?subject=Patient/${d.bob.id}` } }],
    }, aliceRead);
    expect(r.status).toBe(200);
    expect(r.body.entry[0].response.status).toMatch(/^200/);
    expect(r.body.entry[1].response.status).toMatch(/^403/);
    const searched = r.body.entry[2].resource;
    expect(searched.entry ?? []).toHaveLength(0);
  });

  it('granular v2 scope: only vital-signs Observations are visible', async () => {
    const t = (await appToken(s, { ...DOC, scope: `launch/patient patient/Observation.rs?category=${VITALS}`, patient: d.alice.id })).access_token;
    expect(ids((await fhirGet(s, 'Observation', t)).body)).toEqual([`Observation/${d.aliceVital.id}`]);
    expect((await fhirGet(s, `Observation/${d.aliceVital.id}`, t)).status).toBe(200);
    expect((await fhirGet(s, `Observation/${d.aliceLab.id}`, t)).status).toBe(403);
    expect((await fhirGet(s, 'Observation/_history', t)).status).toBe(403);
    expect((await fhirGet(s, `Observation/${d.aliceLab.id}/_history`, t)).status).toBe(403);
    const sys = await fhirGet(s, '_history', t);
    expect(sys.status === 403 || !JSON.stringify(sys.body).includes(d.aliceLab.id!)).toBe(true);
    expect((await fhirGet(s, `Patient/${d.alice.id}`, t)).status).toBe(403);
  });

  it('v1 user/ scopes for a practitioner reach every patient; writes need write scopes', async () => {
    const t = (await appToken(s, { ...DOC, scope: 'user/Observation.read user/Patient.read' })).access_token;
    expect((await fhirGet(s, `Observation/${d.bobLab.id}`, t)).status).toBe(200);
    expect(ids((await fhirGet(s, 'Patient', t)).body)).toEqual(expect.arrayContaining([`Patient/${d.alice.id}`, `Patient/${d.bob.id}`]));
    expect((await fhirSend(s, 'POST', 'Patient', { resourceType: 'Patient' }, t)).status).toBe(403);
    expect((await fhirGet(s, `Encounter/${d.encounter.id}`, t)).status).toBe(403);
  });

  it('patient/ and user/ scopes together (an EHR launch): each type follows its own scopes', async () => {
    // What apps launched from an Epic chart ask for: the patient's record, plus practitioners for display.
    const doc = await s.seed({ resourceType: 'Practitioner', name: [{ family: 'Who' }] });
    const byDoc = await s.seed({ resourceType: 'Observation', status: 'final', code: { text: 'seen' }, subject: { reference: `Patient/${d.alice.id}` }, performer: [{ reference: `Practitioner/${doc.id}` }] });
    const t = (await appToken(s, { ...DOC, scope: 'launch/patient patient/*.rs user/Practitioner.rs', patient: d.alice.id })).access_token;
    expect((await fhirGet(s, `Practitioner/${doc.id}`, t)).status).toBe(200);
    const practitioners = await fhirGet(s, `Practitioner?_id=${doc.id}`, t);
    expect(ids(practitioners.body), JSON.stringify(practitioners.body)).toEqual([`Practitioner/${doc.id}`]);
    const inc = await fhirGet(s, `Observation?_id=${byDoc.id}&_include=Observation:performer`, t);
    expect(ids(inc.body)).toEqual([`Observation/${byDoc.id}`, `Practitioner/${doc.id}`].sort());
    expect((await fhirGet(s, `Practitioner/${doc.id}/_history`, t)).status).toBe(200);
    // Everything else stays inside Alice's compartment.
    expect((await fhirGet(s, `Observation/${d.bobLab.id}`, t)).status).toBe(403);
    expect((await fhirGet(s, `Patient/${d.bob.id}`, t)).status).toBe(403);
    const mixed = ids((await fhirGet(s, `?_type=Patient,Practitioner&_count=100`, t)).body);
    expect(mixed).toContain(`Practitioner/${doc.id}`);
    expect(mixed).toContain(`Patient/${d.alice.id}`);
    expect(mixed).not.toContain(`Patient/${d.bob.id}`);
    const history = JSON.stringify((await fhirGet(s, '_history?_count=1000', t)).body);
    expect(history).toContain(doc.id!);
    expect(history).not.toContain(d.bobLab.id!);
    // Without the user/ scope a Practitioner is out of reach, as before.
    const patientOnly = (await appToken(s, { ...DOC, scope: 'launch/patient patient/*.rs', patient: d.alice.id })).access_token;
    expect((await fhirGet(s, `Practitioner/${doc.id}`, patientOnly)).status).toBe(403);
  });

  it('a patient signing in is confined to their own record even with user/ scopes', async () => {
    await s.admin('POST', '/users', { username: 'alice', password: 'alice-password', fhir_user: `Patient/${d.alice.id}` });
    const t = await appToken(s, { username: 'alice', password: 'alice-password', scope: 'user/*.rs' });
    expect((await fhirGet(s, `Patient/${d.alice.id}`, t.access_token)).status).toBe(200);
    expect((await fhirGet(s, `Patient/${d.bob.id}`, t.access_token)).status).toBe(403);
    expect(ids((await fhirGet(s, 'Observation', t.access_token)).body).some((x: string) => x.includes(d.bobLab.id!))).toBe(false);
  });

  it('the CapabilityStatement is public; everything else needs a token', async () => {
    expect((await fhirGet(s, 'metadata')).status).toBe(200);
    expect((await fhirGet(s, 'Patient')).status).toBe(401);
    expect((await fhirGet(s, '')).status).toBe(401);
  });
});
