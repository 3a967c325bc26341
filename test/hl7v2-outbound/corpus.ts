/**
 * The result messages (ORU, OUL) of the shared HL7 v2 data, and a rewrite that gives each its own patient,
 * order numbers and control id, so that a run over the whole corpus files every message on its own:
 * corpus files reuse MRNs, order numbers and MSH-10 across unrelated messages, and Conflux rightly treats
 * those as the same patient, a conflicting order, or a resend.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { splitEnvelope } from '../../facades/hl7v2/envelope.js';
import { readDelimiters } from '../../facades/hl7v2/message.js';

export interface CorpusMessage {
  /** 'corpus/oru-lab/x.hl7' (+ '#2' for the second message of a multi-message file). */
  name: string;
  text: string;
}

const DIRS = ['corpus/oru-lab', 'corpus/oru-device', 'corpus/odd', 'corpus/other', 'fhir-converter'];

/** Every ORU/OUL message in the shared data, one entry per message (batches and multi-MSH files split). */
export function resultMessages(root: string): CorpusMessage[] {
  const HL7_DATA = path.join(root, 'hl7v2');
  const out: CorpusMessage[] = [];
  for (const dir of DIRS) {
    if (!existsSync(path.join(HL7_DATA, dir))) continue;
    for (const f of readdirSync(path.join(HL7_DATA, dir)).sort()) {
      const bytes = readFileSync(path.join(HL7_DATA, dir, f));
      const messages = splitEnvelope(bytes).messages;
      messages.forEach((text, i) => {
        const type = messageType(text);
        if (!/^(ORU|OUL)/.test(type)) return;
        out.push({ name: `${dir}/${f}${messages.length > 1 ? `#${i + 1}` : ''}`, text });
      });
    }
  }
  return out;
}

function messageType(text: string): string {
  const msh = text.split('\r', 1)[0] ?? '';
  if (!msh.startsWith('MSH') || msh.length < 5) return '';
  return (msh.split(msh[3]!)[8] ?? '').toUpperCase();
}

/** Which identifying fields get the suffix: PID-2/3/4 (CX-1), ORC-2/3 and OBR-2/3 (EI-1), SPM-2 (EIP), PV1-19 (CX-1). */
const TARGETS: Record<string, number[]> = { PID: [2, 3, 4], ORC: [2, 3], OBR: [2, 3], SPM: [2], PV1: [19] };

/**
 * Appends `-<tag>` to the first component (the id itself) of every repetition of the identifying fields,
 * and sets MSH-10 to `<tag>`. Namespaces, universal ids and type codes stay as they were, so what comes
 * back can be compared with the rewritten message directly. Works on the raw text with the message's own
 * delimiters (the corpus has `$%~\&` and other odd ones).
 */
export function uniquify(text: string, tag: string): string {
  const lines = text.split('\r');
  const d = readDelimiters(lines[0]!);
  return lines
    .map((line) => {
      const name = line.slice(0, 3);
      const fields = line.split(d.field);
      if (name === 'MSH') {
        // fields[0] = 'MSH', fields[1] = MSH-2, so MSH-n is fields[n - 1].
        while (fields.length < 10) fields.push('');
        fields[9] = tag;
        return fields.join(d.field);
      }
      for (const n of TARGETS[name] ?? []) {
        const f = fields[n];
        if (!f) continue;
        fields[n] = f
          .split(d.repetition)
          .map((rep) => {
            const comps = rep.split(d.component);
            // SPM-2 is EIP: placer EI & filler EI as subcomponents of components 1 and 2.
            const idx = name === 'SPM' ? [0, 1] : [0];
            for (const i of idx) {
              const c = comps[i];
              if (!c || c === '""') continue;
              const subs = c.split(d.subcomponent);
              // A blank id stays blank: the message means "no identifier", and must still say so.
              if (subs[0]?.trim()) subs[0] = `${subs[0]}-${tag}`;
              comps[i] = subs.join(d.subcomponent);
            }
            return comps.join(d.component);
          })
          .join(d.repetition);
      }
      return fields.join(d.field);
    })
    .join('\r');
}
