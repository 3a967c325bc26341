import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
/** Every ORU, OUL, ORM, OML and ADT message file under `root`/hl7v2 (by MSH-9 for the mixed folders). */
export function corpusFiles(root: string): Array<{ name: string; path: string }> {
  const HL7_DATA = path.join(root, 'hl7v2');
  const out: Array<{ name: string; path: string }> = [];
  const dirs = ['corpus/oru-lab', 'corpus/oru-device', 'corpus/adt', 'corpus/orm', 'corpus/oml', 'corpus/other', 'corpus/odd', 'fhir-converter'];
  for (const dir of dirs) {
    if (!existsSync(path.join(HL7_DATA, dir))) continue;
    for (const f of readdirSync(path.join(HL7_DATA, dir)).sort()) {
      if (!f.endsWith('.hl7')) continue;
      const p = path.join(HL7_DATA, dir, f);
      const text = readFileSync(p, 'latin1');
      const mshs = [...text.matchAll(/MSH(.)[^\r\n]*/g)];
      if (mshs.length === 0) continue;
      // Batches and multi-message files are covered by the envelope tests.
      if (/^\s*(\xef\xbb\xbf)?(FHS|BHS)/.test(text) || /[\r\n](BTS|FTS)/.test(text) || mshs.length > 1) continue;
      const fsep = mshs[0]![1]!;
      const type = mshs[0]![0]!.split(fsep)[8] ?? '';
      if (/^(ORU|OUL|ORM|OML|ADT)/.test(type)) out.push({ name: `${dir}/${f}`, path: p });
    }
  }
  return out;
}
