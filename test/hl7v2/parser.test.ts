/** Real-world input quirks: BOM, CR/LF/CRLF, declared delimiters, escapes, repetitions, Z-segments, batches, versions. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { splitEnvelope } from '../../facades/hl7v2/envelope.js';
import type { Observation } from '@medplum/fhirtypes';
import { Hl7v2Message } from '../../facades/hl7v2/message.js';
import { mapMessage } from '../../facades/hl7v2/inbound/map-message.js';
import { DEFAULT_MAPPING } from '../../facades/hl7v2/inbound/mapping-config.js';
import { dataFile, inData } from '../../tools/shared-data.js';

/** A corpus file, from test/fixtures or (files whose licence keeps them out of it) the shared corpus. */
const file = (p: string) => {
  const found = dataFile(`hl7v2/corpus/${p}`);
  if (!found) throw new Error(`hl7v2/corpus/${p} is neither in test/fixtures nor in the shared corpus`);
  return readFileSync(found);
};
/** Runs a case only when all its files are at hand (see test/fixtures/PROVENANCE.md). */
const withFiles = (...ps: string[]) => it.runIf(inData(...ps.map((p) => `hl7v2/corpus/${p}`)));
const one = (p: string) => {
  const env = splitEnvelope(file(p));
  expect(env.problems).toEqual([]);
  expect(env.messages).toHaveLength(1);
  return Hl7v2Message.parse(env.messages[0]!);
};

