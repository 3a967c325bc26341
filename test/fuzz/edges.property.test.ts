import fc from 'fast-check';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import type { OperationOutcome } from '@medplum/fhirtypes';
import { frame, MllpDecoder } from '../../facades/hl7v2/mllp.js';
import { freePort } from '../dicom/helpers.js';
import { testDatabases } from '../helpers/db.js';
import { suiteServer } from '../helpers/server.js';
import { until } from '../helpers/until.js';

/**
 * Hostile input through the real edges of one running server: FHIR JSON over HTTP, HL7 v2 over MLLP, PDUs on the
 * DICOM port. The server must answer every request (a 2xx, or a 4xx OperationOutcome; never a 500), every HL7 message
 * but an ACK (AA/AE/AR), and never stop answering. Run counts are modest: the suite runs on a busy 2-core machine.
 */
const [backend] = testDatabases();
const ports = { mllp: 0, dicom: 0 };

/** Strings with what breaks naive code: NUL, lone surrogates, escapes, quotes, long runs, RTL, emoji. */
const nasty = fc.string({ unit: fc.oneof(fc.constantFrom('\0', '\uD800', '\uDFFF', '\\', '"', '\u202E', '😀', '%', '\r\n', '\u2028', '\uFEFF'), fc.string({ minLength: 1, maxLength: 1 })), maxLength: 30 });
const json: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, fc.constant(null), fc.boolean(), fc.double(), fc.integer(), nasty, fc.array(tie('value'), { maxLength: 4 }), fc.dictionary(fc.oneof(nasty, fc.constantFrom('__proto__', 'constructor', 'id', 'meta', 'name', 'resourceType', 'extension', 'birthDate')), tie('value'), { maxKeys: 5 })),
})).value;

