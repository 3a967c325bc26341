/** Pure parts of the DICOM facade: Part 10 header parsing, attribute matching, multipart parsing. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { buildPart10Header, DicomParseError, parsePart10Header, str } from '../../facades/dicom/part10.js';
import { matches, project } from '../../facades/dicom/matching.js';
import { parseMultipart } from '../../facades/dicom/dicomweb/multipart.js';
import { iidTarget } from '../../facades/dicom/index.js';
import { issuerToSystem, systemToIssuer } from '../../facades/dicom/config.js';
import { DATA, dicomFiles } from './helpers.js';

describe('Part 10 header parsing', () => {
  it('reads every pydicom file up to the Pixel Data, from a prefix when it suffices', () => {
    for (const f of [...dicomFiles(), ...dicomFiles(path.join(DATA, 'series-mr'))]) {
      const buf = readFileSync(f);
      const fromPrefix = parsePart10Header(buf.subarray(0, 4096), buf.length <= 4096);
      const full = parsePart10Header(buf, true);
      expect(full, f).not.toBe('need-more');
      if (full === 'need-more') continue;
      expect(str(full.dataset, '00080018'), f).toMatch(/^[0-9.]+$/);
      if (fromPrefix !== 'need-more') expect(fromPrefix.dataset, f).toEqual(full.dataset);
    }
  });

  it('reads the same attributes with the lean parser as with dcmjs', () => {
    // Known, intended differences: dcmjs rewrites (0008,0005) to ISO_IR 192, drops non-ArrayBuffer binaries
    // and trims trailing CR/LF from text; the lean parser keeps what was sent.
    const normalise = (ds: Record<string, unknown>) => {
      const out = JSON.parse(JSON.stringify(ds, (_k, v) => (typeof v === 'string' ? v.replace(/[\r\n]+$/, '') : v)));
      delete out['00080005'];
      for (const k of Object.keys(out)) if (out[k].InlineBinary !== undefined) delete out[k].InlineBinary;
      return out;
    };
    for (const f of [...dicomFiles(), ...dicomFiles(path.join(DATA, 'series-cr')), ...dicomFiles(path.join(DATA, 'malformed'))]) {
      const parse = (parser: 'lean' | 'dcmjs'): ReturnType<typeof parsePart10Header> | { error: string } => {
        try {
          return parsePart10Header(readFileSync(f), true, parser);
        } catch (e) {
          return { error: (e as Error).message };
        }
      };
      const lean = parse('lean');
      const reference = parse('dcmjs');
      if (lean === 'need-more' || reference === 'need-more' || 'error' in lean || 'error' in reference) {
        expect(lean, f).toEqual(reference);
        continue;
      }
      expect(normalise(lean.dataset), f).toEqual(normalise(reference.dataset));
      expect(lean.pixelData, f).toEqual(reference.pixelData);
    }
  });

  it('locates uncompressed pixel data exactly and marks encapsulated data', () => {
    const ct = parsePart10Header(readFileSync(path.join(DATA, 'CT_small.dcm')), true);
    if (ct === 'need-more') throw new Error('unexpected');
    expect(ct.pixelData).toEqual({ valueOffset: 6300, length: 32768, vr: 'OW' });
    const j2k = parsePart10Header(readFileSync(path.join(DATA, 'JPEG2000.dcm')), true);
    if (j2k === 'need-more') throw new Error('unexpected');
    expect(j2k.pixelData?.length).toBe(-1);
  });

  it('names what is wrong with malformed files', () => {
    const err = (name: string) => {
      try {
        parsePart10Header(readFileSync(path.join(DATA, 'malformed', name)), true);
        return '';
      } catch (e) {
        expect(e).toBeInstanceOf(DicomParseError);
        return (e as Error).message;
      }
    };
    expect(err('no_meta.dcm')).toMatch(/"DICM" prefix/);
    expect(err('meta_missing_tsyntax.dcm')).toMatch(/Transfer Syntax UID/);
    expect(err('rtplan_truncated.dcm')).toMatch(/malformed or truncated/);
    expect(() => parsePart10Header(Buffer.alloc(10), true)).toThrow(/shorter than/);
  });

  it('writes a meta header that reads back', () => {
    const head = buildPart10Header('1.2.840.10008.5.1.4.1.1.7', '1.2.3.4', '1.2.840.10008.1.2', 'MOD1');
    const p = parsePart10Header(head, true);
    if (p === 'need-more') throw new Error('unexpected');
    expect(str(p.meta, '00020003')).toBe('1.2.3.4');
    expect(str(p.meta, '00020016')).toBe('MOD1');
    expect(p.transferSyntaxUid).toBe('1.2.840.10008.1.2');
  });
});

describe('attribute matching', () => {
  const c = {
    '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Doe^Archibald' }] },
    '00080020': { vr: 'DA', Value: ['20040119'] },
    '0020000D': { vr: 'UI', Value: ['1.2.3'] },
    '00080061': { vr: 'CS', Value: ['CT', 'SR'] },
    '00400100': { vr: 'SQ', Value: [{ '00080060': { vr: 'CS', Value: ['CT'] }, '00400001': { vr: 'AE', Value: ['CT1'] } }] },
  };
  it('matches wildcards, case-insensitive names, ranges, UID lists, multi-values and sequences', () => {
    expect(matches({ '00100010': { vr: 'PN', Value: [{ Alphabetic: 'doe*' }] } }, c)).toBe(true);
    expect(matches({ '00100010': { vr: 'PN', Value: [{ Alphabetic: 'D?e^Arch*' }] } }, c)).toBe(true);
    expect(matches({ '00100010': { vr: 'PN', Value: ['Smith*'] } }, c)).toBe(false);
    expect(matches({ '00100010': { vr: 'PN', Value: ['arch'] } }, c, true)).toBe(true);
    expect(matches({ '00100010': { vr: 'PN', Value: ['arch'] } }, c, false)).toBe(false);
    expect(matches({ '00080020': { vr: 'DA', Value: ['20040101-20040131'] } }, c)).toBe(true);
    expect(matches({ '00080020': { vr: 'DA', Value: ['-20031231'] } }, c)).toBe(false);
    expect(matches({ '0020000D': { vr: 'UI', Value: ['9.9', '1.2.3'] } }, c)).toBe(true);
    expect(matches({ '00080061': { vr: 'CS', Value: ['SR'] } }, c)).toBe(true);
    expect(matches({ '00400100': { vr: 'SQ', Value: [{ '00080060': { vr: 'CS', Value: ['CT'] }, '00400001': { vr: 'AE' } }] } }, c)).toBe(true);
    expect(matches({ '00400100': { vr: 'SQ', Value: [{ '00080060': { vr: 'CS', Value: ['MR'] } }] } }, c)).toBe(false);
    expect(matches({ '00281050': { vr: 'DS' } }, c)).toBe(true);
  });
  it('projects the query keys, empty when the candidate lacks them', () => {
    expect(project({ '00100010': { vr: 'PN' }, '00100030': { vr: 'DA' } }, c)).toEqual({ '00100010': c['00100010'], '00100030': { vr: 'DA' } });
  });
});

describe('multipart/related parsing', () => {
  const boundary = 'b0undary';
  const parts = [Buffer.from('first part\r\n--not-the-boundary'), Buffer.alloc(70_000, 7), Buffer.from('')];
  const body = Buffer.concat([
    Buffer.from('preamble\r\n'),
    ...parts.flatMap((p, i) => [Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\nX-Part: ${i}\r\n\r\n`), p, Buffer.from('\r\n')]),
    Buffer.from(`--${boundary}--\r\nepilogue`),
  ]);
  for (const chunk of [1, 7, 64, 4096, body.length]) {
    it(`splits parts exactly with ${chunk}-byte chunks`, async () => {
      const chunks: Buffer[] = [];
      for (let i = 0; i < body.length; i += chunk) chunks.push(body.subarray(i, i + chunk));
      const got: Array<{ h: Record<string, string>; b: Buffer }> = [];
      await parseMultipart(Readable.from(chunks), boundary, async (h, s) => {
        const bufs: Buffer[] = [];
        for await (const c of s) bufs.push(c as Buffer);
        got.push({ h, b: Buffer.concat(bufs) });
      });
      expect(got.map((g) => g.h['x-part'])).toEqual(['0', '1', '2']);
      got.forEach((g, i) => expect(g.b.equals(parts[i])).toBe(true));
    });
  }
  it('rejects a body without its closing boundary', async () => {
    const cut = body.subarray(0, 200);
    await expect(parseMultipart(Readable.from([cut]), boundary, async (_h, s) => void s.resume())).rejects.toThrow(/closing boundary/);
  });
});

describe('identifiers and IID', () => {
  const cfg = { port: 0, aeTitle: 'C', acceptAnyAe: false, aes: [], identifierSystems: { MAPPED: 'http://hospital.example/mrn' }, viewerUrlTemplate: '' };
  it('maps issuers like the HL7 facade, and back', () => {
    expect(issuerToSystem('HOSP', '', '', cfg)).toBe('urn:conflux:hl7v2:aa:HOSP');
    expect(issuerToSystem('', '1.2.3', 'ISO', cfg)).toBe('urn:oid:1.2.3');
    expect(issuerToSystem('MAPPED', '', '', cfg)).toBe('http://hospital.example/mrn');
    expect(systemToIssuer('urn:conflux:hl7v2:aa:HOSP', cfg)).toBe('HOSP');
    expect(systemToIssuer('http://hospital.example/mrn', cfg)).toBe('MAPPED');
  });
  it('builds viewer URLs and rejects incomplete requests', () => {
    expect(iidTarget({ requestType: 'PATIENT', patientID: 'a b' }, 'https://v/?p={patientID}&w={dicomweb}', 'http://h/dicomweb')).toBe('https://v/?p=a%20b&w=http://h/dicomweb');
    expect(() => iidTarget({ requestType: 'PATIENT' }, '', '')).toThrow(/patientID/);
    // A study-only viewer template and a request that names no study: the QIDO-RS search, never an empty UID.
    expect(iidTarget({ requestType: 'PATIENT', patientID: 'P 1' }, '{dicomweb}/studies/{studyUID}', 'http://h/dicomweb')).toBe('http://h/dicomweb/studies?PatientID=P%201');
    expect(iidTarget({ requestType: 'STUDY', accessionNumber: 'A1' }, '{dicomweb}/studies/{studyUID}', 'http://h/dicomweb')).toBe('http://h/dicomweb/studies?AccessionNumber=A1');
  });
});
