import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addDevice, associate, listHeld } from '../../src/devices/index.js';
import { parseSerialConfig } from '../../facades/serial/config.js';
import { fileReadings } from '../../facades/serial/filing.js';
import { parseLine } from '../../facades/serial/line/parse.js';
import type { ReadingSet } from '../../facades/serial/mapping/draft.js';
import { openTestEnv, type TestEnv } from '../devices/helpers.js';

const who = { who: 'Practitioner/op1' };
const fmtCsv = parseSerialConfig({ ports: [{ name: 'm', path: '/dev/x', protocol: 'line' }] })[0].line!;
const fmtKv = parseSerialConfig({ ports: [{ name: 'm', path: '/dev/x', protocol: 'line', line: { format: 'kv' } }] })[0].line!;

function setOf(line: string, fmt = fmtKv): ReadingSet {
  const p = parseLine(line, fmt, 'UTC')!;
  return { deviceIdentifiers: [{ value: 'MON-7' }], deviceName: 'monitor', reports: [{ status: 'final', observations: p.observations, patientIdentifiers: [], notes: [], at: p.at, effective: p.effective }], warnings: [] };
}

describe('line format and plausibility', () => {
  let env: TestEnv;
  let patient: string;
  beforeAll(async () => {
    env = await openTestEnv('pglite');
    patient = await env.patient('Bed 7');
    const d = await addDevice(env.store, { name: 'monitor', identifiers: [{ value: 'MON-7' }] }, who);
    await associate(env.store, { device: d.reference, patient, start: '2024-05-01T00:00:00Z' }, who);
  }, 60_000);
  afterAll(async () => env?.close());

  it('parses csv and key=value lines, mapping codes to LOINC', () => {
    const c = parseLine('2024-05-01T10:00:00Z,HR,72,/min', fmtCsv, 'UTC')!;
    expect(c.observations[0]).toMatchObject({ loinc: '8867-4', value: { kind: 'quantity', value: 72, ucum: '/min' }, effective: '2024-05-01T10:00:00Z' });
    const k = parseLine('time=20240501120000 SPO2=97 HR=71', fmtKv, 'Europe/Berlin')!;
    expect(k.effective).toBe('2024-05-01T12:00:00+02:00');
    expect(k.observations.map((o) => o.loinc)).toEqual(['59408-5', '8867-4']);
    expect(() => parseLine('HR=72', fmtKv, 'UTC')).toThrow('line has no time=');
    expect(() => parseLine('yesterday,HR,72', fmtCsv, 'UTC')).toThrow('is not a time');
  });

  it('files a plausible reading, holds an implausible one with the reason, drops exact duplicates', async () => {
    const ok = await fileReadings(env.store, setOf('time=2024-05-01T10:00:00Z SPO2=97'));
    expect(ok.filed).toBe(1);
    expect(ok.patientRefs).toEqual([patient]);
    const again = await fileReadings(env.store, setOf('time=2024-05-01T10:00:00Z SPO2=97'));
    expect(again.duplicates).toBe(1);
    const bad = await fileReadings(env.store, setOf('time=2024-05-01T10:01:00Z SPO2=140'));
    expect(bad.filed).toBe(0);
    expect(bad.reasons[0]).toMatch(/implausible value: .*140 % is outside the plausible range 0–100 %/);
    const hot = await fileReadings(env.store, setOf('time=2024-05-01T10:01:00Z TEMP=52'));
    expect(hot.reasons[0]).toMatch(/outside the plausible range 25–45 Cel/);
    expect((await listHeld(env.db)).map((h) => h.reason)).toEqual(expect.arrayContaining([bad.reasons[0], hot.reasons[0]]));
  });

  it('holds readings from the future beyond the skew', async () => {
    const r = await fileReadings(env.store, setOf('time=2099-01-01T00:00:00Z HR=70'));
    expect(r.reasons[0]).toMatch(/is in the future/);
  });

  it('reports configuration mistakes naming the port and field', () => {
    expect(() => parseSerialConfig({ ports: [{ name: 'a', path: '/dev/x', parity: 'maybe' }] })).toThrow('ports[0] (a): "parity" must be one of');
    expect(() => parseSerialConfig({ ports: [{ name: 'a', path: '/dev/x', timeZone: 'Mars/Base' }] })).toThrow('not an IANA time zone');
    expect(() => parseSerialConfig({ ports: [{ name: 'a' }] })).toThrow('"path" is required');
  });
});
