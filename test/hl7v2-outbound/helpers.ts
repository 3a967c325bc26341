/** A Conflux server with HL7 v2 outbound running, plus small clients for its FHIR and admin APIs. */
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import type { Database } from '../../src/db/database.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { outboundOf, type OutboundHandle } from '../../facades/hl7v2/outbound/index.js';

export interface OutboundServer extends TestServer {
  outbound: OutboundHandle;
  admin<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  transaction(entries: BundleEntry[]): Promise<Bundle>;
}

export const FAST_ENV = { HL7_OUTBOUND_POLL_MS: '20', HL7_OUTBOUND_REFRESH_MS: '100', HL7_OUTBOUND_CONNECT_TIMEOUT_MS: '1000' };

export async function startOutboundServer(db: Database, env: Record<string, string> = {}): Promise<OutboundServer> {
  const server = await startTestServer(db, { ...FAST_ENV, ...env });
  const rt = server.runtime;
  const outbound = outboundOf(rt);
  const base = server.url;
  const admin = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${base}/admin/outbound${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const transaction = async (entries: BundleEntry[]) => {
    const res = await fetch(server.fhir, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: entries }),
    });
    const body = (await res.json()) as Bundle;
    if (res.status >= 300) throw new Error(`transaction failed ${res.status}: ${JSON.stringify(body)}`);
    return body;
  };
  return {
    ...server,
    outbound,
    admin,
    transaction,
    async stop() {
      await outbound.stop();
      await server.stop();
    },
  };
}

let seq = 0;
/** A lab report for one patient: Patient (conditional create by MRN), a final DiagnosticReport and its Observations. */
export function labReport(mrn: string, opts: { values?: number[]; status?: string; tag?: string; category?: string } = {}): BundleEntry[] {
  const n = ++seq;
  const patientUrl = `urn:uuid:00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
  const values = opts.values ?? [4.2, 140];
  const obs = values.map((v, i) => ({
    fullUrl: `urn:uuid:00000000-0000-4000-9000-${String(n * 100 + i).padStart(12, '0')}`,
    resource: {
      resourceType: 'Observation',
      status: opts.status ?? 'final',
      code: { coding: [{ system: 'http://loinc.org', code: i === 0 ? '2823-3' : '2951-2', display: i === 0 ? 'Potassium' : 'Sodium' }] },
      subject: { reference: patientUrl },
      valueQuantity: { value: v, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' },
      referenceRange: [{ low: { value: 3.5 }, high: { value: 5.1 }, text: '3.5-5.1' }],
      interpretation: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: 'N' }] }],
    } as Resource,
    request: { method: 'POST' as const, url: 'Observation' },
  }));
  const report: BundleEntry = {
    fullUrl: `urn:uuid:00000000-0000-4000-a000-${String(n).padStart(12, '0')}`,
    resource: {
      resourceType: 'DiagnosticReport',
      status: opts.status ?? 'final',
      identifier: [{ system: 'urn:conflux:hl7v2:aa:LAB', value: `F${n}${opts.tag ?? ''}`, type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'FILL' }] } }],
      category: opts.category ? [{ coding: [{ system: 'urn:test:lane', code: opts.category }] }] : undefined,
      code: { coding: [{ system: 'http://loinc.org', code: '24326-1', display: 'Electrolytes panel' }] },
      subject: { reference: patientUrl },
      effectiveDateTime: '2024-03-05T10:15:00+01:00',
      result: obs.map((o) => ({ reference: o.fullUrl })),
    } as Resource,
    request: { method: 'POST', url: 'DiagnosticReport' },
  };
  return [
    {
      fullUrl: patientUrl,
      resource: {
        resourceType: 'Patient',
        identifier: [{ system: 'urn:conflux:hl7v2:aa:HOSP', value: mrn, type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] } }],
        name: [{ family: 'Doe', given: ['Jane'] }],
        gender: 'female',
        birthDate: '1970-01-02',
      } as Resource,
      request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=urn:conflux:hl7v2:aa:HOSP|${mrn}` },
    },
    report,
    ...obs,
  ];
}

export async function outboxStates(db: Database, destination: string): Promise<Record<string, number>> {
  const r = await db.query<{ state: string; n: number | string }>('SELECT state, count(*) AS n FROM hl7_outbox WHERE destination = $1 GROUP BY state', [destination]);
  return Object.fromEntries(r.rows.map((x) => [x.state, Number(x.n)]));
}
