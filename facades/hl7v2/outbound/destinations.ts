/**
 * Destinations: validation of what an operator (API, CLI, HL7_DESTINATIONS_FILE) asks for, and their rows.
 * Bad settings are refused with a message naming the setting, never half-applied.
 */
import { readFileSync } from 'node:fs';
import { parseSearchRequest, type SearchRequest } from '@medplum/core';
import type { Queryable } from '../../../src/index.js';
import { badRequest } from '../../../src/index.js';
import { DIALECT_KEYS, PROFILE_NAMES, type Dialect, type ProfileName } from './profiles.js';

export const MESSAGE_TYPES = ['ORU', 'ORM', 'OML', 'ADT'] as const;
export type MessageTypeName = (typeof MESSAGE_TYPES)[number];

/**
 * Result statuses (FHIR Observation / DiagnosticReport status) a destination can take. A lab interface to
 * Epic or Oracle Health carries preliminary results (OBX-11 / OBR-25 `P`) and then their finals and
 * corrections; `registered` is OBR-25 `I` (specimen in lab), `partial` OBR-25 `A`, `cancelled` OBX-11 /
 * OBR-25 `X` for a result that arrives cancelled, `unknown` a result that came with no OBX-11 / OBR-25.
 * `entered-in-error` is not among them: taking back a result a destination received always goes to it.
 */
export const RESULT_STATUSES = ['registered', 'preliminary', 'partial', 'final', 'amended', 'corrected', 'appended', 'cancelled', 'unknown'] as const;
export type ResultStatus = (typeof RESULT_STATUSES)[number];

/**
 * What a destination takes when it does not say: everything for a generic receiver; Epic and Oracle Health
 * result interfaces want an OBX-11 / OBR-25 on every result, so not `unknown` (a blank status).
 */
export function defaultStatuses(profile: ProfileName): ResultStatus[] {
  return profile === 'generic' ? [...RESULT_STATUSES] : RESULT_STATUSES.filter((s) => s !== 'unknown');
}

/** The statuses a destination takes: its own list, else its profile's default. */
export function statusesOf(d: Destination): Set<string> {
  return new Set(d.statuses ?? defaultStatuses(d.profile));
}

export interface TlsSettings {
  /** PEM file paths (read when connecting) or PEM text. */
  ca?: string;
  cert?: string;
  key?: string;
  servername?: string;
  /** false only for a test peer with a self-signed certificate. */
  rejectUnauthorized?: boolean;
}

export interface RetryPolicy {
  /** 0 = keep retrying (an interface engine queues until the receiver is back). */
  maxAttempts: number;
  initialDelayMs: number;
  maxDelayMs: number;
}

