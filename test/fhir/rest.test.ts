import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, OperationOutcome, Patient } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const JSON_HEADERS = { 'content-type': 'application/fhir+json' };

describe.each(testDatabases())('FHIR REST on $name', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  let base: string;

  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    server = await startTestServer(db, { MAX_BODY_BYTES: '200000' });
    base = server.fhir;
  });
  afterAll(async () => {
    await server.stop();
    await drop();
  });

  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}/${path}`, { method: 'POST', headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(body) });
  const put = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}/${path}`, { method: 'PUT', headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(body) });

  it('creates with a server UUID, reads, vreads, updates with versioning and answers 410 after delete', async () => {
    const created = await post('Patient', { resourceType: 'Patient', id: 'ignored', name: [{ family: 'Kowalski' }] });
    expect(created.status).toBe(201);
    const p = (await created.json()) as Patient;
    expect(p.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(p.meta?.versionId).toBe('1');
    expect(created.headers.get('etag')).toBe('W/"1"');
    expect(created.headers.get('location')).toBe(`${base}/Patient/${p.id}/_history/1`);
    expect(created.headers.get('last-modified')).toBe(new Date(p.meta?.lastUpdated as string).toUTCString());

    const read = await fetch(`${base}/Patient/${p.id}`);
    expect(read.status).toBe(200);
    expect(read.headers.get('content-type')).toContain('application/fhir+json');
    expect(((await read.json()) as Patient).name?.[0].family).toBe('Kowalski');

    const updated = await put(`Patient/${p.id}`, { resourceType: 'Patient', id: p.id, name: [{ family: 'Nowak' }] });
    expect(updated.status).toBe(200);
    expect(updated.headers.get('etag')).toBe('W/"2"');
    expect(updated.headers.get('content-location')).toBe(`${base}/Patient/${p.id}/_history/2`);

    const v1 = (await (await fetch(`${base}/Patient/${p.id}/_history/1`)).json()) as Patient;
    expect(v1.name?.[0].family).toBe('Kowalski');
    expect((await fetch(`${base}/Patient/${p.id}/_history/9`)).status).toBe(404);

    const del = await fetch(`${base}/Patient/${p.id}`, { method: 'DELETE' });
    expect(del.status).toBe(200);
    const gone = await fetch(`${base}/Patient/${p.id}`);
    expect(gone.status).toBe(410);
    expect(((await gone.json()) as OperationOutcome).issue?.[0].code).toBe('deleted');
    // Deleting again is idempotent.
    expect((await fetch(`${base}/Patient/${p.id}`, { method: 'DELETE' })).status).toBe(200);

    const history = (await (await fetch(`${base}/Patient/${p.id}/_history`)).json()) as Bundle;
    expect(history.type).toBe('history');
    expect(history.entry?.map((e) => e.request?.method)).toEqual(['DELETE', 'PUT', 'POST']);
    expect(history.entry?.[0].response?.status).toBe('204 No Content');
  });

  it('update-as-create with a client id, then If-Match: stale → 412, current → 200', async () => {
    const id = `client-${Date.now()}`;
    const r = await put(`Patient/${id}`, { resourceType: 'Patient', id, active: true });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toBe(`${base}/Patient/${id}/_history/1`);
    const stale = await put(`Patient/${id}`, { resourceType: 'Patient', id }, { 'if-match': 'W/"7"' });
    expect(stale.status).toBe(412);
    expect(((await stale.json()) as OperationOutcome).issue?.[0].diagnostics).toContain('version 1');
    const ok = await put(`Patient/${id}`, { resourceType: 'Patient', id, active: false }, { 'if-match': 'W/"1"' });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('etag')).toBe('W/"2"');
  });

  it('does not mint a new version when an update changes nothing (resends stay idempotent)', async () => {
    const id = `same-${Date.now()}`;
    await put(`Patient/${id}`, { resourceType: 'Patient', id, name: [{ family: 'Same', given: ['A'] }], active: true });
    // Same content, other key order, and a stale meta the client echoed back: still the same resource.
    const again = await put(`Patient/${id}`, { active: true, resourceType: 'Patient', id, name: [{ given: ['A'], family: 'Same' }], meta: { versionId: '1' } });
    expect(again.status).toBe(200);
    expect(again.headers.get('etag')).toBe('W/"1"');
    const changed = await put(`Patient/${id}`, { resourceType: 'Patient', id, name: [{ family: 'Same', given: ['A'] }], active: false });
    expect(changed.headers.get('etag')).toBe('W/"2"');
  });

  it('answers 304 to If-None-Match and If-Modified-Since', async () => {
    const p = (await (await post('Patient', { resourceType: 'Patient' })).json()) as Patient;
    const same = await fetch(`${base}/Patient/${p.id}`, { headers: { 'if-none-match': 'W/"1"' } });
    expect(same.status).toBe(304);
    const other = await fetch(`${base}/Patient/${p.id}`, { headers: { 'if-none-match': 'W/"2"' } });
    expect(other.status).toBe(200);
    const later = new Date(Date.now() + 60_000).toUTCString();
    expect((await fetch(`${base}/Patient/${p.id}`, { headers: { 'if-modified-since': later } })).status).toBe(304);
    const earlier = new Date(Date.now() - 3_600_000).toUTCString();
    expect((await fetch(`${base}/Patient/${p.id}`, { headers: { 'if-modified-since': earlier } })).status).toBe(200);
  });

  it('honours Prefer: return=minimal and return=OperationOutcome', async () => {
    const minimal = await post('Patient', { resourceType: 'Patient' }, { prefer: 'return=minimal' });
    expect(minimal.status).toBe(201);
    expect(await minimal.text()).toBe('');
    expect(minimal.headers.get('location')).toMatch(/\/Patient\/.+\/_history\/1$/);
    const oo = await post('Patient', { resourceType: 'Patient' }, { prefer: 'return=OperationOutcome' });
    expect(((await oo.json()) as OperationOutcome).resourceType).toBe('OperationOutcome');
  });

  it('applies JSON Patch, and refuses a failing test operation with a 400', async () => {
    const p = (await (await post('Patient', { resourceType: 'Patient', gender: 'male' })).json()) as Patient;
    const patch = (ops: unknown, headers: Record<string, string> = {}) =>
      fetch(`${base}/Patient/${p.id}`, {
        method: 'PATCH',
        headers: { 'content-type': 'application/json-patch+json', ...headers },
        body: JSON.stringify(ops),
      });
    const ok = await patch([{ op: 'test', path: '/gender', value: 'male' }, { op: 'replace', path: '/gender', value: 'female' }]);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as Patient).gender).toBe('female');
    const failed = await patch([{ op: 'test', path: '/gender', value: 'male' }]);
    expect(failed.status).toBe(400);
    const invalid = await patch([{ op: 'replace', path: '/gender', value: 42 }]);
    expect(invalid.status).toBe(400);
    expect((await patch([{ op: 'add', path: '/active', value: true }], { 'if-match': 'W/"1"' })).status).toBe(412);
  });

  it('explains every bad request with an OperationOutcome', async () => {
    const invalid = await post('Patient', { resourceType: 'Patient', birthDate: 'yesterday', gender: 'male', name: [{ given: 'Ann' }] });
    expect(invalid.status).toBe(400);
    const oo = (await invalid.json()) as OperationOutcome;
    const expressions = oo.issue?.flatMap((i) => i.expression ?? []);
    expect(expressions).toContain('Patient.birthDate');
    expect(expressions).toContain('Patient.name.given');

    // Required bindings on codes are checked too (the library's validator does not).
    const badCode = await post('Observation', { resourceType: 'Observation', status: 'bogus', code: { text: 'x' } });
    expect(badCode.status).toBe(400);
    const codeIssue = ((await badCode.json()) as OperationOutcome).issue?.[0];
    expect(codeIssue?.code).toBe('code-invalid');
    expect(codeIssue?.expression).toEqual(['Observation.status']);
    expect(codeIssue?.diagnostics).toContain('observation-status');
    const nested = await post('Patient', { resourceType: 'Patient', contact: [{ name: { family: 'K' }, gender: 'nope' }] });
    expect(((await nested.json()) as OperationOutcome).issue?.[0].expression).toEqual(['Patient.contact[0].gender']);

    const missing = await post('Observation', { resourceType: 'Observation' });
    expect(((await missing.json()) as OperationOutcome).issue?.flatMap((i) => i.expression)).toEqual(
      expect.arrayContaining(['Observation.status', 'Observation.code']),
    );

    const malformed = await fetch(`${base}/Patient`, { method: 'POST', headers: JSON_HEADERS, body: '{"resourceType":' });
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as OperationOutcome).issue?.[0].diagnostics).toContain('not valid JSON');

    const wrongType = await post('Patient', { resourceType: 'Observation' });
    expect(wrongType.status).toBe(400);
    expect(((await wrongType.json()) as OperationOutcome).issue?.[0].diagnostics).toContain('does not match');

    const wrongId = await put('Patient/abc', { resourceType: 'Patient', id: 'xyz' });
    expect(wrongId.status).toBe(400);

    const unknown = await fetch(`${base}/Spaceship/1`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as OperationOutcome).issue?.[0].diagnostics).toContain('Spaceship');

    const big = await post('Patient', { resourceType: 'Patient', text: { status: 'generated', div: `<div>${'x'.repeat(300_000)}</div>` } });
    expect(big.status).toBe(413);
    expect(((await big.json()) as OperationOutcome).resourceType).toBe('OperationOutcome');

    const xml = await fetch(`${base}/metadata`, { headers: { accept: 'application/fhir+xml' } });
    expect(xml.status).toBe(406);
    expect((await xml.json()) as OperationOutcome).toMatchObject({ resourceType: 'OperationOutcome' });
    expect((await fetch(`${base}/metadata?_format=xml`)).status).toBe(406);
    expect((await fetch(`${base}/metadata?_format=json`)).status).toBe(200);

    const badType = await fetch(`${base}/Patient`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' });
    expect(badType.status).toBe(415);
  });

  it('pages history with _count and next links, and filters with _since and _at', async () => {
    const id = `hist-${Date.now()}`;
    for (let i = 0; i < 5; i++) await put(`Patient/${id}`, { resourceType: 'Patient', id, birthDate: `200${i}-01-01` });
    const seen: string[] = [];
    let url: string | undefined = `${base}/Patient/${id}/_history?_count=2`;
    while (url) {
      const page = (await (await fetch(url)).json()) as Bundle;
      seen.push(...(page.entry ?? []).map((e) => e.response?.etag as string));
      url = page.link?.find((l) => l.relation === 'next')?.url;
    }
    expect(seen).toEqual(['W/"5"', 'W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']);

    const v3 = (await (await fetch(`${base}/Patient/${id}/_history/3`)).json()) as Patient;
    const since = (await (await fetch(`${base}/Patient/${id}/_history?_since=${encodeURIComponent(v3.meta?.lastUpdated as string)}`)).json()) as Bundle;
    expect(since.entry?.map((e) => e.response?.etag)).toEqual(expect.arrayContaining(['W/"5"', 'W/"4"', 'W/"3"']));
    expect(since.entry?.some((e) => e.response?.etag === 'W/"1"')).toBe(false);

    const at = (await (await fetch(`${base}/Patient/${id}/_history?_at=${encodeURIComponent(v3.meta?.lastUpdated as string)}`)).json()) as Bundle;
    expect(at.entry?.map((e) => e.response?.etag)).toContain('W/"3"');
    expect(at.entry?.map((e) => e.response?.etag)).not.toContain('W/"1"');

    const typeLevel = (await (await fetch(`${base}/Patient/_history?_count=3`)).json()) as Bundle;
    expect(typeLevel.entry).toHaveLength(3);
    expect(typeLevel.entry?.every((e) => e.fullUrl?.includes('/Patient/'))).toBe(true);
    const system = (await (await fetch(`${base}/_history?_count=1`)).json()) as Bundle;
    expect(system.entry).toHaveLength(1);
    expect(system.link?.some((l) => l.relation === 'next')).toBe(true);

    const bad = await fetch(`${base}/_history?_since=last-tuesday`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as OperationOutcome).issue?.[0].expression).toEqual(['_since']);
  });

  it('serves a CapabilityStatement built from the router', async () => {
    const cs = (await (await fetch(`${base}/metadata`)).json()) as {
      fhirVersion: string;
      rest: Array<{ resource: Array<{ type: string; interaction: Array<{ code: string }> }>; interaction: Array<{ code: string }> }>;
    };
    expect(cs.fhirVersion).toBe('4.0.1');
    const patient = cs.rest[0].resource.find((r) => r.type === 'Patient') as
      | { interaction: Array<{ code: string }>; searchParam: Array<{ name: string; type: string }> }
      | undefined;
    // Search parameters come from the running search engine: R4's own, with their types.
    expect(patient?.searchParam).toEqual(expect.arrayContaining([{ name: 'name', type: 'string', definition: expect.any(String) }, expect.objectContaining({ name: 'identifier', type: 'token' }), expect.objectContaining({ name: 'birthdate', type: 'date' })]));
    expect(patient?.interaction.map((i) => i.code)).toEqual(expect.arrayContaining(['read', 'vread', 'update', 'patch', 'delete', 'create', 'history-instance']));
    expect(cs.rest[0].resource.length).toBeGreaterThan(140);
    expect(cs.rest[0].interaction.map((i) => i.code)).toEqual(expect.arrayContaining(['transaction', 'batch', 'history-system']));
  });

  it('reports health, the OpenAPI document and the docs page', async () => {
    const health = await fetch(`${server.url}/healthz`);
    expect(await health.json()).toMatchObject({ status: 'ok', database: db.kind });
    const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/fhir/{type}/{id}', '/healthz', '/admin/status', '/admin/messages']));
    // Every fragment in openapi/ is merged as paths, never as a stray top-level key.
    expect(Object.keys(doc.paths).every((p) => p.startsWith('/'))).toBe(true);
    expect(Object.keys(doc).filter((k) => k.startsWith('/'))).toEqual([]);
    const docs = await fetch(`${server.url}/docs`);
    expect(docs.headers.get('content-type')).toContain('text/html');
    expect(await docs.text()).toContain('/fhir/{type}/{id}/_history/{vid}');
  });
});