describe('hostile input through the edges of a running server', async () => {
  ports.mllp = await freePort();
  ports.dicom = await freePort();
  const suite = suiteServer(backend!, { MLLP_PORT: String(ports.mllp), DICOM_PORT: String(ports.dicom) });

  async function expectAnswered(res: Response, what: string) {
    expect(res.status, `${what}: ${res.status}`).toBeLessThan(500);
    const text = await res.text();
    if (res.status >= 400) {
      const body = JSON.parse(text) as OperationOutcome;
      expect(body.resourceType, `${what}: ${text.slice(0, 200)}`).toBe('OperationOutcome');
      expect(body.issue.length).toBeGreaterThan(0);
    }
  }

  it('FHIR JSON: random resources, keys and strings (NUL, surrogates) are answered 2xx or 4xx with an OperationOutcome', async () => {
    const resource = fc.record({ type: fc.constantFrom('Patient', 'Observation', 'Bundle', 'Nope'), body: fc.dictionary(fc.oneof(nasty, fc.constantFrom('name', 'birthDate', 'gender', 'identifier', 'status', 'code', 'entry', 'type')), json, { maxKeys: 6 }) });
    await fc.assert(fc.asyncProperty(resource, fc.constantFrom('POST', 'PUT'), async ({ type, body }, method) => {
      const url = method === 'POST' ? (type === 'Bundle' ? suite.base : `${suite.base}/${type}`) : `${suite.base}/${type}/fuzz-1`;
      const payload = JSON.stringify({ ...body, resourceType: type, ...(method === 'PUT' ? { id: 'fuzz-1' } : {}) });
      await expectAnswered(await fetch(url, { method, headers: { 'content-type': 'application/fhir+json' }, body: payload }), `${method} ${payload.slice(0, 300)}`);
    }), { numRuns: 60 });
  });

  it('FHIR JSON: random bytes (invalid UTF-8, truncated JSON, deep nesting) and random paths are answered', async () => {
    const bytes = fc.oneof(fc.uint8Array({ maxLength: 200 }), fc.nat({ max: 3000 }).map((n) => Buffer.from(`{"resourceType":"Patient","extension":${'['.repeat(n)}`)), json.map((v) => Buffer.from(JSON.stringify(v) ?? 'null').subarray(0, 50)));
    const segment = fc.oneof(fc.constantFrom('Patient', '_search', '$validate', '_history', 'metadata', '%00', '%ff'), fc.webSegment().filter((x) => !/^(\.|%2e){1,2}$/i.test(x)));
    // fetch resolves '.' and '..' (also as %2e) itself (the request would leave /fhir): those are left out.
    await fc.assert(fc.asyncProperty(bytes, fc.array(segment, { maxLength: 3 }), fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE'), async (body, path, method) => {
      const url = `${suite.base}/${path.join('/')}`;
      const res = await fetch(url, { method, headers: { 'content-type': method === 'PATCH' ? 'application/json-patch+json' : 'application/fhir+json' }, ...(method === 'GET' || method === 'DELETE' ? {} : { body }) });
      await expectAnswered(res, `${method} ${url} ${Buffer.from(body).toString('hex').slice(0, 120)}`);
    }), { numRuns: 80 });
    expect((await fetch(`${suite.server.url}/healthz`)).ok).toBe(true);
  });

  it('MLLP: every non-ACK message gets an acknowledgement (AA/AE/AR) and the connection stays usable', async () => {
    const field = fc.string({ unit: fc.oneof(fc.constantFrom('|', '^', '~', '\\', '&', '\0', '\n', 'é'), fc.string({ minLength: 1, maxLength: 1 })), maxLength: 16 }).map((s) => s.replace(/[\x0b\x1c]/g, ''));
    const message = fc.record({ control: field, type: fc.constantFrom('ORU^R01', 'ADT^A01', 'ADT^A08', 'ORM^O01', 'XYZ^Q01', ''), version: fc.constantFrom('2.5.1', '2.3', '9', ''), charset: fc.constantFrom('', 'UNICODE UTF-8', '8859/1', 'ISO IR87'), segs: fc.array(fc.tuple(fc.constantFrom('PID', 'PV1', 'OBR', 'OBX', 'NTE', 'Zx1', ''), fc.array(field, { maxLength: 8 })), { maxLength: 6 }), junk: fc.uint8Array({ maxLength: 20 }) }).map(({ control, type, version, charset, segs, junk }) => ({
      control,
      bytes: Buffer.concat([Buffer.from([`MSH|^~\\&|FUZZ|HOSP|CONFLUX|HOSP|20240102030405||${type}|${control}|P|${version}||||||${charset}`, ...segs.map(([s, f]) => [s, ...f].join('|'))].join('\r')), Buffer.from(junk.filter((b) => b !== 0x0b && b !== 0x1c))]),
    }));
    const sock = net.connect(ports.mllp, '127.0.0.1');
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    const replies: string[] = [];
    const dec = new MllpDecoder({ frame: (p) => replies.push(p.toString('utf8')) });
    sock.on('data', (c) => dec.push(c));
    let n = 0;
    await fc.assert(fc.asyncProperty(message, async ({ bytes }) => {
      // A sentinel with a control id of its own follows: every reply before its ACK answers the hostile message.
      const sentinel = `SENT-${++n}`;
      replies.length = 0;
      sock.write(frame(bytes));
      sock.write(frame(`MSH|^~\\&|FUZZ|HOSP|CONFLUX|HOSP|20240102030405||ACK^R01|${sentinel}|P|2.5.1\rMSA|AA|X`));
      sock.write(frame(`MSH|^~\\&|FUZZ|HOSP|CONFLUX|HOSP|20240102030405||XYZ^Q01|${sentinel}|P|2.5.1`));
      await until(() => replies.some((r) => r.includes(`|${sentinel}`)), `the sentinel ${sentinel}'s ACK`, { timeoutMs: 30_000, everyMs: 5 });
      const answers = replies.slice(0, replies.findIndex((r) => r.includes(`|${sentinel}`)));
      const isAck = /^MSH\|[^|]*\|([^|]*\|){6}ACK/.test(bytes.toString('latin1'));
      if (!isAck) expect(answers.length, `answers to ${JSON.stringify(bytes.toString('latin1').slice(0, 200))}`).toBeGreaterThan(0);
      for (const a of answers) expect(/\rMSA\|(AA|AE|AR|CA|CE|CR)\b/.test(a) || /^BHS|^FHS/.test(a), a.slice(0, 200)).toBe(true);
    }), { numRuns: 40 });
    sock.destroy();
  });

  it('DICOM: random PDUs and mangled association requests never stop the server', async () => {
    const pdu = fc.record({ type: fc.integer({ min: 0, max: 8 }), len: fc.oneof(fc.nat({ max: 300 }), fc.constant(0xffffffff)), body: fc.uint8Array({ maxLength: 300 }) }).map(({ type, len, body }) => {
      const h = Buffer.alloc(6);
      h[0] = type;
      h.writeUInt32BE(Math.min(len, 0xffffffff), 2);
      return Buffer.concat([h, body]);
    });
    await fc.assert(fc.asyncProperty(fc.oneof(pdu, fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b))), async (bytes) => {
      const s = net.connect(ports.dicom, '127.0.0.1');
      await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
      await new Promise<void>((resolve) => s.write(bytes, () => resolve()));
      s.destroy();
    }), { numRuns: 40 });
    expect((await fetch(`${suite.server.url}/healthz`)).ok).toBe(true);
    // And it still accepts connections on the DICOM port.
    const s = net.connect(ports.dicom, '127.0.0.1');
    await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
    s.destroy();
  });
});
