/**
 * ACK building for inbound messages: original mode (AA/AE/AR) and enhanced mode (MSH-15 accept
 * acknowledgement CA/CE/CR, MSH-16 application acknowledgement AA/AE/AR, each sent only when the
 * condition AL/ER/SU asks for it). The ACK swaps sender and receiver, echoes MSH-10 in MSA-2 and uses
 * the delimiters of the message it answers. ERR follows v2.5+ (ERR-2 location, ERR-3 code, ERR-4
 * severity, ERR-8 user message) and, for older versions, v2.3/2.4's ERR-1.
 */
import { randomUUID } from 'node:crypto';
import { escapeHl7 } from '../escape.js';
import { DEFAULT_DELIMITERS, type Delimiters, Hl7ParseError, type Hl7v2Message, type Segment } from '../message.js';
import { ConfluxError, type ErrorCode } from '../../../src/index.js';

/** HL7 table 0357 message error condition codes. */
export const HL7_ERROR = {
  segmentSequence: 100,
  requiredFieldMissing: 101,
  dataTypeError: 102,
  tableValueNotFound: 103,
  unsupportedMessageType: 200,
  unsupportedEventCode: 201,
  unsupportedProcessingId: 202,
  unsupportedVersionId: 203,
  unknownKeyIdentifier: 204,
  duplicateKeyIdentifier: 205,
  applicationRecordLocked: 206,
  applicationInternalError: 207,
} as const;

const ERROR_TEXT: Record<number, string> = {
  100: 'Segment sequence error',
  101: 'Required field missing',
  102: 'Data type error',
  103: 'Table value not found',
  200: 'Unsupported message type',
  201: 'Unsupported event code',
  202: 'Unsupported processing id',
  203: 'Unsupported version id',
  204: 'Unknown key identifier',
  205: 'Duplicate key identifier',
  206: 'Application record locked',
  207: 'Application internal error',
};

export interface Hl7Issue {
  code: number;
  /** 'PID' */
  segment?: string;
  /** 1-based occurrence of that segment */
  sequence?: number;
  field?: number;
  component?: number;
  message: string;
  severity?: 'E' | 'W' | 'I';
}

export type AckCode = 'AA' | 'AE' | 'AR' | 'CA' | 'CE' | 'CR';

/** A data error found while mapping: becomes AE with ERR segments. */
export class Hl7DataError extends ConfluxError {
  constructor(readonly issues: Hl7Issue[]) {
    super('hl7-data', issues.map(formatIssue).join('; '));
  }
}

/**
 * Runs one mapping step; a data error is collected into `issues` (so one message reports every defect
 * at once) and the step yields undefined. Anything else is a bug and propagates.
 */
export function collectDataErrors(issues: Hl7Issue[]): <T>(fn: () => T) => T | undefined {
  return <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (e) {
      if (e instanceof Hl7DataError) {
        issues.push(...e.issues);
        return undefined;
      }
      throw e;
    }
  };
}

/** The message cannot be handled at all (type, version, processing id): AR. */
export class Hl7RejectError extends ConfluxError {
  constructor(readonly issues: Hl7Issue[]) {
    super('hl7-reject', issues.map(formatIssue).join('; '));
  }
}

/**
 * HL7 table 0357 condition of a failure that carries no ERR issues of its own, by code. Anything else, including a
 * failure that is not a ConfluxError (a bug, a lost database), is 207 Application internal error.
 */
export const HL7_ERROR_BY_CODE: Partial<Record<ErrorCode, number>> = {
  'hl7-parse': HL7_ERROR.segmentSequence,
  'identity-conflict': HL7_ERROR.duplicateKeyIdentifier,
};

/**
 * The MLLP edge of the error model (docs/errors.md): the acknowledgement code and ERR segments a failure is answered
 * with. A message this server does not take is AR; a message it could not map or store is AE.
 */
