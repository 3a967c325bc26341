/**
 * Serial port configuration, a JSON file named by SERIAL_CONFIG_FILE:
 * { "ports": [ { "name": "cobas", "path": "/dev/ttyUSB0", "baudRate": 9600, "protocol": "astm", ... } ] }
 * Every mistake is reported with the port and the field it is in.
 */
import { readFileSync } from 'node:fs';
import { ConfigError, type Environment, type PluginConfig } from '../../src/index.js';
import type { Identifier } from '@medplum/fhirtypes';
import type { CodeMap, PlausibleRange } from './mapping/codemap.js';
import type { LineFormat } from './line/parse.js';
import { assertTimeZone, defaultTimeZone } from './mapping/time.js';

export interface PortConfig {
  name: string;
  path: string;
  baudRate: number;
  dataBits: 5 | 6 | 7 | 8;
  parity: 'none' | 'even' | 'odd' | 'mark' | 'space';
  stopBits: 1 | 1.5 | 2;
  protocol: 'astm' | 'line';
  /** IANA zone of the instrument's clock (ASTM and line times carry no offset). */
  timeZone: string;
  /** Identifiers of the device on this port, in addition to what the instrument says about itself. */
  deviceIdentifiers: Identifier[];
  /** System of the patient ids in ASTM P records; without it P ids are ignored and association decides. */
  patientIdentifierSystem?: string;
  codeMap: CodeMap;
  plausibility: Record<string, PlausibleRange>;
  line?: LineFormat;
  reconnectMs: number;
  receiveTimeoutMs: number;
  futureSkewMs: number;
}

const PARITIES = ['none', 'even', 'odd', 'mark', 'space'];

export function parseSerialConfig(json: unknown, source = 'serial config'): PortConfig[] {
  const root = json as { ports?: unknown };
  if (!root || typeof root !== 'object' || !Array.isArray(root.ports)) throw new Error(`${source}: expected {"ports": [...]}`);
  const names = new Set<string>();
  return root.ports.map((p: Record<string, unknown>, i: number) => {
    const where = `${source}: ports[${i}]${typeof p?.name === 'string' ? ` (${p.name})` : ''}`;
    const fail = (msg: string): never => {
      throw new Error(`${where}: ${msg}`);
    };
    if (!p || typeof p !== 'object') fail('must be an object');
    const name = typeof p.name === 'string' && p.name.trim() ? p.name.trim() : fail('"name" is required');
    if (names.has(name)) fail(`duplicate port name "${name}"`);
    names.add(name);
    const path = typeof p.path === 'string' && p.path.trim() ? p.path.trim() : fail('"path" is required (e.g. /dev/ttyUSB0)');
    const baudRate = p.baudRate === undefined ? 9600 : Number(p.baudRate);
    if (!Number.isInteger(baudRate) || baudRate < 50 || baudRate > 4_000_000) fail(`"baudRate" ${String(p.baudRate)} is not a baud rate`);
    const dataBits = p.dataBits === undefined ? 8 : Number(p.dataBits);
    if (![5, 6, 7, 8].includes(dataBits)) fail(`"dataBits" must be 5, 6, 7 or 8, not ${String(p.dataBits)}`);
    const parity = (p.parity ?? 'none') as string;
    if (!PARITIES.includes(parity)) fail(`"parity" must be one of ${PARITIES.join(', ')}, not "${parity}"`);
    const stopBits = p.stopBits === undefined ? 1 : Number(p.stopBits);
    if (![1, 1.5, 2].includes(stopBits)) fail(`"stopBits" must be 1, 1.5 or 2, not ${String(p.stopBits)}`);
    const protocol = (p.protocol ?? 'astm') as string;
    if (protocol !== 'astm' && protocol !== 'line') fail(`"protocol" must be "astm" or "line", not "${protocol}"`);
    const timeZone = typeof p.timeZone === 'string' ? p.timeZone : defaultTimeZone();
    try {
      assertTimeZone(timeZone);
    } catch (err) {
      fail((err as Error).message);
    }
    const ids = (p.deviceIdentifiers ?? []) as Identifier[];
    if (!Array.isArray(ids) || ids.some((x) => !x || typeof x.value !== 'string')) fail('"deviceIdentifiers" must be [{ "system"?, "value" }]');
    const codeMap = (p.codeMap ?? {}) as CodeMap;
    for (const [k, v] of Object.entries(codeMap)) {
      if (!v || typeof v.loinc !== 'string' || !/^\d{1,7}-\d$/.test(v.loinc)) fail(`codeMap["${k}"].loinc must be a LOINC code like "718-7"`);
    }
    const plausibility = (p.plausibility ?? {}) as Record<string, PlausibleRange>;
    for (const [k, v] of Object.entries(plausibility)) {
      if (!v || typeof v.low !== 'number' || typeof v.high !== 'number' || v.low > v.high) fail(`plausibility["${k}"] needs numbers low <= high`);
    }
    const ms = (key: string, dflt: number) => {
      const v = p[key] === undefined ? dflt : Number(p[key]);
      if (!Number.isFinite(v) || v < 0) fail(`"${key}" must be a non-negative number of milliseconds`);
      return v;
    };
    let line: LineFormat | undefined;
    if (protocol === 'line') {
      const l = (p.line ?? {}) as Partial<LineFormat>;
      const format = l.format ?? 'csv';
      if (format !== 'csv' && format !== 'kv') fail('"line.format" must be "csv" or "kv"');
      line = {
        format,
        columns: l.columns ?? ['timestamp', 'code', 'value', 'unit'],
        separator: l.separator ?? (format === 'csv' ? ',' : ' '),
        timeKey: l.timeKey ?? 'time',
        deviceKey: l.deviceKey,
      };
      if (format === 'csv' && (!line.columns.includes('code') || !line.columns.includes('value'))) fail('"line.columns" needs at least "code" and "value"');
    }
    return {
      name,
      path,
      baudRate,
      dataBits: dataBits as PortConfig['dataBits'],
      parity: parity as PortConfig['parity'],
      stopBits: stopBits as PortConfig['stopBits'],
      protocol: protocol as PortConfig['protocol'],
      timeZone,
      deviceIdentifiers: ids,
      ...(typeof p.patientIdentifierSystem === 'string' ? { patientIdentifierSystem: p.patientIdentifierSystem } : {}),
      codeMap,
      plausibility,
      ...(line ? { line } : {}),
      reconnectMs: ms('reconnectMs', 2000),
      receiveTimeoutMs: ms('receiveTimeoutMs', 30_000),
      futureSkewMs: ms('futureSkewMs', 5 * 60_000),
    };
  });
}

export function loadSerialConfig(file: string): PortConfig[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`SERIAL_CONFIG_FILE ${file} cannot be read: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`SERIAL_CONFIG_FILE ${file} is not JSON: ${(err as Error).message}`);
  }
  return parseSerialConfig(json, `SERIAL_CONFIG_FILE ${file}`);
}

export interface SerialSettings {
  /** SERIAL_CONFIG_FILE; without it no port is read. */
  file?: string;
  ports: PortConfig[];
}

/** What src/plugins.ts calls at start: the ports file is read and checked then, listeners or not. */
export function config(env: Environment): PluginConfig<SerialSettings> {
  const file = env.SERIAL_CONFIG_FILE || undefined;
  try {
    return { settings: { file, ports: file ? loadSerialConfig(file) : [] } };
  } catch (err) {
    throw new ConfigError('SERIAL_CONFIG_FILE', (err as Error).message);
  }
}
