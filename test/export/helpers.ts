import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { fixturePath } from '../../tools/shared-data.js';
import { until } from '../helpers/until.js';

export const SYNTHEA_DIR = fixturePath('fhir/synthea');

export function syntheaFiles(n: number): string[] {
  return readdirSync(SYNTHEA_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .slice(0, n)
    .map((f) => path.join(SYNTHEA_DIR, f));
}

/** POSTs Synthea transaction bundles to the FHIR base, as any client would load them. */
export async function loadSynthea(fhir: string, n: number, headers: Record<string, string> = {}): Promise<void> {
  for (const file of syntheaFiles(n)) {
    const res = await fetch(fhir, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json', ...headers },
      body: readFileSync(file),
    });
    if (res.status !== 200) throw new Error(`loading ${path.basename(file)}: HTTP ${res.status} ${await res.text()}`);
  }
}

export const KICKOFF_HEADERS = { accept: 'application/fhir+json', prefer: 'respond-async' };

export async function kickoff(url: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<string> {
  const res = await fetch(url, {
    method: init.method ?? 'GET',
    headers: { ...KICKOFF_HEADERS, ...(init.body ? { 'content-type': 'application/fhir+json' } : {}), ...init.headers },
    body: init.body ? JSON.stringify(init.body) : undefined,
  });
  if (res.status !== 202) throw new Error(`kick-off ${url}: HTTP ${res.status} ${await res.text()}`);
  const loc = res.headers.get('content-location');
  expect(loc).toBeTruthy();
  expect((await res.json()).resourceType).toBe('OperationOutcome');
  return loc!;
}

export interface Manifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: boolean;
  output: Array<{ type: string; url: string; count: number }>;
  error: Array<{ type: string; url: string; count?: number }>;
  deleted?: Array<{ type: string; url: string; count: number }>;
}

/**
 * Asks a status URL until it answers 200 with the manifest; every 202 meanwhile must carry X-Progress and a
 * Retry-After (checked, not slept: the test waits for the job, not for the hint).
 */
export function waitForManifest(statusUrl: string, headers: Record<string, string> = {}): Promise<Manifest> {
  return until(
    async () => {
      const res = await fetch(statusUrl, { headers });
      if (res.status === 200) return (await res.json()) as Manifest;
      if (res.status !== 202) throw new Error(`status ${statusUrl}: HTTP ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
      expect(res.headers.get('x-progress')).toBeTruthy();
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      return undefined;
    },
    `export ${statusUrl} to finish`,
    { timeoutMs: 60_000, everyMs: 100 },
  );
}

/** Downloads every output file; returns resources per type, checking each line parses and matches its file's type. */
export async function downloadAll(m: Manifest, headers: Record<string, string> = {}): Promise<Map<string, Array<Record<string, any>>>> {
  const byType = new Map<string, Array<Record<string, any>>>();
  for (const o of m.output) {
    const res = await fetch(o.url, { headers });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/application\/fhir\+ndjson/);
    const text = await res.text();
    expect(Buffer.byteLength(text)).toBe(Number(res.headers.get('content-length')));
    const lines = text.split('\n');
    expect(lines.pop()).toBe('');
    expect(lines.length).toBe(o.count);
    for (const line of lines) {
      const r = JSON.parse(line) as Record<string, any>;
      expect(r.resourceType).toBe(o.type);
      byType.set(o.type, [...(byType.get(o.type) ?? []), r]);
    }
  }
  return byType;
}

/** Downloads the `deleted` files: the `Type/id` of every DELETE entry, checking each line is a transaction Bundle. */
export async function downloadDeleted(m: Manifest, headers: Record<string, string> = {}): Promise<string[]> {
  const out: string[] = [];
  for (const d of m.deleted ?? []) {
    expect(d.type).toBe('Bundle');
    const res = await fetch(d.url, { headers });
    expect(res.status).toBe(200);
    const lines = (await res.text()).split('\n').filter(Boolean);
    expect(lines.length).toBe(d.count);
    for (const line of lines) {
      const b = JSON.parse(line);
      expect(b).toMatchObject({ resourceType: 'Bundle', type: 'transaction' });
      for (const e of b.entry) {
        expect(e.request.method).toBe('DELETE');
        out.push(e.request.url);
      }
    }
  }
  return out.sort();
}

export async function downloadErrors(m: Manifest, headers: Record<string, string> = {}): Promise<Array<Record<string, any>>> {
  const out: Array<Record<string, any>> = [];
  for (const e of m.error) {
    const res = await fetch(e.url, { headers });
    expect(res.status).toBe(200);
    for (const line of (await res.text()).split('\n').filter(Boolean)) out.push(JSON.parse(line));
  }
  return out;
}
