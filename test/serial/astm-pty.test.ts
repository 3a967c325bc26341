import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { Observation } from '@medplum/fhirtypes';
import { assignHeld, listHeld, SERIAL_PORT_SYSTEM } from '../../src/devices/index.js';
import { listMessages } from '../../src/messages/message-log.js';
import { decodeCapture, encodeMessage, framesToText } from '../../facades/serial/astm/frame.js';
import { parseRecords } from '../../facades/serial/astm/records.js';
import { sendSession } from '../../facades/serial/astm/sender.js';
import { ptyPair, until } from './pty.js';
import { expectFiledToPatient, openAnalyzer, suiteAstmRig, who } from './rig.js';
import { fixturePath, noteCorpusAbsent, SHARED_DATA } from '../../tools/shared-data.js';

// The analyzer captures are GPLv2 (senaite.astm), so they are not in test/fixtures: they run over the shared corpus
// when it is present. The link behaviour (checksums, timeouts, reconnects, holds) runs always, over messages written
// for these tests (test/fixtures/astm).
noteCorpusAbsent();
const CORPUS = `${SHARED_DATA}/hl7v2/corpus/astm/`;
const FIXTURES = fixturePath('astm');

/** A fixture message (one record per line) framed as a conforming analyzer sends it. */
function fixtureFrames(file: string): Buffer[] {
  return encodeMessage(fixtureRecords(file));
}
function fixtureRecords(file: string): string[] {
  return readFileSync(`${FIXTURES}/${file}`, 'utf8').split('\n').filter((l) => l.trim() !== '');
}
/** The fixture with fresh result values (a resend of identical results is a duplicate and files nothing). */
function freshFrames(file: string, run: number): Buffer[] {
  return encodeMessage(fixtureRecords(file).map((r) => (r.startsWith('R|') ? r.replace(/^(R\|\d+\|[^|]*\|)([\d.]+)/, (_m, pre: string, v: string) => `${pre}${(Number(v) + run / 10).toFixed(1)}`) : r)));
}

/** The capture's records re-framed as a conforming analyzer sends them (frames numbered 1,2,…,7,0; ≤240 chars). */
function framesOf(file: string): Buffer[] {
  const text = framesToText(decodeCapture(readFileSync(CORPUS + file)));
  return encodeMessage(parseRecords(text).records.map((r) => r.raw));
}


