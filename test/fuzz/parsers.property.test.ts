import fc from 'fast-check';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { astmTarget, dicomPart10Target, fhirJsonTarget, hl7v2Target } from '../../tools/fuzz-targets.js';
import { fixturePath } from '../../tools/shared-data.js';
import { escapeHl7, unescapeHl7 } from '../../facades/hl7v2/escape.js';
import { DEFAULT_DELIMITERS } from '../../facades/hl7v2/message.js';
import { frame, MllpDecoder } from '../../facades/hl7v2/mllp.js';
import { decodeCapture, encodeMessage, framesToText } from '../../facades/serial/astm/frame.js';

/**
 * Property tests of the parsers a peer's bytes reach (tools/fuzz-targets.ts states each contract: a ConfluxError is a
 * refusal, anything else a bug). Run counts are modest so that the file stays a few seconds on a busy machine; the
 * coverage-guided fuzzer (npm run fuzz) goes further.
 */
const RUNS = { numRuns: 150 };

/** Bytes biased towards a format: random bytes, or a seed with bytes flipped, inserted, cut. */
function mutated(seeds: Buffer[]): fc.Arbitrary<Uint8Array> {
  const edit = fc.record({ seed: fc.constantFrom(...seeds), at: fc.nat(), len: fc.nat({ max: 16 }), bytes: fc.uint8Array({ maxLength: 16 }), kind: fc.constantFrom('flip', 'insert', 'cut', 'truncate') });
  return fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    edit.map(({ seed, at, len, bytes, kind }) => {
      const i = seed.length ? at % seed.length : 0;
      if (kind === 'truncate') return seed.subarray(0, i);
      if (kind === 'cut') return Buffer.concat([seed.subarray(0, i), seed.subarray(i + len)]);
      if (kind === 'insert') return Buffer.concat([seed.subarray(0, i), bytes, seed.subarray(i)]);
      const out = Buffer.from(seed);
      bytes.forEach((b, k) => { if (i + k < out.length) out[i + k] = b; });
      return out;
    }),
  );
}

const hl7Seeds = readdirSync(fixturePath('hl7v2', 'corpus'), { recursive: true, withFileTypes: true })
  .filter((e) => e.isFile() && e.name.endsWith('.hl7'))
  .slice(0, 20)
  .map((e) => readFileSync(`${e.parentPath}/${e.name}`));
const astmSeeds = readdirSync(fixturePath('astm')).map((f) => Buffer.concat(encodeMessage(readFileSync(fixturePath('astm', f), 'latin1').split('\n').filter((l) => l.trim()))));
const dicomSeeds = ['CT_small.dcm', 'MR_small.dcm', 'MR_small_implicit.dcm', 'MR_small_bigendian.dcm'].map((f) => readFileSync(fixturePath('dicom', 'pydicom', f)));

