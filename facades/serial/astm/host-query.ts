/**
 * Host queries (CLSI LIS2-A2 Q records). An analyzer in query mode sends the sample ids it has loaded; the
 * host answers with the orders it holds for them — H, then per patient a P record and O records per sample
 * (action N for active orders, C for revoked ones so the analyzer drops them; priority S for stat, asap or
 * urgent, else R), then L — or `L|1|I` ("no information available") when it has none. Orders are the
 * ServiceRequests whose identifier (accession, placer or filler number) is the sample id; their codes go back
 * as the instrument's own test codes through the port's code map (LOINC → instrument code).
 */
import type { Bundle, Patient, ServiceRequest } from '@medplum/fhirtypes';
import { searchResources, type Queryable } from '../../../src/index.js';
import { type CodeMap, DEFAULT_CODE_MAP } from '../mapping/codemap.js';
import { DEFAULT_DELIMITERS, type AstmRecord } from './records.js';

export interface QueryAnswer {
  /** The records to send, H … L. */
  records: string[];
  specimens: string[];
  orders: number;
}

/** The sample ids a Q record asks about: Q-3 (starting range), each repetition's specimen id component. */
export function queriedSpecimens(q: AstmRecord): string[] {
  return q
    .repetitions(3)
    .map((c) => c[1] || c[0] || c[2] || '')
    .filter((id) => id !== '' && id.toUpperCase() !== 'ALL');
}

/** LIS2-A2 escapes for text placed in a field we build (default delimiters `|\^&`). */
function esc(s: string | undefined): string {
  return (s ?? '').replace(/[|\\^&]/g, (c) => ({ '|': '&F&', '\\': '&R&', '^': '&S&', '&': '&E&' })[c]!);
}

const astmTime = (date: Date) => date.toISOString().replace(/[-:T]/g, '').slice(0, 14);

/**
 * The instrument's test code for an order: the port's code map entry (then the built-in one) for its LOINC
 * code, else the order's own first code.
 */
function instrumentCode(sr: ServiceRequest, codeMap: CodeMap): string | undefined {
  const codings = sr.code?.coding ?? [];
  const entries = [...Object.entries(codeMap), ...Object.entries(DEFAULT_CODE_MAP)];
  for (const c of codings) {
    const local = entries.find(([, m]) => m.loinc === c.code)?.[0];
    if (local) return local;
  }
  return codings[0]?.code;
}

export async function answerQuery(db: Queryable, queries: AstmRecord[], opts: { codeMap: CodeMap; instrument: string; now?: Date }): Promise<QueryAnswer> {
  const specimens = [...new Set(queries.flatMap(queriedSpecimens))];
  // H-2 delimiters, H-5 sender, H-10 receiver (the instrument), H-12 processing id, H-13 version, H-14 time.
  const header = `H|\\^&|||Conflux|||||${esc(opts.instrument)}||P|1|${astmTime(opts.now ?? new Date())}`;
  // Per patient (insertion order), the O records to send: sample, priority and action → test codes.
  const byPatient = new Map<string, { patient?: Patient; orders: Map<string, { specimen: string; priority: string; action: string; tests: string[] }> }>();
  let orders = 0;
  for (const specimen of specimens) {
    const found: Bundle = await searchResources(db, {
      resourceType: 'ServiceRequest',
      params: [['identifier', specimen], ['status', 'active,revoked'], ['_include', 'ServiceRequest:subject']],
      baseUrl: '',
      handling: 'strict',
    });
    const resources = (found.entry ?? []).map((e) => e.resource!);
    const patients = new Map(resources.filter((r): r is Patient => r.resourceType === 'Patient').map((p) => [`Patient/${p.id}`, p]));
    for (const sr of resources.filter((r): r is ServiceRequest => r.resourceType === 'ServiceRequest')) {
      const code = instrumentCode(sr, opts.codeMap);
      if (!code) continue;
      const key = sr.subject?.reference ?? '';
      const entry = byPatient.get(key) ?? { patient: patients.get(key), orders: new Map() };
      byPatient.set(key, entry);
      const priority = ['stat', 'asap', 'urgent'].includes(sr.priority ?? '') ? 'S' : 'R';
      const action = sr.status === 'revoked' ? 'C' : 'N';
      const group = `${specimen}|${priority}|${action}`;
      const o = entry.orders.get(group) ?? { specimen, priority, action, tests: [] };
      entry.orders.set(group, o);
      o.tests.push(code);
      orders++;
    }
  }
  if (orders === 0) return { records: [header, 'L|1|I'], specimens, orders };
  const records = [header];
  let p = 0;
  for (const { patient, orders: os } of byPatient.values()) {
    const name = patient?.name?.[0];
    const sex = patient?.gender === 'male' ? 'M' : patient?.gender === 'female' ? 'F' : 'U';
    records.push(
      `P|${++p}||${esc(patient?.identifier?.[0]?.value)}||${esc(name?.family)}^${esc(name?.given?.[0])}||${(patient?.birthDate ?? '').replace(/-/g, '')}|${sex}`,
    );
    let n = 0;
    for (const o of os.values()) {
      const universal = [...new Set(o.tests)].map((t) => `^^^${esc(t)}`).join(DEFAULT_DELIMITERS.repeat);
      // O-5 priority, O-12 action code (N new, C cancel), O-26 report type O (order).
      records.push(`O|${++n}|${esc(o.specimen)}||${universal}|${o.priority}||||||${o.action}||||||||||||||O`);
    }
  }
  records.push('L|1|N');
  return { records, specimens, orders };
}