describe('ASTM over a real pty (socat)', () => {
  const { rig, nextEvent } = suiteAstmRig({ dirPrefix: 'conflux-serial-', patientName: 'Analyzer Patient', deviceName: 'lab analyzer on pty' });

  it('files a chemistry message to the associated patient, with the analyzer as Observation.device', async () => {
    const done = nextEvent();
    expect(await sendSession(rig.line, fixtureFrames('chemistry.txt'))).toEqual({ ok: true, naks: 0 });
    const e = await done;
    const obs = await expectFiledToPatient(rig, e);
    // One report (the O record) with its four results.
    expect(e.result?.filed).toBe(1);
    expect(e.result!.resourceRefs.filter((r) => r.startsWith('Observation/'))).toHaveLength(4);
    expect(obs.device?.reference).toMatch(/^Device\//);
  }, 60_000);

  it('holds a quality-control run (H-12 = Q): QC is never filed to a patient', async () => {
    const done = nextEvent();
    expect(await sendSession(rig.line, fixtureFrames('qc-run.txt'))).toEqual({ ok: true, naks: 0 });
    const e = await done;
    expect(e.result?.filed).toBe(0);
    expect(e.result?.reasons[0]).toMatch(/processing id "Q"/);
  }, 60_000);

  it('multi-frame records: a long record is split in 240-char ETB frames and rejoined', async () => {
    const frames = fixtureFrames('hematology-histogram.txt');
    expect(frames.length).toBeGreaterThan(fixtureRecords('hematology-histogram.txt').length);
    expect(frames.every((f) => f.length <= 240 + 7)).toBe(true);
    const done = nextEvent();
    expect(await sendSession(rig.line, frames)).toEqual({ ok: true, naks: 0 });
    const e = await done;
    expect(e.error).toBeUndefined();
    expect(e.result?.filed).toBe(1);
    expect(e.result!.resourceRefs.filter((r) => r.startsWith('Observation/'))).toHaveLength(3);
  }, 60_000);

  it('a corrupted checksum gets a NAK and the good retransmission is accepted', async () => {
    const frames = freshFrames('chemistry.txt', 1);
    const done = nextEvent();
    const sent = await sendSession(rig.line, frames, {
      mangle: (i, attempt, f) => {
        if (i !== 2 || attempt > 0) return f;
        const bad = Buffer.from(f);
        bad[bad.length - 4] = bad[bad.length - 4] === 0x30 ? 0x31 : 0x30; // a checksum digit
        return bad;
      },
    });
    expect(sent).toEqual({ ok: true, naks: 1 });
    const e = await done;
    expect(e.result?.filed).toBe(1);
    expect(e.result?.duplicates).toBe(0);
    expect(e.result!.resourceRefs.filter((r) => r.startsWith('Observation/'))).toHaveLength(4);
  }, 30_000);

  it('an analyzer that stops mid-session: the partial message is logged as an error and nothing is filed', async () => {
    const before = (await rig.env.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM resource WHERE resource_type = 'Observation'`)).rows[0].n;
    const done = nextEvent();
    const sent = await sendSession(rig.line, freshFrames('hematology-histogram.txt', 2), { stopAfterFrames: 5 });
    expect(sent.ok).toBe(false);
    const e = await done;
    expect(e.error).toMatch(/receiver timeout/);
    const logged = await listMessages(rig.env.db, { channel: 'serial', status: 'error' });
    expect(logged.some((m) => m.id === e.messageId && /incomplete, not filed/.test(m.error ?? ''))).toBe(true);
    const after = (await rig.env.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM resource WHERE resource_type = 'Observation'`)).rows[0].n;
    expect(after).toBe(before);
  }, 30_000);

  it('non-ASTM output (a printer log on the analyzer port) is kept in the message log as an error', async () => {
    const done = nextEvent();
    rig.analyzer.write(readFileSync(`${FIXTURES}/not-astm-printout.txt`));
    const e = await done;
    expect(e.error).toBe('not ASTM');
    const logged = await listMessages(rig.env.db, { channel: 'serial', status: 'error' });
    expect(logged.find((m) => m.id === e.messageId)?.error).toMatch(/not ASTM E1381/);
  }, 30_000);

  it('reconnects when the port disappears and comes back', async () => {
    const opens = rig.running.port.opens;
    await new Promise((r) => rig.analyzer.close(r));
    await rig.pty.kill();
    rig.pty = await ptyPair(rig.pty.host, rig.pty.device);
    await until(() => rig.running.port.opens > opens && rig.running.port.isOpen, 'the facade to reopen the port');
    Object.assign(rig, await openAnalyzer(rig.pty.device));
    const done = nextEvent();
    expect((await sendSession(rig.line, freshFrames('chemistry.txt', 3))).ok).toBe(true);
    expect((await done).result?.patientRefs).toEqual([rig.patient]);
  }, 30_000);

  it('without an association covering the reading time the results are held, then filed when an operator assigns them', async () => {
    await rig.env.db.query('DELETE FROM device_association');
    const done = nextEvent();
    // Results never filed before (a replay of a filed capture would be an exact duplicate).
    const records = ['H|\\^&|||SE-1520^Spotchem^1.0.0|||||||P||20241101090000', 'O|1|1DC099XY||B. Plasma', 'R|1|Na|139.0|mmol/L||||F||||20241101090000', 'R|2|K|4.1|mmol/L||||F||||20241101090000', 'L|1|N'];
    expect((await sendSession(rig.line, encodeMessage(records))).ok).toBe(true);
    const e = await done;
    expect(e.result?.filed).toBe(0);
    expect(e.result?.held).toHaveLength(1);
    expect(e.result?.reasons[0]).toMatch(/has no patient association at 2024-11-01T08:00:00.000Z/);
    const queue = await listHeld(rig.env.db);
    const held = queue.find((h) => h.id === e.result!.held[0])!;
    expect(held.summary).toEqual(['Observation 2951-2 139 mmol/L', 'Observation 2823-3 4.1 mmol/L']);
    const other = await rig.env.patient('Assigned Patient');
    const out = await assignHeld(rig.env.store, held.id, { patient: other, note: 'sample labelled for bed 4' }, who);
    expect(out.filed.some((w) => w.action === 'created' && w.resourceType === 'AuditEvent')).toBe(true);
    expect(out.response.entry!.some((x) => x.response?.status === '201 Created' && x.response.location?.startsWith('AuditEvent/'))).toBe(true);
    const obs = await rig.env.db.query<{ content: string }>(`SELECT content FROM resource WHERE resource_type = 'Observation' AND content LIKE '%1DC099XY%' OR (resource_type = 'Observation' AND content LIKE '%"value":139%')`);
    expect(obs.rows.map((r) => JSON.parse(r.content).subject?.reference)).toContain(other);
    await expect(assignHeld(rig.env.store, held.id, { patient: other }, who)).rejects.toMatchObject({ status: 409 });
  }, 30_000);

  it('the port identifier is what the association matched', () => {
    expect(SERIAL_PORT_SYSTEM).toBe('urn:conflux:device:serial-port');
  });
});

