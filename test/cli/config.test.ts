/**
 * Configuration is read once, at start, and every setting is checked then: a wrong value, the core's or a plug-in's,
 * stops `serve` before anything listens, with a message that names the variable.
 */
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { conflux } from '../helpers/cli.js';

async function serve(env: Record<string, string>) {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conflux-config-'));
  const r = await conflux(['serve'], { DATA_DIR: dataDir, PORT: '0', MLLP_PORT: '0', DICOM_PORT: '0', ...env });
  return { ...r, started: existsSync(path.join(dataDir, 'server.json')) };
}

describe('configuration at start', () => {
  const brokenJson = path.join(mkdtempSync(path.join(os.tmpdir(), 'conflux-config-')), 'broken.json');
  writeFileSync(brokenJson, '{ not json');
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['the core', { DATABASE_POOL_SIZE: 'many' }, /DATABASE_POOL_SIZE must be an integer >= 1, got "many"/],
    ['the HL7 v2 plug-in (its port moved out of the core)', { MLLP_PORT: '70000' }, /MLLP_PORT must be a port number from 0 to 65535, got "70000"/],
    ['the HL7 v2 outbound', { HL7_OUTBOUND_POLL_MS: '0' }, /HL7_OUTBOUND_POLL_MS must be an integer >= 1, got "0"/],
    ['the DICOM plug-in', { DICOM_ACCEPT_ANY_AE: 'maybe' }, /DICOM_ACCEPT_ANY_AE must be true or false/],
    ['SMART', { SMART_SIGNING_ALG: 'HS256' }, /SMART_SIGNING_ALG must be RS384 or ES384, got "HS256"/],
    ['the serial plug-in', { SERIAL_CONFIG_FILE: brokenJson }, /SERIAL_CONFIG_FILE .*broken\.json is not JSON/],
  ];
  it.each(cases)('a wrong value of %s stops serve, naming the variable', async (_what, env, message) => {
    const r = await serve(env);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^conflux: ${message.source}`, 'm'));
    expect(r.started).toBe(false);
  });

  it('loadConfig rejects with a ConfigError that carries the variable', async () => {
    const err = await loadConfig({ HL7_OUTBOUND_BATCH: '-1' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).variable).toBe('HL7_OUTBOUND_BATCH');
  });

  it('the plug-ins get their own typed settings, with the documented defaults', async () => {
    const config = await loadConfig({});
    expect(config.plugins.hl7v2?.ports).toEqual([{ variable: 'MLLP_PORT', label: 'MLLP', port: 2575 }]);
    expect(config.plugins.dicom?.ports).toEqual([{ variable: 'DICOM_PORT', label: 'DIMSE', port: 11112 }]);
    expect(config).not.toHaveProperty('env');
    expect(config).not.toHaveProperty('mllpPort');
  });
});
