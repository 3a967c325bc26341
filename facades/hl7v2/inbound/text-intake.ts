/**
 * What a message must be to be stored as text: bytes in a character set this server decodes (MSH-18) and no NUL
 * byte in a value (PostgreSQL text and jsonb cannot hold U+0000). A message that fails is refused with an ERR naming
 * the field, before it is mapped, so that the refusal is the same on every resend and never a storage failure
 * without an answer (a poison message); its exact bytes stay in the message log.
 */
import { isUtf8 } from 'node:buffer';
import type { Hl7v2Message } from '../message.js';
import { HL7_ERROR, type Hl7Issue } from './ack.js';

/** HL7 table 0211 values whose text is what splitEnvelope decodes (UTF-8, else ISO 8859-1). */
const DECODED = new Set(['', 'ASCII', '8859/1', 'ISO IR6', 'ISO IR100', 'UNICODE', 'UNICODE UTF-8']);
const UTF8 = new Set(['UNICODE', 'UNICODE UTF-8']);

export function textIntakeRefusal(msg: Hl7v2Message, raw: Buffer, rawIsPayload: boolean): { code: 'AE' | 'AR'; issues: Hl7Issue[] } | undefined {
  const charsets = msg.msh.raw(18).split(msg.d.repetition).map((c) => c.trim().toUpperCase());
  const unknown = charsets.filter((c) => !DECODED.has(c));
  if (unknown.length) {
    const message = `MSH-18 character set ${unknown.join(', ')} is not supported (this server reads ASCII, 8859/1 and UNICODE UTF-8); the message was not read and its bytes are kept in the message log`;
    return { code: 'AR', issues: [{ code: HL7_ERROR.tableValueNotFound, segment: 'MSH', sequence: 1, field: 18, message }] };
  }
  // Batch members were decoded with their batch; only a message received on its own has its bytes here.
  if (rawIsPayload && UTF8.has(charsets[0]!) && !isUtf8(raw)) {
    const at = firstInvalidUtf8(raw);
    const where = at >= 0 ? ` (first invalid byte 0x${raw[at]!.toString(16).padStart(2, '0')} at offset ${at})` : '';
    const message = `MSH-18 declares UTF-8 but the bytes are not valid UTF-8${where}; the message was not read and its bytes are kept in the message log`;
    return { code: 'AE', issues: [{ code: HL7_ERROR.dataTypeError, segment: 'MSH', sequence: 1, field: 18, message }] };
  }
  const issues: Hl7Issue[] = [];
  // MSH's own fields keep a NUL (shown as U+2400 in the log's columns); every other value would be stored as text.
  for (const seg of msg.segments) {
    if (seg.name === 'MSH') continue;
    for (let f = 1; f <= seg.fieldCount; f++) {
      if (!seg.raw(f).includes('\u0000')) continue;
      issues.push({ code: HL7_ERROR.dataTypeError, segment: seg.name, sequence: seg.sequence, field: f, message: `contains a NUL byte (0x00), which cannot be stored as text; send the value without it` });
      break;
    }
  }
  return issues.length ? { code: 'AE', issues } : undefined;
}

/** Offset of the first byte that does not start a well-formed sequence (lead and continuation bytes only), or -1. */
function firstInvalidUtf8(b: Buffer): number {
  for (let i = 0; i < b.length; ) {
    const x = b[i]!;
    const len = x < 0x80 ? 1 : x >= 0xc2 && x <= 0xdf ? 2 : x >= 0xe0 && x <= 0xef ? 3 : x >= 0xf0 && x <= 0xf4 ? 4 : 0;
    if (len === 0 || i + len > b.length) return i;
    for (let k = 1; k < len; k++) if ((b[i + k]! & 0xc0) !== 0x80) return i;
    i += len;
  }
  return -1;
}
