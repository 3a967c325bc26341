/**
 * HL7 v2 escape sequences (v2.8 ch. 2.7): \F\ \S\ \T\ \R\ \E\ \P\, \Xhh…\ (hex bytes), \.br\ and
 * formatting commands, \H\ \N\ highlighting, \Cxxyy\ \Mxxyyzz\ character-set switches and \Zxx\ local
 * escapes (dropped: they carry no text). An unterminated escape is kept literally.
 */
import type { Delimiters } from './message.js';

export function unescapeHl7(value: string, d: Delimiters): string {
  const e = d.escape;
  if (!value.includes(e)) return value === '""' ? '' : value;
  let out = '';
  let i = 0;
  while (i < value.length) {
    const ch = value[i]!;
    if (ch !== e) {
      out += ch;
      i++;
      continue;
    }
    const end = value.indexOf(e, i + 1);
    if (end === -1) {
      out += value.slice(i);
      break;
    }
    const seq = value.slice(i + 1, end);
    out += expand(seq, d) ?? value.slice(i, end + 1);
    i = end + 1;
  }
  return out;
}

function expand(seq: string, d: Delimiters): string | undefined {
  switch (seq) {
    case 'F':
      return d.field;
    case 'S':
      return d.component;
    case 'T':
      return d.subcomponent;
    case 'R':
      return d.repetition;
    case 'E':
      return d.escape;
    case 'P':
      return '&'; // truncation character (v2.7+)
    case 'H':
    case 'N':
      return '';
    case '.br':
      return '\n';
  }
  if (seq.startsWith('.sp')) return '\n'.repeat(Math.max(1, Number(seq.slice(3).trim() || 1)));
  if (/^\.(fi|nf|in|ti|sk|ce)/.test(seq)) return seq === '.ce' ? '\n' : '';
  if (/^X([0-9A-Fa-f]{2})+$/.test(seq)) return Buffer.from(seq.slice(1), 'hex').toString('utf8');
  if (/^[CM][0-9A-Fa-f]+$/.test(seq)) return '';
  if (seq.startsWith('Z')) return '';
  return undefined;
}

/** Escapes the delimiters in a value we write into a message (ACK text, ERR messages). */
export function escapeHl7(value: string, d: Delimiters): string {
  let out = '';
  for (const ch of value) {
    if (ch === d.escape) out += `${d.escape}E${d.escape}`;
    else if (ch === d.field) out += `${d.escape}F${d.escape}`;
    else if (ch === d.component) out += `${d.escape}S${d.escape}`;
    else if (ch === d.subcomponent) out += `${d.escape}T${d.escape}`;
    else if (ch === d.repetition) out += `${d.escape}R${d.escape}`;
    else if (ch === '\r' || ch === '\n') out += `${d.escape}.br${d.escape}`;
    else out += ch;
  }
  return out;
}
