/**
 * Round trip v2 → FHIR → v2 over the whole shared corpus: every ORU/OUL message in ../shared/data/hl7v2 goes
 * in over a real MLLP socket (each with its own patient, order numbers and control id, see corpus.ts), sent as
 * a burst on four connections; Conflux sends the resulting reports to a real MLLP peer; the test waits until
 * the outbound queue has nothing queued or in flight (never on time) and then compares, for every message:
 *  - at the FHIR level, the original and the sent message mapped by the same inbound mapper: codes, values,
 *    units (with the received unit code), reference ranges, flags, statuses, notes, patient identifiers and
 *    order identifiers (namespace, universal id, type);
 *  - at the v2 level, each sent OBX with its original: OBX-3, -5, -6 (both triplets), -7, -8, -11; PID-3 (every
 *    repetition: id, assigning authority, type, facility); OBR-2/3 and ORC-2/3 (EI-1..4); OBR-25.
 * What is not kept is an explicit, reasoned list (DEVIATIONS, INBOUND_REFUSED, NOTHING_SENT); an entry that
 * no longer happens fails the test too, so the list stays true.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DiagnosticReport, Identifier, Observation, Patient } from '@medplum/fhirtypes';
import { inboundDeps } from '../../facades/hl7v2/index.js';
import { startMllpListener, type MllpListener } from '../../facades/hl7v2/inbound/listener.js';
import { mapResults } from '../../facades/hl7v2/inbound/map-results.js';
import { DEFAULT_MAPPING } from '../../facades/hl7v2/inbound/mapping-config.js';
import { codingSystem, type MapContext } from '../../facades/hl7v2/inbound/datatypes.js';
import { Hl7v2Message, type Rep, type Segment } from '../../facades/hl7v2/message.js';
import { makeLogger } from '../../src/facade.js';
import { testDatabases } from '../helpers/db.js';
import { MllpClient } from '../hl7v2/harness.js';
import { resultMessages, uniquify } from './corpus.js';
import { startPeer, type Peer } from '../../tools/mllp-peer.js';
import { outboxStates, startOutboundServer, type OutboundServer } from './helpers.js';
import { until } from '../helpers/until.js';
import { dataSets } from '../../tools/shared-data.js';

/** Messages Conflux refuses inbound (AE/AR/CE/CR): nothing to send. name → part of the ERR text. */
const INBOUND_REFUSED: Record<string, string> = {
  'corpus/oru-lab/hapi_NewPipeParserTest_L1000.hl7': 'no OBR/OBX',
  'corpus/oru-lab/hapi_NewPipeParserTest_L694.hl7': 'is not a segment',
  'corpus/oru-lab/hapi_NewPipeParserTest_L847.hl7': 'PID segment missing',
  'corpus/oru-lab/hapi_NewPipeParserTest_L911.hl7': 'PID segment missing',
  'corpus/oru-lab/hapi_NewPipeParserTest_L930.hl7': 'PID segment missing',
  'corpus/oru-lab/hapi_NewPipeParserTest_L961.hl7': 'PID segment missing',
  'corpus/oru-lab/lfh_FHIRConverterTest_L329.hl7': 'PID-3 patient identifier list is empty',
  'corpus/oru-lab/lfh_Hl7IdentifierFHIRConversionTest_L511.hl7': 'OBX-3 observation identifier is empty',
  'corpus/oru-lab/lfh_Hl7IdentifierFHIRConversionTest_L562.hl7': 'OBX-3 observation identifier is empty',
  'corpus/oru-lab/lfh_Hl7MessageTest_L401.hl7': 'no OBR/OBX',
  'corpus/oru-lab/lfh_Hl7PatientFHIRConversionTest_L469.hl7': 'no OBR/OBX',
  'corpus/oru-lab/lfh_Hl7PatientFHIRConversionTest_L478.hl7': 'no OBR/OBX',
  'corpus/oru-lab/lfh_ORU-multiline-short-mixed.hl7': 'OBX-3 observation identifier is empty',
  'corpus/oru-lab/lfh_ORU-multiline-short.hl7': 'OBX-3 observation identifier is empty',
  'corpus/oru-lab/msfc_ORU-R01-01.hl7': 'attachment before any OBR',
  'corpus/oru-lab/simplehl7_oru-imm.hl7': 'is not an accepted HL7 data type',
  'corpus/oru-lab/pyhl7_sample_hl7.hl7': "'196203520' is not an HL7 timestamp",
  'corpus/oru-lab/lfh_Hl7OrderRequestFHIRConversionTest_L274.hl7': 'no OBR/OBX',
  'corpus/oru-lab/lfh_Hl7ObservationFHIRConversionTest_L494.hl7': 'PID-3 patient identifier list is empty',
  'fhir-converter/ORU-R01-01.hl7': 'attachment before any OBR',
  'corpus/odd/hapi_NewPipeParserTest_L1019.hl7': "PID-3 patient identifier list is empty",
  'corpus/odd/hapi_NewPipeParserTest_L1031.hl7': "PID-3 patient identifier list is empty",
  'corpus/odd/hapi_NewPipeParserTest_L1039.hl7': "PID-3 patient identifier list is empty",
  'corpus/odd/hapi_NewPipeParserTest_L1046.hl7': "PID-3 patient identifier list is empty",
  'corpus/odd/hapi_NewPipeParserTest_L1174.hl7': "is not a segment",
  'corpus/odd/hapi_NewPipeParserTest_L1184.hl7': "PID segment missing",
  'corpus/odd/hapi_NewPipeParserTest_L1196.hl7': "version '2.999' is not supported",
  'corpus/odd/hapi_NewPipeParserTest_L1215.hl7': "PID segment missing",
  'corpus/odd/hapi_NewPipeParserTest_L1233.hl7': "PID segment missing",
  'corpus/odd/hapi_NewPipeParserTest_L493.hl7': "PID-3 patient identifier list is empty",
  'corpus/odd/hapi_NewPipeParserTest_L744.hl7': "is not an accepted HL7 data type",
  'corpus/odd/node-hl7-client_hl7.sanity.test_L265.hl7': "PID segment missing",
  'corpus/odd/pyhl7_rep_sample_hl7.hl7': "no OBR/OBX",
  'corpus/other/msfc_OUL-R22-01.hl7': "OBX-3 observation identifier is empty",
  'corpus/other/msfc_OUL-R24-01.hl7': "OBX-3 observation identifier is empty",
  'fhir-converter/OUL-R22-01.hl7': "OBX-3 observation identifier is empty",
  'fhir-converter/OUL-R22-02.hl7': "OBX-3 observation identifier is empty",
  'fhir-converter/OUL-R23-01.hl7': "OBX-3 observation identifier is empty",
  'fhir-converter/OUL-R23-02.hl7': "OBX-3 observation identifier is empty",
  'fhir-converter/OUL-R24-01.hl7': "OBX-3 observation identifier is empty",
  'fhir-converter/OUL-R24-02.hl7': "OBX-3 observation identifier is empty",
};

