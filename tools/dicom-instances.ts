/**
 * Test instances for DICOM benchmarks: copies of a small CT (pydicom's CT_small.dcm, in test/fixtures) with fresh
 * Study, Series and SOP Instance UIDs of the same length, so each copy is a new instance to the archive.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fixturePath } from './shared-data.js';

const SRC = fixturePath('dicom/pydicom/CT_small.dcm');

/** Copies of CT_small.dcm with fresh study/series/SOP UIDs of the same length (bytes patched in place). */
export function makeInstances(dir: string, n: number, tag: string, perStudy = 100): string[] {
  mkdirSync(dir, { recursive: true });
  const src = readFileSync(SRC);
  const sop = '1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322';
  const study = '1.3.6.1.4.1.5962.1.2.1.20040119072730.12322';
  const series = '1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322';
  const files: string[] = [];
  const patch = (buf: Buffer, from: string, to: string) => {
    let i = buf.indexOf(from);
    while (i >= 0) {
      buf.write(to, i, 'ascii');
      i = buf.indexOf(from, i + from.length);
    }
  };
  const uid = (base: string, suffix: string) => base.slice(0, base.length - suffix.length) + suffix;
  for (let i = 0; i < n; i++) {
    const b = Buffer.from(src);
    const s = Math.floor(i / perStudy);
    patch(b, sop, uid(sop, `${tag}${String(i).padStart(6, '0')}`));
    patch(b, study, uid(study, `${tag}${String(s).padStart(5, '0')}`));
    patch(b, series, uid(series, `${tag}${String(s).padStart(5, '0')}`));
    const f = path.join(dir, `${i}.dcm`);
    writeFileSync(f, b);
    files.push(f);
  }
  return files;
}