describe('HL7 v2 parsing quirks', () => {
  it('strips a UTF-8 BOM and accepts LF, CRLF and CR segment separators alike', () => {
    const bom = one('odd/msfc_LAB-ORU-1_verbatim_BOM_LF.hl7');
    expect(file('odd/msfc_LAB-ORU-1_verbatim_BOM_LF.hl7').subarray(0, 3)).toEqual(Buffer.from([0xef, 0xbb, 0xbf]));
    expect(bom.msh.name).toBe('MSH');
    expect(bom.messageType).toBe('ORU^R01');
    const unix = one('odd/lfh_sample_unix.hl7');
    const win = one('odd/lfh_sample_win.hl7');
    expect(unix.segments.map((s) => s.name)).toEqual(win.segments.map((s) => s.name));
    expect(unix.first('PID')!.raw(5)).toBe(win.first('PID')!.raw(5));
    expect(unix.segments.length).toBeGreaterThan(3);
  });

  withFiles('odd/hapi_NewPipeParserTest_L1184.hl7', 'odd/hapi_npac_04_BAR-P01_v2.4.hl7')('reads delimiters from MSH-1/MSH-2: ^~|\\&, |^~\\} (no subcomponent), $%~\\& and a Java-doubled ^~\\\\&', () => {
    const va = one('odd/hapi_NewPipeParserTest_L1184.hl7');
    expect(va.d).toMatchObject({ field: '^', component: '~', repetition: '|', escape: '\\', subcomponent: '&' });
    expect(va.messageType).toBe('ORU^R01');
    expect(va.first('OBX')!.get(3, 2)).toBe('PAIN');
    const npac = one('odd/hapi_npac_04_BAR-P01_v2.4.hl7');
    expect(npac.d).toMatchObject({ field: '|', component: '^', repetition: '~', escape: '}' });
    expect(npac.first('PID')!.get(5, 1)).toBe('CRESWELL');
    const dollar = Hl7v2Message.parse('MSH$%~\\&$A$B$$$$ADT%A01$1$P$2.5\rPID$$$123%%%HOSP$$Doe%Jane');
    expect(dollar.first('PID')!.get(3, 4)).toBe('HOSP');
    expect(dollar.first('PID')!.get(5, 2)).toBe('Jane');
    const doubled = one('odd/lfh_Hl7ORUMessageTest_L60.hl7');
    expect(doubled.d).toMatchObject({ escape: '\\', subcomponent: '&' });
    expect(doubled.first('OBR')!.get(3, 3)).toBe('2.16.840.1.114222.4.3.3.5.1.2');
  });

  withFiles('odd/hapi_NewPipeParserTest_L493.hl7')('unescapes \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ and \\.br\\, and keeps components, subcomponents and repetitions apart', () => {
    const m = Hl7v2Message.parse(
      'MSH|^~\\&|A|B|||20240101||ORU^R01|1|P|2.5\rOBX|1|FT|X^Y^L||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X48492E\\g\\.br\\h~rep2^comp2&sub2\rZZZ|kept',
    );
    const obx = m.first('OBX')!;
    expect(obx.get(5)).toBe('a|b^c&d~e\\fHI.g\nh');
    expect(obx.reps(5)).toHaveLength(2);
    expect(obx.get(5, 1, 1, 2)).toBe('rep2');
    expect(obx.get(5, 2, 2, 2)).toBe('sub2');
    expect(m.first('ZZZ')!.get(1)).toBe('kept');
    const esc = one('odd/hapi_NewPipeParserTest_L493.hl7');
    expect(esc.segments.length).toBeGreaterThan(2);
  });

  withFiles('odd/pyhl7_sample_file1.hl7', 'odd/pyhl7_sample_batch4.hl7', 'odd/pyhl7_sample_batch3.hl7', 'odd/pyhl7_sample_bad_batch.hl7', 'odd/pyhl7_sample_bad_file2.hl7')('splits FHS/BHS batches, tolerates a missing header or trailer, and reports broken envelopes', () => {
    const ok = splitEnvelope(file('odd/pyhl7_sample_file1.hl7'));
    expect(ok.problems).toEqual([]);
    expect(ok.messages.length).toBeGreaterThan(1);
    expect(ok.messages.every((m) => m.startsWith('MSH'))).toBe(true);
    // MSH… BTS without BHS: an implicit batch (as python-hl7 reads it), not a defect.
    const implicit = splitEnvelope(file('odd/pyhl7_sample_batch4.hl7'));
    expect([implicit.problems, implicit.messages.length]).toEqual([[], 1]);
    expect(splitEnvelope(file('odd/pyhl7_sample_batch3.hl7')).warnings).toEqual(['batch not closed: BHS without BTS']);
    const bad = splitEnvelope(file('odd/pyhl7_sample_bad_batch.hl7'));
    expect(bad.problems[0]).toBe('segment EVN at line 2 is outside any message (no MSH before it)');
    expect(bad.problems.at(-1)).toBe('BTS-1 declares 1 messages but the batch holds 0');
    expect(splitEnvelope(file('odd/pyhl7_sample_bad_file2.hl7')).problems[0]).toBe('FHS at line 5: a second file header before FTS');
    // Several MSH in one payload without an envelope: several messages.
    expect(splitEnvelope(file('odd/node-hl7-client_hl7.sanity.test_L257.hl7')).messages).toHaveLength(2);
  });

  withFiles('orm/hapi_npac_14_ORM-O01_v2.2.hl7', 'odd/hapi_npac_08_BAR-P01_v2.1.hl7')('parses versions 2.1 to 2.8 from the corpus', () => {
    const versions = new Set<string>();
    for (const p of ['orm/hapi_npac_14_ORM-O01_v2.2.hl7', 'odd/hapi_npac_08_BAR-P01_v2.1.hl7', 'adt/lfh_Hl7MessageTest_L130.hl7', 'oru-lab/nhc_valid_nist_ORU_R01_2.5.1_SampleTestCase1.hl7']) {
      versions.add(one(p).version);
    }
    expect([...versions].sort()).toEqual(['2.1', '2.2', '2.5.1', '2.7']);
  });

  withFiles('oru-lab/hapi_NewPipeParserTest_L694.hl7')('names a line that is not a segment (a CR inside a field) instead of failing the whole parse', () => {
    const m = one('oru-lab/hapi_NewPipeParserTest_L694.hl7');
    expect(m.defects).toEqual(["line 3 'String||20090505||||||F' is not a segment (no segment id followed by '|')"]);
    expect(() => Hl7v2Message.parse('PID|1')).toThrow("message must start with MSH, found 'PID'");
  });
});

describe('HL7 v2 result units', () => {
  it("a local unit code whose text is UCUM (Cerner's CD:289^mg/dL) maps to a UCUM Quantity", () => {
    const mapped = mapMessage(one('oru-lab/simplehl7_oru.hl7'), DEFAULT_MAPPING);
    const hdl = mapped.bundle.entry!.map((e) => e.resource as Observation).find((r) => r.resourceType === 'Observation' && r.code.text?.startsWith('HDL'))!;
    // The received local code stays beside the UCUM one (R4 iso21090-PQ-translation), so it can go out again.
    expect(hdl.valueQuantity).toEqual({
      value: 62,
      unit: 'mg/dL',
      system: 'http://unitsofmeasure.org',
      code: 'mg/dL',
      extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/iso21090-PQ-translation', valueQuantity: { value: 62, code: 'CD:289', unit: 'mg/dL' } }],
    });
  });
});