/** Messages filed (AA) that send nothing, and why. */
const NOTHING_SENT: Record<string, string> = {};

/**
 * Accepted deviations: what comes back different from what went in, and why. `kind` names the check;
 * `file` a message (or '*': wherever it occurs); `detail` what was seen (exact).
 */
const DEVIATIONS: Array<{ kind: string; detail: string; reason: string }> = [
  { kind: 'identifier', detail: 'authority added', reason: 'an id received without an assigning authority is scoped to its sender inbound (MSH-4, else MSH-3, else "unknown"): it goes out with that namespace, which is what it means' },
  { kind: 'identifier', detail: 'blank removed', reason: 'whitespace around an id or type code is not part of it (PID-3.5 "PI ")' },
  { kind: 'identifier', detail: 'no id', reason: 'an order number with a namespace but no id (OBR-2 "^DMCRES") identifies nothing and is not kept' },
  { kind: 'OBX-2', detail: 'CE → CWE', reason: 'the generic profile speaks v2.5.1, where coded values are CWE (the epic profile sends CE)' },
  { kind: 'OBX-2', detail: 'TX → ST', reason: 'a one-line text goes as ST; multi-line text as TX repetitions' },
  { kind: 'OBX-2', detail: 'SN → NM', reason: 'an SN without comparator or second number (^182) is a plain number' },
  { kind: 'OBX-2', detail: 'SN → ST', reason: 'an SN with a comparator and no number (">^") is kept as the text it says' },
  { kind: 'OBX-2', detail: 'NA → ST', reason: 'a PCD numeric array (waveform) is filed as text, its samples space-separated (no SampledData period is sent), and goes out as that text' },
  { kind: 'OBX-2', detail: 'IS → ST', reason: 'IS (a coded value from a user table, no coding system) is filed as text and goes out as ST' },
  { kind: 'OBX-2', detail: 'DT → DTM', reason: 'a date result is filed as a FHIR dateTime (a date) and goes out as DTM with that date, v2.5 style' },
  { kind: 'OBX-2', detail: 'NM → ST', reason: 'an NM OBX without a value (data absent) goes as an empty ST' },
  { kind: 'effective', detail: 'OBR-7 built from the first result', reason: 'a report that came without OBR-7 (an OUL) goes out with OBR-7 taken from its first result, so a result with no time of its own reads that time back' },
  { kind: 'OBX-6', detail: 'unit of a text value', reason: 'a FHIR string value has no unit: OBX-6 of a text result (the Philips NA waveform, whose samples spill into OBX-6) is not kept' },
  { kind: 'OBX-7', detail: 'components after the first dropped', reason: 'OBX-7 is one string (ST): the components or subcomponents a sender put after the range text (35-150^35^150, 4.50&5.90, >^11.0) are not kept, the first component is' },
  { kind: 'OBR-25', detail: 'R → P', reason: 'R (results stored, not verified) is filed as a preliminary report, which goes out as P' },
  { kind: 'OBX-11', detail: 'R → P', reason: 'R (results entered, not verified) is filed as preliminary, which goes out as P' },
];

