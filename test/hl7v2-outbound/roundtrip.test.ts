/**
 * Round trip v2 → FHIR → v2 on every ORU in the shared test data: each message goes through the inbound
 * processor (the real one, into the store), the outbound worker sends the resulting reports to a real
 * MLLP peer, and what the peer received is compared with the original, field by field at the FHIR level
 * (original and sent message mapped by the same inbound mapper must agree on codes, values, units,
 * reference ranges, flags, statuses, notes, order numbers and patient identifiers) and at the v2 level
 * (OBX-3, OBX-5, OBX-6, OBX-7, OBX-8, OBX-11, PID-3.1).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, DiagnosticReport, Observation, Patient } from '@medplum/fhirtypes';
import { inboundDeps } from '../../facades/hl7v2/index.js';
import { processPayload, type ProcessorDeps } from '../../facades/hl7v2/inbound/processor.js';
import { mapResults } from '../../facades/hl7v2/inbound/map-results.js';
import { DEFAULT_MAPPING } from '../../facades/hl7v2/inbound/mapping-config.js';
import { ucumUnit } from '../../facades/hl7v2/inbound/codes.js';
import { codingSystem, type MapContext } from '../../facades/hl7v2/inbound/datatypes.js';
import { splitEnvelope } from '../../facades/hl7v2/envelope.js';
import { Hl7v2Message } from '../../facades/hl7v2/message.js';
import { getMessage } from '../../src/messages/message-log.js';
import { makeLogger } from '../../src/facade.js';
import { openDatabase } from '../../src/db/open.js';
import { migrate } from '../../src/db/migrate.js';
import type { Database } from '../../src/db/database.js';
import { startPeer, type Peer } from './peer.js';
import { startOutboundServer, until, type OutboundServer } from './helpers.js';
import { sharedPath } from '../helpers/shared-data.js';

const DATA = sharedPath('hl7v2');
const FILES = [
  ...readdirSync(path.join(DATA, 'corpus/oru-lab')).map((f) => path.join(DATA, 'corpus/oru-lab', f)),
  ...readdirSync(path.join(DATA, 'corpus/oru-device')).map((f) => path.join(DATA, 'corpus/oru-device', f)),
  ...readdirSync(path.join(DATA, 'fhir-converter'))
    .filter((f) => /ORU|LRI/.test(f))
    .map((f) => path.join(DATA, 'fhir-converter', f)),
];

type Mapped = ReturnType<typeof mapResults>;
const entries = <T>(m: Mapped, type: string) => (m.bundle.entry ?? []).map((e) => e.resource).filter((r) => r?.resourceType === type) as T[];
const resultKey = (o: Observation) => o.identifier?.find((i) => i.system === 'urn:conflux:hl7v2:result-key')?.value;
/** code system # code # OBX-4: the part of the result key that does not depend on the order number. */
const codeKey = (o: Observation) => resultKey(o)?.split('#').slice(-3).join('#');
const instant = (v: string | undefined) => (v && v.includes('T') ? new Date(v).getTime() : v);

/** What must survive the round trip, from one mapped Observation. */
function clinical(o: Observation) {
  const q = o.valueQuantity;
  return {
    // Set semantics: the inbound mapper appends the vital-sign LOINC even when OBX-3's alternate already is it.
    code: [...new Set((o.code.coding ?? []).map((c) => `${c.system}|${c.code}`))].sort(),
    status: o.status,
    // A unit kept as text only on one side is recognised as UCUM on the other: compare the UCUM unit either way.
    value: q ? { value: q.value, unit: q.unit, ucum: q.code ?? ucumUnit(q.unit ?? '', DEFAULT_MAPPING.unitFixes), comparator: q.comparator } : undefined,
    string: o.valueString,
    coded: o.valueCodeableConcept?.coding?.map((c) => `${c.system}|${c.code}`),
    range: o.valueRange ? [o.valueRange.low?.value, o.valueRange.high?.value] : undefined,
    ratio: o.valueRatio ? [o.valueRatio.numerator?.value, o.valueRatio.denominator?.value] : undefined,
    dateTime: instant(o.valueDateTime),
    time: o.valueTime,
    referenceRange: o.referenceRange?.map((r) => ({ text: r.text, low: r.low?.value, high: r.high?.value })),
    interpretation: o.interpretation?.map((i) => i.coding?.[0]?.code),
    effective: instant(o.effectiveDateTime),
    notes: o.note?.map((n) => n.text),
    absent: o.dataAbsentReason?.coding?.[0]?.code,
  };
}