describe('HL7 v2 parser and ACK builder', () => {
  it('any bytes, and mangled real messages: only typed refusals, and the ACK parses and echoes MSH-10', () => {
    expect(hl7Seeds.length).toBeGreaterThan(0);
    fc.assert(fc.property(mutated(hl7Seeds), (b) => hl7v2Target(b)), RUNS);
  });

  const field = fc.string({ unit: fc.oneof(fc.constantFrom('|', '^', '~', '\\', '&', '\r', '\n', '\0', 'é', '\uD800', 'X'), fc.string({ minLength: 1, maxLength: 1 })), maxLength: 20 });
  it('structured messages with hostile field values (delimiters, escapes, NUL, lone surrogates)', () => {
    const message = fc.record({ control: field, fields: fc.array(field, { maxLength: 12 }), segs: fc.array(fc.constantFrom('PID', 'PV1', 'OBR', 'OBX', 'ORC', 'NTE', 'ZZZ', 'EVN'), { maxLength: 8 }), type: fc.constantFrom('ORU^R01', 'ADT^A01', 'ADT^A40', 'ORM^O01', 'OML^O21', 'ACK', 'XYZ^Q01', '') }).map(
      ({ control, fields, segs, type }) => Buffer.from([`MSH|^~\\&|LAB|HOSP|CONFLUX|HOSP|20240102030405||${type}|${control}|P|2.5.1`, ...segs.map((s, i) => [s, String(i + 1), ...fields].join('|'))].join('\r'), 'utf8'),
    );
    fc.assert(fc.property(message, (b) => hl7v2Target(b)), RUNS);
  });

  it('an escaped value holds no delimiter or line end, and unescapes to the value (line ends as one line break)', () => {
    fc.assert(fc.property(fc.string({ unit: fc.oneof(fc.constantFrom('|', '^', '~', '\\', '&', '\r', '\n'), fc.string({ minLength: 1, maxLength: 1 })) }), (s) => {
      const escaped = escapeHl7(s, DEFAULT_DELIMITERS);
      expect(escaped).not.toMatch(/[|^~&\r\n]/);
      const back = unescapeHl7(escaped, DEFAULT_DELIMITERS);
      expect(back.replace(/\r|\n/g, '\n')).toBe(s.replace(/\r|\n/g, '\n'));
    }), RUNS);
  });

  it('MLLP framing: frames come out whole and in order however the stream is cut, garbage between them aside', () => {
    const payload = fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b.filter((x) => x !== 0x0b && x !== 0x1c)));
    fc.assert(fc.property(fc.array(payload, { maxLength: 5 }), fc.array(fc.nat({ max: 400 }), { maxLength: 6 }), (payloads, cuts) => {
      const stream = Buffer.concat(payloads.map((p) => frame(p)));
      const got: Buffer[] = [];
      const dec = new MllpDecoder({ frame: (p) => got.push(p) });
      let at = 0;
      for (const c of [...cuts.map((c) => c % (stream.length + 1)).sort((a, b) => a - b), stream.length]) {
        dec.push(stream.subarray(at, Math.max(at, c)));
        at = Math.max(at, c);
      }
      expect(got.map((g) => g.toString('hex'))).toEqual(payloads.map((p) => p.toString('hex')));
    }), RUNS);
  });
});

describe('ASTM E1381 framer and E1394 parser', () => {
  it('any bytes, and mangled real transmissions: only typed refusals', () => {
    fc.assert(fc.property(mutated(astmSeeds), (b) => astmTarget(b)), RUNS);
  });

  it('records framed and decoded again come back as sent', () => {
    const record = fc.string({ unit: fc.oneof(fc.constantFrom('|', '^', '\\', '&', 'A'), fc.integer({ min: 0x20, max: 0xff }).map((c) => String.fromCharCode(c))), minLength: 1, maxLength: 600 });
    fc.assert(fc.property(fc.array(record, { minLength: 1, maxLength: 6 }), (records) => {
      const frames = decodeCapture(Buffer.concat(encodeMessage(records)));
      expect(frames.every((f) => f.checksumOk !== false)).toBe(true);
      expect(framesToText(frames).split('\r').filter((r) => r !== '')).toEqual(records);
    }), RUNS);
  });
});

describe('DICOM Part 10 reader and fast parse', () => {
  it('any bytes, and mangled real files: only typed refusals', () => {
    fc.assert(fc.property(mutated(dicomSeeds), (b) => dicomPart10Target(b)), { numRuns: 100 });
  });
});

describe('FHIR JSON intake (parse and validation, in process; over HTTP in fhir-http.property.test.ts)', () => {
  it('random JSON values as resources: only typed refusals', () => {
    const resource = fc.record({ resourceType: fc.constantFrom('Patient', 'Observation', 'Bundle', 'Nope', '__proto__'), body: fc.dictionary(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 4 }), { maxKeys: 6 }) }).map(({ resourceType, body }) => Buffer.from(JSON.stringify({ ...body, resourceType })));
    fc.assert(fc.property(resource, (b) => fhirJsonTarget(b)), { numRuns: 100 });
  });
});