export function refusalFor(err: unknown): { code: 'AE' | 'AR'; issues: Hl7Issue[] } {
  if (err instanceof Hl7RejectError) return { code: 'AR', issues: err.issues };
  if (err instanceof Hl7DataError) return { code: 'AE', issues: err.issues };
  // An unreadable MSH: the fault is in MSH-1/MSH-2 (the delimiters) or before it.
  if (err instanceof Hl7ParseError) return { code: 'AE', issues: [{ code: HL7_ERROR.segmentSequence, segment: 'MSH', sequence: 1, field: 1, message: err.message }] };
  const message = err instanceof Error ? err.message : String(err);
  const code = (err instanceof ConfluxError ? HL7_ERROR_BY_CODE[err.code] : undefined) ?? HL7_ERROR.applicationInternalError;
  return { code: 'AE', issues: [{ code, message: `the resources could not be stored: ${message}` }] };
}

export function issueAt(seg: Segment | string, field: number, code: number, message: string, component?: number): Hl7Issue {
  return typeof seg === 'string'
    ? { code, segment: seg, sequence: 1, field, component, message }
    : { code, segment: seg.name, sequence: seg.sequence, field, component, message };
}

export function formatIssue(i: Hl7Issue): string {
  const loc = i.segment ? `${i.segment}${i.sequence && i.sequence > 1 ? `[${i.sequence}]` : ''}${i.field ? `-${i.field}` : ''}${i.component ? `.${i.component}` : ''}: ` : '';
  return `${loc}${i.message}`;
}

/** What MSH-15/MSH-16 ask for. Empty in both → original mode. */
export interface AckPlan {
  enhanced: boolean;
  accept: 'AL' | 'NE' | 'ER' | 'SU';
  application: 'AL' | 'NE' | 'ER' | 'SU';
}

export function ackPlan(msg: Hl7v2Message | undefined): AckPlan {
  const a = (msg?.msh.get(15) ?? '').toUpperCase();
  const b = (msg?.msh.get(16) ?? '').toUpperCase();
  if (!a && !b) return { enhanced: false, accept: 'NE', application: 'AL' };
  const norm = (v: string, dflt: AckPlan['accept']): AckPlan['accept'] => (['AL', 'NE', 'ER', 'SU'].includes(v) ? (v as AckPlan['accept']) : dflt);
  return { enhanced: true, accept: norm(a, 'AL'), application: norm(b, 'NE') };
}

function wanted(cond: AckPlan['accept'], ok: boolean): boolean {
  return cond === 'AL' || (cond === 'ER' && !ok) || (cond === 'SU' && ok);
}

/**
 * The acknowledgements to send for an outcome, in order: in original mode one ACK (AA/AE/AR); in
 * enhanced mode a commit ACK (CA/CE/CR) and/or an application ACK (AA/AE/AR) as MSH-15/16 ask.
 */
export function acknowledgements(
  msg: Hl7v2Message | undefined,
  outcome: { code: 'AA' | 'AE' | 'AR'; issues: Hl7Issue[]; text?: string },
  header?: Segment,
): string[] {
  const plan = ackPlan(msg);
  const ok = outcome.code === 'AA';
  if (!plan.enhanced) return [buildAck(msg, outcome.code, outcome.issues, outcome.text, header)];
  const out: string[] = [];
  const commit: AckCode = outcome.code === 'AA' ? 'CA' : outcome.code === 'AE' ? 'CE' : 'CR';
  if (wanted(plan.accept, ok)) out.push(buildAck(msg, commit, outcome.issues, outcome.text, header));
  if (wanted(plan.application, ok)) out.push(buildAck(msg, outcome.code, outcome.issues, outcome.text, header));
  // MLLP senders block on a reply to every frame: when MSH-15/16 ask for none, still send the commit ACK.
  if (out.length === 0) out.push(buildAck(msg, commit, outcome.issues, outcome.text, header));
  return out;
}