/** The class of a difference in an identifier (CX or EI as text), as DEVIATIONS names it; undefined: unexplained. */
function identifierChange(was: string, now: string): string | undefined {
  const [wasId, ...wasRest] = was.split('^');
  const [nowId, ...nowRest] = now.split('^');
  if (!wasId && nowId === '') return 'no id';
  if (wasId !== nowId) return undefined;
  if (wasRest.join('^').trim() === nowRest.join('^').trim() || was.replace(/\s+(?=\^|$)/g, '') === now) return 'blank removed';
  const auth = (r: string[], i: number) => r[i] ?? '';
  // CX: ^^HD^type; EI: namespace^uid^type.
  const isCx = was.includes('^^^') || now.includes('^^^');
  if (isCx ? !auth(wasRest, 2) && auth(nowRest, 2) && auth(wasRest, 3) === auth(nowRest, 3) : !auth(wasRest, 0) && !auth(wasRest, 1) && auth(nowRest, 0)) return 'authority added';
  return undefined;
}

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
    // The unit as filed (UCUM) and the unit code it arrived with (iso21090-PQ-translation), both.
    value: q ? { value: q.value, unit: q.unit, system: q.system, code: q.code, comparator: q.comparator, extension: q.extension } : undefined,
    string: o.valueString,
    coded: o.valueCodeableConcept?.coding?.map((c) => `${c.system}|${c.code}`),
    range: o.valueRange ? [o.valueRange.low, o.valueRange.high] : undefined,
    ratio: o.valueRatio ? [o.valueRatio.numerator?.value, o.valueRatio.denominator?.value] : undefined,
    dateTime: instant(o.valueDateTime),
    time: o.valueTime,
    referenceRange: o.referenceRange,
    interpretation: o.interpretation?.map((i) => i.coding?.[0]?.code),
    notes: o.note?.map((n) => n.text),
    absent: o.dataAbsentReason?.coding?.[0]?.code,
  };
}