describe.skipIf(!SHARED_DATA)('ASTM over a real pty (socat): analyzer captures of the shared corpus', () => {
  const { rig, nextEvent } = suiteAstmRig({ dirPrefix: 'conflux-serial-', patientName: 'Analyzer Patient', deviceName: 'lab analyzer on pty' });

  it('plays the Yumizen H500 quality-control run (H-12 = Q) and holds it: QC is never filed to a patient', async () => {
    const done = nextEvent();
    expect(await sendSession(rig.line, framesOf('senaite_yumizen_h500.txt'))).toEqual({ ok: true, naks: 0 });
    const e = await done;
    expect(e.result?.filed).toBe(0);
    expect(e.result?.reasons[0]).toMatch(/processing id "Q"/);
  }, 60_000);

  const files = ['senaite_abbott_afinion2.txt', 'senaite_cobas_c111.txt', 'senaite_cobas_c311.txt', 'senaite_dca_vantage.txt', 'senaite_genexpert.txt',
    'senaite_mini_vidas_mock.txt', 'senaite_pentra_xlr.txt', 'senaite_spotchem_el_mock.txt', 'senaite_sysmex_xn550.txt', 'senaite_sysmex_xp100.txt'];

  it.each(files)('plays %s and files its results to the associated patient', async (file) => {
    const frames = framesOf(file);
    const done = nextEvent();
    const sent = await sendSession(rig.line, frames, { replyTimeoutMs: 10_000 });
    expect(sent).toEqual({ ok: true, naks: 0 });
    const obs = await expectFiledToPatient(rig, await done);
    expect(obs.device?.reference).toMatch(/^Device\//);
  }, 60_000);

  it('multi-frame records: a long record is split in 240-char ETB frames and rejoined', () => {
    // Yumizen's M (histogram) records run to 26,000 characters.
    const frames = framesOf('senaite_yumizen_h500.txt');
    expect(frames.length).toBeGreaterThan(parseRecords(framesToText(decodeCapture(readFileSync(CORPUS + 'senaite_yumizen_h500.txt')))).records.length + 100);
    expect(frames.every((f) => f.length <= 240 + 7)).toBe(true);
  });

  it.each(['senaite_mini_vidas.txt', 'senaite_spotchem_el.txt'])('non-ASTM output (%s) is kept in the message log as an error', async (file) => {
    const done = nextEvent();
    rig.analyzer.write(readFileSync(CORPUS + file));
    const e = await done;
    expect(e.error).toBe('not ASTM');
    const logged = await listMessages(rig.env.db, { channel: 'serial', status: 'error' });
    expect(logged.find((m) => m.id === e.messageId)?.error).toMatch(/not ASTM E1381/);
  }, 30_000);

});