/**
 * One ACK message. `msg` may be missing when the input could not be parsed at all; then `header`
 * (a BHS/FHS) or nothing addresses it.
 */
export function buildAck(
  msg: Hl7v2Message | undefined,
  code: AckCode,
  issues: Hl7Issue[] = [],
  text?: string,
  header?: Segment,
  now = new Date(),
): string {
  const h = msg?.msh ?? header;
  const d: Delimiters = msg?.d ?? h?.d ?? DEFAULT_DELIMITERS;
  const enc = d.component + d.repetition + (d.escape.length === 1 && d.escape > '\u0004' ? d.escape : '') + (d.subcomponent > '\u0004' ? d.subcomponent : '');
  const version = (h?.name === 'MSH' ? h.get(12, 1) : '') || '2.5.1';
  const raw = (n: number) => (h ? h.raw(n) : '');
  const trigger = h?.name === 'MSH' ? h.get(9, 2) : '';
  const withStructure = h?.name === 'MSH' && (h.get(9, 3) !== '' || versionAtLeast(version, '2.3.1'));
  const type = ['ACK', trigger, trigger && withStructure ? 'ACK' : ''].filter(Boolean).join(d.component);
  const controlId = h?.name === 'MSH' ? h.get(10) : h ? h.get(11) : '';
  const f = d.field;
  const msh = [
    'MSH' + f + enc,
    raw(5),
    raw(6),
    raw(3),
    raw(4),
    hl7Timestamp(now),
    '',
    type,
    randomUUID().replace(/-/g, '').slice(0, 20),
    (h?.name === 'MSH' ? h.raw(11) : '') || 'P',
    h?.name === 'MSH' ? h.raw(12) || version : version,
  ].join(f);
  const firstText = text ?? (issues[0] ? formatIssue(issues[0]) : undefined);
  const msa = trimTrailing(['MSA', code, escapeHl7(controlId, d), firstText ? escapeHl7(firstText.slice(0, 80), d) : ''].join(f), f);
  const segs = [msh, msa];
  const modern = versionAtLeast(version, '2.5');
  for (const i of issues) segs.push(modern ? errV25(i, d) : errV23(i, d));
  return segs.join('\r');
}

function errV25(i: Hl7Issue, d: Delimiters): string {
  const f = d.field;
  const c = d.component;
  const loc = i.segment ? trimTrailing([i.segment, i.sequence ?? 1, i.field ?? '', i.component ?? ''].join(c), c) : '';
  const code = [i.code, ERROR_TEXT[i.code] ?? '', 'HL70357'].join(c);
  // ERR-1 (v2.3 ELD) is left empty; ERR-8 carries the readable text.
  return ['ERR', '', loc, code, i.severity ?? 'E', '', '', '', escapeHl7(i.message, d)].join(f);
}

/**
 * Drops trailing delimiters. Not a RegExp built from the delimiter: a sender may declare a letter as a delimiter
 * (MSH-2 "B~\\&"), and `\B` would be an assertion, not the character (found by npm run fuzz -- hl7v2).
 */
function trimTrailing(s: string, delimiter: string): string {
  let end = s.length;
  while (end > 0 && s[end - 1] === delimiter) end--;
  return s.slice(0, end);
}

function errV23(i: Hl7Issue, d: Delimiters): string {
  const c = d.component;
  const s = d.subcomponent > '\u0004' ? d.subcomponent : c;
  // ERR-1 ELD: segment id ^ sequence ^ field position ^ code&text&table. The text names the defect.
  const code = [i.code, escapeHl7(i.message, d).slice(0, 200), 'HL70357'].join(s);
  return ['ERR', [i.segment ?? '', i.segment ? (i.sequence ?? 1) : '', i.field ?? '', code].join(c)].join(d.field);
}

export function versionAtLeast(v: string, min: string): boolean {
  const a = v.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (Number.isNaN(x)) return false;
    if (x !== y) return x > y;
  }
  return true;
}

export function hl7Timestamp(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}+0000`;
}