describe('ORU round trip v2 → FHIR → v2 (PGlite)', () => {
  let db: Database;
  let server: OutboundServer;
  let peer: Peer;
  let deps: ProcessorDeps;
  const report: string[] = [];

  beforeAll(async () => {
    db = await openDatabase({ dataDir: null });
    await migrate(db);
    peer = await startPeer();
    server = await startOutboundServer(db);
    const rt = server.runtime;
    deps = await inboundDeps({ db: rt.db, router: rt.router, log: { ...makeLogger('in'), info: () => undefined, warn: () => undefined }, config: rt.config });
    // Much of the corpus is sent with MSH-11 D or T (test tools): this destination takes it, and MSH-11 must follow.
    const res = await server.admin('POST', '/destinations', { name: 'rt', host: '127.0.0.1', port: peer.port, profile: 'generic', types: 'ORU', options: { forwardNonProduction: true } });
    expect(res.status).toBe(201);
  });
  afterAll(async () => {
    await server?.stop();
    await peer?.close();
    await db?.close();
    console.log(report.join('\n'));
  });

  it('keeps codes, values, units, ranges, flags, statuses and identifiers of every ORU', async () => {
    let compared = 0;
    let observations = 0;
    for (const file of FILES) {
      const name = path.relative(DATA, file);
      const env = splitEnvelope(readFileSync(file));
      for (const text of env.messages) {
        let msg: Hl7v2Message;
        try {
          msg = Hl7v2Message.parse(text);
        } catch {
          continue;
        }
        if (msg.messageCode !== 'ORU') continue;
        const ctx: MapContext = { config: DEFAULT_MAPPING, senderNamespace: msg.msh.get(4) || msg.msh.get(3) };
        const before = peer.received.length;
        const result = await processPayload(deps, Buffer.from(text, 'utf8'));
        const logged = await getMessage(db, result.messageIds[0]!);
        if (logged?.status !== 'processed') {
          report.push(`skip ${name}: inbound ${logged?.status} (${logged?.error?.slice(0, 100)})`);
          continue;
        }
        // Everything this message queued is settled (sent, or nothing to send).
        await until(async () => {
          const r = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM hl7_outbox WHERE state IN ('queued', 'sending')");
          return r.rows[0]!.n === 0;
        }, `outbox drained after ${name}`);
        const sent = peer.received.slice(before);
        if (sent.length === 0) {
          let statuses: string[] = [];
          try {
            statuses = entries<DiagnosticReport>(mapResults(msg, ctx), 'DiagnosticReport').map((r) => r.status);
          } catch (err) {
            statuses = [`unmappable here: ${(err as Error).message}`];
          }
          report.push(`skip ${name}: nothing sent (reports: ${statuses.join(',') || 'none'}; log ${logged.id}: ${logged.resourceRefs.length} resources${logged.attempts > 1 ? ', a resend' : ''})`);
          continue;
        }
        const original = mapResults(msg, ctx);
        const origObs = new Map(entries<Observation>(original, 'Observation').map((o) => [resultKey(o), o]));
        const origByCode = new Map(entries<Observation>(original, 'Observation').map((o) => [codeKey(o), o]));
        const origReports = entries<DiagnosticReport>(original, 'DiagnosticReport');
        for (const s of sent) {
          const out = Hl7v2Message.parse(s.text);
          // Training/debugging data never goes out as production: MSH-11 follows the source message.
          expect(out.processingId, `${name} MSH-11`).toBe(msg.processingId.toUpperCase() || 'P');
          const again = mapResults(out, ctx);
          // The report: same order numbers, code and status.
          const [dr] = entries<DiagnosticReport>(again, 'DiagnosticReport');
          // An Observation that came without an OBR goes out under an OBR built from it (ORU needs one).
          const standalone = dr!.identifier?.[0]?.system === 'urn:conflux:hl7v2:message-order';
          if (!standalone) {
            const od = origReports.find((r) => JSON.stringify(r.identifier) === JSON.stringify(dr!.identifier));
            expect(od, `${name}: sent report ${JSON.stringify(dr?.identifier)} matches an original OBR`).toBeDefined();
            expect(dr!.status, name).toBe(od!.status);
            expect(dr!.code, name).toEqual(od!.code);
          }
          // The patient: same identifiers.
          const [p1] = entries<Patient>(original, 'Patient');
          const [p2] = entries<Patient>(again, 'Patient');
          // (A patient already on file keeps its identifiers: conditional create does not update it, so the
          // store may hold fewer than this message carried. What is sent must be what the message said.)
          expect(p2?.identifier?.[0], name).toEqual(p1?.identifier?.[0]);
          for (const id of p2?.identifier ?? []) expect(p1?.identifier, name).toContainEqual(id);
          // Every result: same clinical content under the same key.
          for (const o of entries<Observation>(again, 'Observation')) {
            const key = resultKey(o);
            const orig = standalone ? origByCode.get(codeKey(o)) : origObs.get(key);
            expect(orig, `${name}: sent OBX ${key} exists in the original`).toBeDefined();
            expect(clinical(o), `${name} ${key}`).toEqual(clinical(orig!));
            observations++;
          }
          // v2 level: each sent OBX matches the original OBX with the same code and sub-id.
          const origObx = msg.all('OBX');
          for (const obx of out.all('OBX')) {
            if (obx.get(2) === 'ED') continue;
            const twin = origObx.find((x) => x.get(3, 1) === obx.get(3, 1) && x.get(4) === obx.get(4) && x.reps(5).length > 0);
            if (!twin) continue;
            expect(codingSystem(obx.get(3, 3), ctx), `${name} OBX-3.3`).toBe(codingSystem(twin.get(3, 3), ctx));
            // SN without a comparator (^182) is a plain number and goes out as NM.
            if (obx.get(2) === 'NM') expect(Number(obx.get(5)), `${name} OBX-5`).toBe(Number((twin.get(2) === 'SN' ? twin.get(5, 2) : twin.get(5)).trim()));
            else if (['ST', 'TX', 'FT'].includes(obx.get(2))) expect(obx.get(5), `${name} OBX-5`).toBe(twin.get(5));
            const u = twin.get(6, 1);
            if (u && !/^MDC$/i.test(twin.get(6, 3))) expect([u, ucumUnit(u, DEFAULT_MAPPING.unitFixes), twin.get(6, 2)], `${name} OBX-6`).toContain(obx.get(6, 1));
            expect(obx.get(7), `${name} OBX-7`).toBe(twin.get(7));
            expect(obx.reps(8).map((r) => r.c(1)), `${name} OBX-8`).toEqual(twin.reps(8).map((r) => r.c(1)));
          }
          const pid = msg.first('PID');
          const mrn = pid?.reps(3).map((r) => r.c(1)).find((v) => v.trim());
          if (mrn) expect(out.first('PID')!.get(3, 1), `${name} PID-3.1`).toBe(mrn);
        }
        compared++;
        report.push(`ok   ${name}: ${sent.length} ORU sent and compared`);
      }
    }
    console.log(`round trip: ${compared} messages, ${observations} observations compared`);
    // 22 messages and 87 results make the whole trip today. The rest, as the printed report says, are refused
    // inbound, are resends of an earlier control id, change nothing already on file, or carry no final result.
    expect(compared).toBeGreaterThanOrEqual(22);
    expect(observations).toBeGreaterThanOrEqual(85);
  }, 300_000);
});
