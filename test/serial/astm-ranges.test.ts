/** ASTM reference ranges keep the instrument's own text beside the parsed bounds (issue 20: nothing of the original lost). */
import { describe, expect, it } from 'vitest';
import type { Observation } from '@medplum/fhirtypes';
import { parseRecords } from '../../facades/serial/astm/records.js';
import { mapAstmMessage } from '../../facades/serial/mapping/astm-map.js';
import { buildReportBundle } from '../../facades/serial/mapping/fhir.js';

const MESSAGE = [
  'H|\\^&|||Analyzer^1.0^SN12345|||||||P|1|20261202101500',
  'P|1||PID-1',
  'O|1|S-77||^^^GLU\\^^^K\\^^^CRP\\^^^NA|R||||||N||||SERUM',
  'R|1|^^^GLU|5.9|mmol/L|3.5 to 5.0|H||F||||20261202101000',
  'R|2|^^^K|4.1|mmol/L|3.5-5.1|N||F||||20261202101000',
  'R|3|^^^CRP|3|mg/L|<5|N||F||||20261202101000',
  'R|4|^^^NA|140|mmol/L|see lab manual|N||F||||20261202101000',
  'L|1|N',
].join('\r');

describe('ASTM reference ranges', () => {
  it('keep their text as sent, with low/high where they parse', () => {
    const set = mapAstmMessage(parseRecords(MESSAGE).records, { timeZone: 'UTC' });
    const ranges = set.reports[0]!.observations.map((o) => o.referenceRange);
    expect(ranges).toEqual([
      { low: 3.5, high: 5.0, text: '3.5 to 5.0', unit: 'mmol/L' },
      { low: 3.5, high: 5.1, text: '3.5-5.1', unit: 'mmol/L' },
      { high: 5, text: '<5', unit: 'mg/L' },
      { text: 'see lab manual', unit: 'mmol/L' },
    ]);
    const { bundle } = buildReportBundle({ report: set.reports[0]!, deviceIdentifiers: set.deviceIdentifiers, deviceName: set.deviceName, patient: 'Patient/p1', issued: new Date() });
    const obs = bundle.entry!.map((e) => e.resource).filter((r): r is Observation => r?.resourceType === 'Observation');
    expect(obs.map((o) => o.referenceRange?.[0]?.text)).toEqual(['3.5 to 5.0', '3.5-5.1', '<5', 'see lab manual']);
  });
});