export interface Destination {
  name: string;
  host: string;
  port: number;
  profile: ProfileName;
  types: MessageTypeName[];
  tls?: TlsSettings;
  /** Search criteria on the triggering resource, e.g. "DiagnosticReport?category=LAB". */
  filter: string[];
  /** Result statuses it takes (results of other statuses are not sent to it); undefined = the profile's default. */
  statuses?: ResultStatus[];
  ackTimeoutMs: number;
  retry: RetryPolicy;
  /** Dialect overrides (MSH-3..6, version, timestamps, PID-3 choice, ...). */
  options: Partial<Dialect>;
  paused: boolean;
  source: 'api' | 'file';
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 0, initialDelayMs: 1000, maxDelayMs: 300_000 };
export const DEFAULT_ACK_TIMEOUT_MS = 30_000;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function num(v: unknown, what: string, min: number, max: number): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) throw badRequest(`${what} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return n;
}

function list(v: unknown): string[] {
  if (v === undefined || v === null || v === '') return [];
  const arr = Array.isArray(v) ? v : [v];
  return arr.flatMap((x) => String(x).split(',')).map((x) => x.trim()).filter(Boolean);
}

/**
 * Validates a destination from JSON (the config file's and the API's camelCase form). `base` is the
 * current destination when updating.
 */
export function parseDestination(input: unknown, base?: Destination): Destination {
  if (!input || typeof input !== 'object' || Array.isArray(input)) throw badRequest('a destination must be a JSON object');
  const o = input as Record<string, unknown>;
  const known = new Set(['name', 'host', 'port', 'profile', 'types', 'tls', 'filter', 'statuses', 'ackTimeoutMs', 'retry', 'options', 'paused']);
  const unknown = Object.keys(o).filter((k) => !known.has(k));
  if (unknown.length) throw badRequest(`unknown destination setting(s): ${unknown.join(', ')} (known: ${[...known].join(', ')})`);
  const name = String(o.name ?? base?.name ?? '');
  if (!NAME.test(name)) throw badRequest(`destination name ${JSON.stringify(name)} must be 1-64 letters, digits, '_', '.' or '-'`);
  const host = String(o.host ?? base?.host ?? '').trim();
  if (!host) throw badRequest(`destination ${name}: host is required`);
  const port = num(o.port ?? base?.port, `destination ${name}: port`, 1, 65535);
  const profile = String(o.profile ?? base?.profile ?? 'generic') as ProfileName;
  if (!PROFILE_NAMES.includes(profile)) throw badRequest(`destination ${name}: profile must be one of ${PROFILE_NAMES.join(', ')}, got "${profile}"`);
  const types = (o.types !== undefined ? list(o.types) : base?.types ?? []).map((t) => t.toUpperCase().split('^')[0]!);
  if (types.length === 0) throw badRequest(`destination ${name}: types is required (some of ${MESSAGE_TYPES.join(', ')})`);
  const badTypes = types.filter((t) => !(MESSAGE_TYPES as readonly string[]).includes(t));
  if (badTypes.length) throw badRequest(`destination ${name}: message type(s) ${badTypes.join(', ')} not supported (supported: ${MESSAGE_TYPES.join(', ')})`);
  const filter = o.filter !== undefined ? list(o.filter) : base?.filter ?? [];
  for (const f of filter) compileFilter(f, name);
  const statuses = parseStatuses(o.statuses, base?.statuses, name);
  const ackTimeoutMs = num(o.ackTimeoutMs ?? base?.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS, `destination ${name}: ackTimeoutMs`, 100, 3_600_000);
  const r = (o.retry ?? {}) as Record<string, unknown>;
  if (typeof r !== 'object') throw badRequest(`destination ${name}: retry must be an object`);
  const b = base?.retry ?? DEFAULT_RETRY;
  const retry: RetryPolicy = {
    maxAttempts: num(r.maxAttempts ?? b.maxAttempts, `destination ${name}: retry.maxAttempts`, 0, 1_000_000),
    initialDelayMs: num(r.initialDelayMs ?? b.initialDelayMs, `destination ${name}: retry.initialDelayMs`, 1, 3_600_000),
    maxDelayMs: num(r.maxDelayMs ?? b.maxDelayMs, `destination ${name}: retry.maxDelayMs`, 1, 86_400_000),
  };
  if (retry.maxDelayMs < retry.initialDelayMs) throw badRequest(`destination ${name}: retry.maxDelayMs must be at least retry.initialDelayMs`);
  let tls: TlsSettings | undefined = base?.tls;
  if (o.tls !== undefined) {
    if (o.tls === false || o.tls === null) tls = undefined;
    else if (o.tls === true) tls = {};
    else if (typeof o.tls === 'object') {
      const t = o.tls as Record<string, unknown>;
      const bad = Object.keys(t).filter((k) => !['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'].includes(k));
      if (bad.length) throw badRequest(`destination ${name}: unknown tls setting(s) ${bad.join(', ')}`);
      if ((t.cert === undefined) !== (t.key === undefined)) throw badRequest(`destination ${name}: tls.cert and tls.key go together`);
      tls = {
        ca: t.ca as string | undefined,
        cert: t.cert as string | undefined,
        key: t.key as string | undefined,
        servername: t.servername as string | undefined,
        rejectUnauthorized: t.rejectUnauthorized === undefined ? undefined : t.rejectUnauthorized !== false && t.rejectUnauthorized !== 'false',
      };
    } else throw badRequest(`destination ${name}: tls must be true, false or an object`);
  }
  const options = { ...base?.options, ...((o.options ?? {}) as Record<string, unknown>) } as Partial<Dialect>;
  const badOpts = Object.keys(options).filter((k) => !DIALECT_KEYS.has(k));
  if (badOpts.length) throw badRequest(`destination ${name}: unknown option(s) ${badOpts.join(', ')} (known: ${[...DIALECT_KEYS].join(', ')})`);
  if (options.forwardNonProduction !== undefined) {
    // From the CLI (--option forwardNonProduction=true) it arrives as text.
    const v = options.forwardNonProduction as unknown;
    if (v !== true && v !== false && v !== 'true' && v !== 'false') throw badRequest(`destination ${name}: options.forwardNonProduction must be true or false, got ${JSON.stringify(v)}`);
    options.forwardNonProduction = v === true || v === 'true';
  }
  if (options.timeZone) {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: options.timeZone });
    } catch {
      throw badRequest(`destination ${name}: options.timeZone "${options.timeZone}" is not an IANA time zone`);
    }
  }
  const paused = o.paused === undefined ? base?.paused ?? false : o.paused === true || o.paused === 'true';
  return { name, host, port, profile, types: [...new Set(types)] as MessageTypeName[], tls, filter, statuses, ackTimeoutMs, retry, options, paused, source: base?.source ?? 'api' };
}

/** `statuses`: a list or comma-separated text of RESULT_STATUSES; absent keeps `base`; [] or null = the profile default. */
function parseStatuses(v: unknown, base: ResultStatus[] | undefined, name: string): ResultStatus[] | undefined {
  if (v === undefined) return base;
  if (v === null) return undefined;
  const given = list(v).map((x) => x.toLowerCase());
  if (given.length === 0) return undefined;
  const bad = given.filter((x) => !(RESULT_STATUSES as readonly string[]).includes(x));
  if (bad.length) {
    const hint = bad.includes('entered-in-error') ? ' (a withdrawal always goes to a destination that received the result; it needs no status)' : '';
    throw badRequest(`destination ${name}: unknown result status(es) ${bad.join(', ')}${hint} (known: ${RESULT_STATUSES.join(', ')})`);
  }
  return RESULT_STATUSES.filter((x) => given.includes(x));
}

/** "Observation?code=http://loinc.org|2345-7" → a SearchRequest, or a 400 naming the destination. */
export function compileFilter(criterion: string, destination: string): SearchRequest {
  if (!/^[A-Z][A-Za-z]+(\?.*)?$/.test(criterion)) {
    throw badRequest(`destination ${destination}: filter "${criterion}" must look like ResourceType?param=value`);
  }
  try {
    return parseSearchRequest(criterion);
  } catch (err) {
    throw badRequest(`destination ${destination}: filter "${criterion}": ${(err as Error).message}`);
  }
}

interface Row {
  name: string;
  host: string;
  port: number;
  profile: ProfileName;
  message_types: string[];
  config: Record<string, unknown> | string;
  paused: boolean;
  source: 'api' | 'file';
}

function fromRow(r: Row): Destination {
  const cfg = (typeof r.config === 'string' ? JSON.parse(r.config) : r.config) as Partial<Destination>;
  return {
    name: r.name,
    host: r.host,
    port: r.port,
    profile: r.profile,
    types: r.message_types as MessageTypeName[],
    tls: cfg.tls,
    filter: cfg.filter ?? [],
    statuses: cfg.statuses,
    ackTimeoutMs: cfg.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS,
    retry: { ...DEFAULT_RETRY, ...cfg.retry },
    options: cfg.options ?? {},
    paused: r.paused,
    source: r.source,
  };
}

export async function listDestinations(q: Queryable): Promise<Destination[]> {
  const r = await q.query<Row>('SELECT name, host, port, profile, message_types, config, paused, source FROM hl7_destination ORDER BY name');
  return r.rows.map(fromRow);
}

export async function getDestination(q: Queryable, name: string): Promise<Destination | undefined> {
  const r = await q.query<Row>('SELECT name, host, port, profile, message_types, config, paused, source FROM hl7_destination WHERE name = $1', [name]);
  return r.rows[0] ? fromRow(r.rows[0]) : undefined;
}

/** Inserts or replaces; `keepPaused` leaves an operator's pause alone when a config file is re-applied. */
export async function saveDestination(q: Queryable, d: Destination, opts: { keepPaused?: boolean } = {}): Promise<void> {
  // Statuses live in config like the other settings only the outbound code reads: no column, no migration.
  const config = JSON.stringify({ tls: d.tls, filter: d.filter, statuses: d.statuses, ackTimeoutMs: d.ackTimeoutMs, retry: d.retry, options: d.options });
  await q.query(
    `INSERT INTO hl7_destination (name, host, port, profile, message_types, config, paused, source)
     VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)
     ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port, profile = EXCLUDED.profile,
       message_types = EXCLUDED.message_types, config = EXCLUDED.config, source = EXCLUDED.source,
       paused = ${opts.keepPaused ? 'hl7_destination.paused' : 'EXCLUDED.paused'}, updated_at = now()`,
    [d.name, d.host, d.port, d.profile, d.types, config, d.paused, d.source],
  );
}

export async function setPaused(q: Queryable, name: string, paused: boolean): Promise<boolean> {
  const r = await q.query('UPDATE hl7_destination SET paused = $2, updated_at = now() WHERE name = $1', [name, paused]);
  return r.rowCount > 0;
}

/** HL7_DESTINATIONS_FILE: a JSON array of destinations, or {"destinations": [...]}. */
export function readDestinationsFile(file: string): Destination[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`HL7_DESTINATIONS_FILE ${file}: ${(err as Error).message}`);
  }
  const arr = Array.isArray(parsed) ? parsed : (parsed as { destinations?: unknown })?.destinations;
  if (!Array.isArray(arr)) throw new Error(`HL7_DESTINATIONS_FILE ${file}: expected an array of destinations or {"destinations": [...]}`);
  return arr.map((d, i) => {
    try {
      return { ...parseDestination(d), source: 'file' as const };
    } catch (err) {
      throw new Error(`HL7_DESTINATIONS_FILE ${file}: entry ${i + 1}: ${(err as Error).message}`);
    }
  });
}

/** A fingerprint of the destination table (names and when each last changed): equal fingerprints, same destinations. */
export async function destinationsVersion(q: Queryable): Promise<string> {
  const r = await q.query<{ v: string | null }>("SELECT string_agg(name || '@' || updated_at::text, ',' ORDER BY name) AS v FROM hl7_destination");
  return r.rows[0]?.v ?? '';
}

/** This process files with destination list `version` (refreshed at every reload, so the entry also says it lives). */
export async function reportLoaded(q: Queryable, processId: string, version: string): Promise<void> {
  await q.query(
    `INSERT INTO hl7_outbound_process (process, version, seen_at) VALUES ($1, $2, now())
     ON CONFLICT (process) DO UPDATE SET version = EXCLUDED.version, seen_at = now()`,
    [processId, version],
  );
}

export async function forgetProcess(q: Queryable, processId: string): Promise<void> {
  await q.query('DELETE FROM hl7_outbound_process WHERE process = $1', [processId]);
}

/**
 * Waits until every live process (one that reported within three refresh intervals) has loaded `version`; a process
 * that stopped reporting is dead and does not hold the change back (its entry is removed). Gives up after ten refresh
 * intervals, saying which processes lag: the change is made, but they may miss results until they reload.
 */
export async function untilAllLoaded(q: Queryable, version: string, refreshMs: number, log: { warn(msg: string): void }): Promise<void> {
  const alive = `seen_at > now() - make_interval(secs => $1::float8 / 1000)`;
  await q.query(`DELETE FROM hl7_outbound_process WHERE NOT (${alive})`, [3 * refreshMs]);
  const end = Date.now() + 10 * refreshMs;
  for (;;) {
    const lagging = await q.query<{ process: string }>(`SELECT process FROM hl7_outbound_process WHERE ${alive} AND version <> $2`, [3 * refreshMs, version]);
    if (lagging.rows.length === 0) return;
    if (Date.now() > end) {
      log.warn(`outbound: ${lagging.rows.length} process(es) have not loaded the changed destinations yet (${lagging.rows.map((r) => r.process).join(', ')})`);
      return;
    }
    await new Promise((r) => setTimeout(r, Math.min(50, refreshMs)));
  }
}