/** An HD / EI / CX part as comparable text: the components (and subcomponents) that were sent, trailing empties cut. */
const parts = (rep: Rep | undefined, comps: number[], subs = 3) =>
  comps.map((c) => Array.from({ length: subs }, (_, i) => rep?.c(c, i + 1) ?? '').join('&').replace(/&+$/, '')).join('^').replace(/\^+$/, '');
const cxText = (rep: Rep) => `${rep.c(1)}^^^${parts(rep, [4, 5, 6])}`.replace(/\^+$/, '');
/** EI-1..4 of an order number, or the ORC one when the OBR leaves it empty (as the inbound mapper reads it). */
const orderNumber = (obr: Segment | undefined, orc: Segment | undefined, field: 2 | 3) => {
  const rep = obr?.reps(field)[0] ?? orc?.reps(field)[0];
  return rep ? [rep.c(1).trim(), rep.c(2), rep.c(3), rep.c(4)].join('^').replace(/\^+$/, '') : '';
};
/** OBX-6 as `code|SYSTEM` per triplet (a code sent without a coding system matches that code in any triplet). */
const unitCodes = (obx: Segment) =>
  [1, 4].map((b) => ({ code: obx.get(6, b).trim(), system: obx.get(6, b + 2).trim().toUpperCase(), text: obx.get(6, b + 1).trim() })).filter((t) => t.code);

const runs = testDatabases().flatMap((tdb) => dataSets().map((set) => ({ tdb, set, name: tdb.name })));

