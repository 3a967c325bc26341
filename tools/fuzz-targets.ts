/**
 * The hostile-input entry points that the property tests (test/fuzz) and the coverage-guided fuzzer (fuzz/) both drive:
 * bytes in, the code a peer's bytes reach without a socket. Each target states its contract by what it lets through:
 * a ConfluxError (the one error model: the edge answers it with an ACK, a NAK, a DICOM status or an OperationOutcome)
 * is an expected refusal; anything else (TypeError, RangeError, a stack overflow, a plain Error) is a finding.
 */
import { ConfluxError } from '../src/errors.js';
import { assertValidResource } from '../src/fhir/validation.js';
import { nestingDepth } from '../src/http/fhir-express.js';
import { splitEnvelope } from '../facades/hl7v2/envelope.js';
import { Hl7v2Message } from '../facades/hl7v2/message.js';
import { acknowledgements, refusalFor } from '../facades/hl7v2/inbound/ack.js';
import { mapMessage } from '../facades/hl7v2/inbound/map-message.js';
import { DEFAULT_MAPPING } from '../facades/hl7v2/inbound/mapping-config.js';
import { textIntakeRefusal } from '../facades/hl7v2/inbound/text-intake.js';
import { decodeCapture, framesToText } from '../facades/serial/astm/frame.js';
import { parseRecords, splitMessages } from '../facades/serial/astm/records.js';
import { mapAstmMessage } from '../facades/serial/mapping/astm-map.js';
import { parsePart10Header } from '../facades/dicom/part10.js';
import { fastParseDataset } from '../facades/dicom/fast-parse.js';
import type { Resource } from '@medplum/fhirtypes';

export class FuzzFinding extends Error {}

/** Runs `fn`; a ConfluxError is an expected refusal, anything else propagates as a finding. */
export function refusedOrDone<T>(fn: () => T): T | ConfluxError {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ConfluxError) return e;
    throw e;
  }
}

/**
 * HL7 v2: envelope, parse, the intake checks, mapping, and the acknowledgement every outcome is answered with. The ACK
 * must itself be a parseable HL7 v2 message that echoes the control id: a sender that cannot read it resends forever.
 */
export function hl7v2Target(data: Uint8Array): void {
  const env = splitEnvelope(data);
  for (const text of env.messages) {
    const msg = refusedOrDone(() => Hl7v2Message.parse(text));
    if (msg instanceof ConfluxError) {
      const { code, issues } = refusalFor(msg);
      checkAck(acknowledgements(undefined, { code, issues }), undefined);
      continue;
    }
    let outcome: { code: 'AA' | 'AE' | 'AR'; issues: ReturnType<typeof refusalFor>['issues'] } =
      textIntakeRefusal(msg, Buffer.from(data), env.messages.length === 1) ?? { code: 'AA', issues: [] };
    if (outcome.code === 'AA') {
      const mapped = refusedOrDone(() => mapMessage(msg, DEFAULT_MAPPING));
      if (mapped instanceof ConfluxError) outcome = refusalFor(mapped);
    }
    checkAck(acknowledgements(msg, outcome), msg);
  }
}

function checkAck(acks: string[], msg: Hl7v2Message | undefined): void {
  if (acks.length === 0) throw new FuzzFinding('no acknowledgement built');
  for (const ack of acks) {
    const parsed = refusedOrDone(() => Hl7v2Message.parse(ack));
    if (parsed instanceof ConfluxError) throw new FuzzFinding(`the ACK does not parse: ${parsed.message}: ${JSON.stringify(ack.slice(0, 200))}`);
    const msa = parsed.segments.find((s) => s.name === 'MSA');
    if (!msa) throw new FuzzFinding(`the ACK has no MSA: ${JSON.stringify(ack.slice(0, 200))}`);
    if (msg && msa.get(2) !== msg.controlId) {
      throw new FuzzFinding(`MSA-2 ${JSON.stringify(msa.get(2))} does not echo MSH-10 ${JSON.stringify(msg.controlId)}`);
    }
  }
}

/** ASTM: E1381 frames out of captured bytes, E1394 records, the mapping to readings. */
export function astmTarget(data: Uint8Array): void {
  const frames = decodeCapture(data);
  const texts = [framesToText(frames), Buffer.from(data).toString('latin1')];
  for (const text of texts) {
    const parsed = refusedOrDone(() => parseRecords(text));
    if (parsed instanceof ConfluxError) continue;
    for (const records of splitMessages(parsed.records)) refusedOrDone(() => mapAstmMessage(records, { timeZone: 'Europe/Berlin', patientIdentifierSystem: 'urn:fuzz' }));
  }
}

/** DICOM Part 10: the header reader (lean and dcmjs), complete and as a prefix, and the lean dataset parser alone. */
export function dicomPart10Target(data: Uint8Array): void {
  const buf = Buffer.from(data);
  refusedOrDone(() => parsePart10Header(buf, true));
  refusedOrDone(() => parsePart10Header(buf, false));
  for (const syntax of ['implicitLE', 'explicitLE', 'explicitBE'] as const) {
    // Its documented contract: Unsupported (a ConfluxError) or RangeError for a truncated dataset (the caller waits for more).
    try {
      refusedOrDone(() => fastParseDataset(buf, 0, syntax));
    } catch (e) {
      if (!(e instanceof RangeError && /^truncated /.test(e.message))) throw e;
    }
  }
}

/** The dcmjs reader the lean one is checked against: slower, so a target of its own. */
export function dicomDcmjsTarget(data: Uint8Array): void {
  refusedOrDone(() => parsePart10Header(Buffer.from(data), true, 'dcmjs'));
}

/**
 * FHIR JSON intake without HTTP: the nesting guard, JSON.parse, and validation against the R4 definitions (what every
 * create and update runs). A SyntaxError from JSON.parse is the HTTP layer's 400; the rest must be a ConfluxError.
 */
export function fhirJsonTarget(data: Uint8Array): void {
  const text = Buffer.from(data).toString('utf8');
  if (nestingDepth(text) > 128) return;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    if (e instanceof SyntaxError) return;
    throw e;
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) return;
  refusedOrDone(() => assertValidResource(value as Resource));
}

export const TARGETS = {
  hl7v2: hl7v2Target,
  astm: astmTarget,
  'dicom-part10': dicomPart10Target,
  'dicom-dcmjs': dicomDcmjsTarget,
  'fhir-json': fhirJsonTarget,
} as const satisfies Record<string, (data: Uint8Array) => void>;

export type TargetName = keyof typeof TARGETS;
