import { describe, expect, it } from 'vitest';
import type { Observation } from '@medplum/fhirtypes';
import { associate } from '../../src/devices/index.js';
import { encodeMessage } from '../../facades/serial/astm/frame.js';
import { sendSession } from '../../facades/serial/astm/sender.js';
import { suiteAstmRig, who } from './rig.js';

/**
 * The specimen's collection time (O-8) is a lab result's effective time and decides which patient the device was
 * with; the test's completion is when it was issued. Here the analyzer changes patient between the two.
 */
describe('ASTM effective time: O-8 (specimen collected) decides, R-13 (test completed) is issued', () => {
  const { rig, nextEvent } = suiteAstmRig({ dirPrefix: 'conflux-o8-', patientName: 'Collected Patient', deviceName: 'analyzer changing hands' });

  // Europe/Berlin (the rig's time zone): 09:00 local = 08:00Z, 12:00 local = 11:00Z; the device passes to the next patient at 10:00Z.
  const message = (sample: string, o8: string) => [
    'H|\\^&|||SE-1520^Spotchem^1.0.0|||||||P||20241101121500',
    `O|1|${sample}||^^^GLU|||${o8}`,
    'R|1|^^^GLU|5.9|mmol/L||||F||||20241101120000',
    'L|1|N',
  ];

  let next = '';
  it('the device passes to another patient between collection and completion', async () => {
    const { rows } = await rig.env.db.query<{ device_id: string }>('SELECT device_id FROM device_association LIMIT 1');
    next = await rig.env.patient('Next Patient');
    await associate(rig.env.store, { device: `Device/${rows[0]!.device_id}`, patient: next, start: '2024-11-01T10:00:00Z' }, who);
  });

  it('with O-8: filed to the patient of the collection time; effective = O-8, issued = R-13', async () => {
    const done = nextEvent();
    expect((await sendSession(rig.line, encodeMessage(message('S-O8', '20241101090000')))).ok).toBe(true);
    const e = await done;
    expect(e.error).toBeUndefined();
    expect(e.result?.patientRefs).toEqual([rig.patient]);
    const ref = e.result!.resourceRefs.find((r) => r.startsWith('Observation/'))!;
    const obs = await rig.env.store.read<Observation>('Observation', ref.split('/')[1]!);
    expect(obs.subject?.reference).toBe(rig.patient);
    expect(new Date(obs.effectiveDateTime!).toISOString()).toBe('2024-11-01T08:00:00.000Z');
    expect(obs.issued).toBe('2024-11-01T11:00:00.000Z');
  }, 30_000);

  it('without O-8: R-13 is the effective time and decides the patient', async () => {
    const done = nextEvent();
    expect((await sendSession(rig.line, encodeMessage(message('S-NO-O8', '')))).ok).toBe(true);
    const e = await done;
    expect(e.error).toBeUndefined();
    expect(e.result?.patientRefs).toEqual([next]);
    const ref = e.result!.resourceRefs.find((r) => r.startsWith('Observation/'))!;
    const obs = await rig.env.store.read<Observation>('Observation', ref.split('/')[1]!);
    expect(new Date(obs.effectiveDateTime!).toISOString()).toBe('2024-11-01T11:00:00.000Z');
  }, 30_000);
});