describe.each(runs)('ORU round trip v2 → FHIR → v2 over MLLP, every result message of the $set.name, on $name', ({ tdb, set }) => {
  let server: OutboundServer;
  let peer: Peer;
  let listener: MllpListener;
  let drop: () => Promise<void>;
  const log: string[] = [];

  beforeAll(async () => {
    const opened = await tdb.open();
    drop = opened.drop;
    peer = await startPeer();
    server = await startOutboundServer(opened.db);
    const rt = server.runtime;
    const deps = await inboundDeps({ db: rt.db, router: rt.router, write: rt.write, log: { ...makeLogger('in'), info: () => undefined, warn: () => undefined } });
    listener = await startMllpListener(deps, { port: 0, host: '127.0.0.1', maxMessageBytes: 4 << 20, idleTimeoutMs: 60_000 });
    // Much of the corpus is sent with MSH-11 D or T (test tools): this destination takes it, and MSH-11 must follow.
    const res = await server.admin('POST', '/destinations', { name: 'rt', host: '127.0.0.1', port: peer.port, profile: 'generic', types: 'ORU', options: { forwardNonProduction: true } });
    expect(res.status).toBe(201);
    // Every result status (the generic profile's default).
    expect(res.body.statuses).toEqual(['registered', 'preliminary', 'partial', 'final', 'amended', 'corrected', 'appended', 'cancelled', 'unknown']);
  });
  afterAll(async () => {
    await listener?.close();
    await server?.stop();
    await peer?.close();
    await drop?.();
    if (process.env.ROUNDTRIP_REPORT) console.log(log.join('\n'));
  });

  it('keeps values, units with their received codes, ranges, flags, statuses and identifiers of every result message', async () => {
    const corpus = resultMessages(set.root).map((m, i) => ({ ...m, tag: `RT${i + 1}`, text: uniquify(m.text, `RT${i + 1}`) }));
    // The burst: four senders, each sending its next message as soon as the previous one is acknowledged.
    const conns = await Promise.all([0, 1, 2, 3].map(() => MllpClient.connect(listener.port)));
    const acks: string[] = [];
    await Promise.all(
      conns.map(async (c, k) => {
        for (let i = k; i < corpus.length; i += conns.length) acks[i] = await c.request(corpus[i]!.text);
      }),
    );
    for (const c of conns) c.socket.destroy();
    // Everything that was queued has left (delivered) or failed (dead); nothing waits or is on the wire.
    const db = server.runtime.db;
    const states = await until(async () => {
      const s = await outboxStates(db, 'rt');
      return !s.queued && !s.sending && s;
    }, 'the outbound queue to drain', { timeoutMs: 60_000 });
    expect(states, 'no dead letters, nothing superseded').toEqual({ delivered: peer.received.length });
    expect(new Set(peer.received.map((r) => r.controlId)).size, 'each row sent once').toBe(peer.received.length);

    const seen = new Set<string>();
    /** Differences and outcomes the lists above do not explain: the test fails naming every one. */
    const unlisted: string[] = [];
    const deviation = (kind: string, file: string, detail: string | undefined, seenAs: string) => {
      const d = DEVIATIONS.find((x) => x.kind === kind && x.detail === detail);
      if (!d) return void unlisted.push(`deviation ${kind} ${detail ?? '(unexplained)'} in ${file}: ${seenAs}`);
      seen.add(`${d.kind}|${d.detail}`);
      log.push(`deviation ${kind} (${detail}) ${file}: ${seenAs}`);
    };
    const sentMessages = peer.received.map((r) => Hl7v2Message.parse(r.text));
    let messages = 0;
    let oru = 0;
    let obxCompared = 0;
    let resultsCompared = 0;
    const refused = new Set<string>();
    const silent = new Set<string>();
    corpus.forEach(({ name, text, tag }, i) => {
      const ack = Hl7v2Message.parse(acks[i]!);
      const code = ack.first('MSA')!.get(1);
      if (code !== 'AA' && code !== 'CA') {
        const why = [ack.first('MSA')!.get(3), ...ack.all('ERR').map((e) => e.get(8) || e.get(1, 4, 2))].join(' ');
        if (!INBOUND_REFUSED[name] || !why.includes(INBOUND_REFUSED[name])) unlisted.push(`'${name}': ${JSON.stringify(why)} (${code})`);
        refused.add(name);
        log.push(`refused ${name}: ${why}`);
        return;
      }
      expect(INBOUND_REFUSED[name], `${name} is listed as refused but was filed`).toBeUndefined();
      const msg = Hl7v2Message.parse(text);
      const ctx: MapContext = { config: DEFAULT_MAPPING, senderNamespace: msg.msh.get(4) || msg.msh.get(3) };
      const pid = msg.first('PID');
      // The messages sent for this one: its tag is in its patient's or its orders' identifiers.
      const tagged = new RegExp(`-${tag}(?![0-9])`);
      const sent = sentMessages.filter((m) => tagged.test(m.text));
      if (sent.length === 0) {
        if (!NOTHING_SENT[name]) unlisted.push(`${name}: filed, but nothing was sent`);
        silent.add(name);
        log.push(`nothing sent ${name}: ${NOTHING_SENT[name]}`);
        return;
      }
      expect(NOTHING_SENT[name], `${name} is listed as sending nothing but sent ${sent.length}`).toBeUndefined();
      messages++;
      const original = mapResults(msg, ctx);
      const origObs = new Map(entries<Observation>(original, 'Observation').map((o) => [resultKey(o), o]));
      const origByCode = new Map(entries<Observation>(original, 'Observation').map((o) => [codeKey(o), o]));
      const origReports = entries<DiagnosticReport>(original, 'DiagnosticReport');
      const [p1] = entries<Patient>(original, 'Patient');
      const filedResults = new Set<string>();
      for (const out of sent) {
        oru++;
        // Training/debugging data never goes out as production: MSH-11 follows the source message.
        expect(out.processingId, `${name} MSH-11`).toBe(msg.processingId.toUpperCase() || 'P');
        const again = mapResults(out, ctx);
        const [dr] = entries<DiagnosticReport>(again, 'DiagnosticReport');
        // An Observation that came without an OBR goes out under an OBR built from it (ORU needs one).
        const standalone = dr!.identifier?.[0]?.system === 'urn:conflux:hl7v2:message-order';
        if (!standalone) {
          // Same order identifiers (value, system and the assigning authority as received), code and status.
          const od = origReports.find((r) => JSON.stringify(r.identifier?.[0]) === JSON.stringify(dr!.identifier?.[0]));
          expect(od, `${name}: sent report ${JSON.stringify(dr?.identifier)} matches an original OBR`).toBeDefined();
          expect(dr!.status, name).toBe(od!.status);
          expect(dr!.code, name).toEqual(od!.code);
        }
        // The patient: every identifier exactly as the message gave it (system, value, type, assigning authority).
        const [p2] = entries<Patient>(again, 'Patient');
        expect(p2?.identifier as Identifier[], `${name} patient identifiers`).toEqual(p1?.identifier);
        for (const o of entries<Observation>(again, 'Observation')) {
          const key = resultKey(o);
          // A device report's key includes its time as text, which the round trip may spell with an offset:
          // then the result is found by code and OBX-4 sub-id (unique within those messages).
          const orig = standalone ? origByCode.get(codeKey(o)) : (origObs.get(key) ?? (key?.startsWith('urn:conflux:hl7v2:device-report#') ? origByCode.get(codeKey(o)) : undefined));
          expect(orig, `${name}: sent OBX ${key} exists in the original`).toBeDefined();
          expect(clinical(o), `${name} ${key}`).toEqual(clinical(orig!));
          const [t0, t1] = [instant(orig!.effectiveDateTime), instant(o.effectiveDateTime)];
          if (t0 !== t1) {
            if (t0 === undefined) deviation('effective', name, 'OBR-7 built from the first result', `${key}: none → ${o.effectiveDateTime}`);
            else expect(t1, `${name} ${key} effective`).toBe(t0);
          }
          filedResults.add(resultKey(orig!)!);
          resultsCompared++;
        }
        // v2 level.
        const [outPid, inPid] = [out.first('PID')!, pid!];
        // PID-3 as received; a v2.2 sender's PID-2/PID-4 identifier (read when PID-3 is empty) goes out in PID-3.
        const given = (f: number) => inPid.reps(f).filter((r) => r.c(1).trim());
        const inIds = (given(3).length ? given(3) : [...given(2), ...given(4)]).map(cxText);
        const outIds = outPid.reps(3).map(cxText);
        expect(outIds.map((x) => x.split('^')[0]), `${name} PID-3.1`).toEqual(inIds.map((x) => x.split('^')[0]));
        inIds.forEach((x, k) => x !== outIds[k] && deviation('identifier', name, identifierChange(x, outIds[k]!), `PID-3 ${x} → ${outIds[k]}`));
        if (!standalone) {
          const obr = out.first('OBR');
          const id1 = (v: string) => v.split('^')[0];
          const k = msg.all('OBR').findIndex((x, j) => [2, 3].every((f) => id1(orderNumber(x, msg.all('ORC')[j], f as 2 | 3)) === id1(orderNumber(obr, undefined, f as 2 | 3))));
          const od = msg.all('OBR')[k];
          expect(od, `${name}: OBR-2/3 ${orderNumber(obr, undefined, 2)} / ${orderNumber(obr, undefined, 3)} (EI-1) as received`).toBeDefined();
          for (const f of [2, 3] as const) {
            const [was, now] = [orderNumber(od, msg.all('ORC')[k], f), orderNumber(obr, undefined, f)];
            if (was !== now) deviation('identifier', name, identifierChange(was, now), `OBR-${f} ${was} → ${now}`);
          }
          expect(orderNumber(undefined, out.first('ORC'), 3), `${name} ORC-3`).toBe(orderNumber(obr, undefined, 3));
          expect(orderNumber(undefined, out.first('ORC'), 2), `${name} ORC-2`).toBe(orderNumber(obr, undefined, 2));
          const obr25 = od!.get(25).toUpperCase();
          if (obr!.get(25) !== obr25) deviation('OBR-25', name, `${obr25} → ${obr!.get(25)}`, `${obr25} → ${obr!.get(25)}`);
        }
        const origObx = msg.all('OBX');
        for (const obx of out.all('OBX')) {
          if (obx.get(2) === 'ED') continue;
          const twin = origObx.find((x) => x.get(3, 1) === obx.get(3, 1) && x.get(4) === obx.get(4) && x.reps(5).length > 0) ?? origObx.find((x) => x.get(3, 1) === obx.get(3, 1) && x.get(4) === obx.get(4));
          expect(twin, `${name}: sent OBX ${obx.get(3, 1)} has an original`).toBeDefined();
          obxCompared++;
          const where = `${name} OBX ${obx.get(3, 1)}`;
          expect(codingSystem(obx.get(3, 3), ctx), `${where} OBX-3.3`).toBe(codingSystem(twin!.get(3, 3), ctx));
          const t2 = twin!.get(2).toUpperCase();
          if (obx.get(2) !== t2) deviation('OBX-2', name, `${t2} → ${obx.get(2)}`, `${t2} → ${obx.get(2)}`);
          if (obx.get(2) === 'NM') expect(Number(obx.get(5)), `${where} OBX-5`).toBe(Number((t2 === 'SN' ? twin!.get(5, 2) : twin!.get(5)).trim()));
          else if (['ST', 'TX', 'FT'].includes(obx.get(2)) && obx.get(2) === t2) expect(obx.get(5), `${where} OBX-5`).toBe(twin!.get(5));
          // Units: every code received (local, MDC, UCUM) is in the sent OBX-6; UCUM in the first triplet when known.
          const sentUnits = unitCodes(obx);
          for (const u of unitCodes(twin!)) {
            const found = sentUnits.some((s) => s.code === u.code && (!u.system || s.system === u.system || (s.system === 'UCUM' && u.system === 'UCUM')));
            if (!found && !['NM', 'SN'].includes(obx.get(2))) deviation('OBX-6', name, 'unit of a text value', `${obx.get(2)}: ${twin!.raw(6).slice(0, 40)} → ${obx.raw(6)}`);
            else expect(found, `${where} OBX-6 ${twin!.raw(6)} → ${obx.raw(6)}: the received unit code is kept`).toBe(true);
          }
          if (obx.get(6, 3) && sentUnits.some((s) => s.system === 'UCUM')) expect(obx.get(6, 3), `${where} OBX-6.3`).toBe('UCUM');
          expect(obx.get(7), `${where} OBX-7`).toBe(twin!.get(7));
          if (twin!.raw(7) !== obx.raw(7)) deviation('OBX-7', name, /^[\^&]/.test(twin!.raw(7).slice(obx.raw(7).length)) && twin!.raw(7).startsWith(obx.raw(7)) ? 'components after the first dropped' : undefined, `${twin!.raw(7)} → ${obx.raw(7)}`);
          expect(obx.reps(8).map((r) => r.c(1)), `${where} OBX-8`).toEqual(twin!.reps(8).map((r) => r.c(1)));
          const s11 = twin!.get(11).toUpperCase();
          if (obx.get(11) !== s11) deviation('OBX-11', name, `${s11} → ${obx.get(11)}`, `${s11} → ${obx.get(11)}`);
        }
      }
      // Every result the message filed went out (in one of its reports' messages).
      const missing = [...origObs.keys()].filter((k) => !filedResults.has(k!));
      expect(missing, `${name}: results that did not leave`).toEqual([]);
      log.push(`ok ${name}: ${sent.length} ORU`);
    });
    log.push(`round trip: ${messages} messages, ${oru} ORU, ${resultsCompared} results and ${obxCompared} OBX compared`);
    console.log(log.at(-1));
    expect(unlisted, 'messages refused or silent but not listed').toEqual([]);
    // The listed outcomes of the messages this run has (the fixtures hold some of them).
    const here = (names: string[]) => new Set(names.filter((n) => corpus.some((m) => m.name === n)));
    expect(refused).toEqual(here(Object.keys(INBOUND_REFUSED)));
    expect(silent).toEqual(here(Object.keys(NOTHING_SENT)));
    // Over the whole corpus, every listed deviation still happens (a fixed one must leave the list).
    if (set.name === 'shared corpus') expect([...seen].sort()).toEqual(DEVIATIONS.map((d) => `${d.kind}|${d.detail}`).sort());
    expect(messages + refused.size + silent.size).toBe(corpus.length);
  }, 60_000);
});
