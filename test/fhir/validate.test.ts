import { describe, expect, it } from 'vitest';
import type { CapabilityStatement, OperationOutcome } from '@medplum/fhirtypes';
import { testDatabases } from '../helpers/db.js';
import { suiteServer } from '../helpers/server.js';

const JSON_HEADERS = { 'content-type': 'application/fhir+json' };

describe.each(testDatabases())('the validate operation and validation messages on $name', (backend) => {
  const suite = suiteServer(backend);

  const post = async (path: string, body: unknown) => {
    const res = await fetch(`${suite.base}/${path}`, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify(body) });
    return { status: res.status, outcome: (await res.json()) as OperationOutcome };
  };
  const count = async (type: string) => ((await (await fetch(`${suite.base}/${type}?_summary=count`)).json()) as { total: number }).total;

  it('a refused invariant names its key, its human text and where, as a sentence', async () => {
    const { status, outcome } = await post('Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, valueString: 'a', dataAbsentReason: { text: 'y' } });
    expect(status).toBe(400);
    const d = outcome.issue[0]!.diagnostics!;
    expect(d).toContain('Constraint obs-6 not met: dataAbsentReason SHALL only be present if Observation.value[x] is not present');
    expect(d).toContain('(at Observation; invariant: dataAbsentReason.empty() or value.empty())');
    expect(d).not.toContain('{');
  });

  it('accepts base64Binary with line breaks (R4 allows whitespace) and still refuses what is not base64', async () => {
    expect((await post('Binary', { resourceType: 'Binary', contentType: 'text/plain', data: 'SGVsbG8g\nV29ybGQ=' })).status).toBe(201);
    const bad = await post('Binary', { resourceType: 'Binary', contentType: 'text/plain', data: 'SGVsbG8g\nV29ybGQ' });
    expect(bad.status).toBe(400);
    expect(bad.outcome.issue[0]!.diagnostics).toBe('Invalid base64Binary format (Binary.data)');
  });

  it('$validate lists every issue in a 200 OperationOutcome and writes nothing', async () => {
    const before = await count('Observation');
    const { status, outcome } = await post('Observation/$validate', { resourceType: 'Observation', status: 'done', code: { text: 'x' }, valueString: 'a', dataAbsentReason: { text: 'y' } });
    expect(status).toBe(200);
    const text = outcome.issue.map((i) => i.diagnostics).join('\n');
    expect(text).toContain('obs-6');
    expect(text).toContain('"done" is not in the required value set');
    expect(outcome.issue.length).toBeGreaterThanOrEqual(2);
    expect(await count('Observation')).toBe(before);

    const ok = await post('Observation/$validate', { resourceType: 'Parameters', parameter: [{ name: 'mode', valueCode: 'create' }, { name: 'resource', resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' } } }] });
    expect(ok.status).toBe(200);
    expect(ok.outcome.issue).toEqual([expect.objectContaining({ severity: 'information', diagnostics: 'The Observation is valid for create' })]);
  });

  it('$validate as an update or a delete looks at the resource in the URL', async () => {
    const created = (await (await fetch(`${suite.base}/Patient`, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Nowak' }] }) })).json()) as { id: string };
    const mismatch = await post(`Patient/${created.id}/$validate?mode=update`, { resourceType: 'Patient', id: 'other', name: [{ family: 'Nowak' }] });
    expect(mismatch.status).toBe(200);
    expect(mismatch.outcome.issue.map((i) => i.diagnostics)).toContain(`Resource id "other" does not match the id in the URL (${created.id})`);

    const del = await fetch(`${suite.base}/Patient/${created.id}/$validate?mode=delete`);
    expect(del.status).toBe(200);
    expect(((await del.json()) as OperationOutcome).issue[0]!.severity).toBe('information');
    const gone = await fetch(`${suite.base}/Patient/no-such-patient/$validate?mode=delete`);
    expect(((await gone.json()) as OperationOutcome).issue[0]).toMatchObject({ severity: 'error', code: 'not-found' });

    const wrongMode = await post('Patient/$validate?mode=merge', { resourceType: 'Patient' });
    expect(wrongMode.status).toBe(400);
    expect(wrongMode.outcome.issue[0]!.diagnostics).toContain('mode "merge" is not one of create, update, delete');
    const wrongType = await post('Patient/$validate', { resourceType: 'Observation', status: 'final', code: { text: 'x' } });
    expect(wrongType.status).toBe(400);
  });

  it('is in the CapabilityStatement', async () => {
    const cs = (await (await fetch(`${suite.base}/metadata`)).json()) as CapabilityStatement;
    const obs = cs.rest![0]!.resource!.find((r) => r.type === 'Observation')!;
    expect(obs.operation).toContainEqual({ name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' });
  });
});
