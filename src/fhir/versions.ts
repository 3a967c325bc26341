/**
 * Versions as HTTP and resends see them: ETag / Last-Modified headers, If-Match, and whether new content differs from
 * the stored version apart from the server-maintained meta (a resend must not mint a version).
 */
import type { Resource } from '@medplum/fhirtypes';
import { preconditionFailed } from './outcome.js';

/** Equal apart from the server-maintained meta.versionId / meta.lastUpdated, whatever the key order. */
export function sameContent(a: Resource, b: Resource): boolean {
  return canonical(withoutVersionMeta(a)) === canonical(withoutVersionMeta(b));
}

function withoutVersionMeta(r: Resource): object {
  const { meta, ...rest } = r;
  const { versionId: _v, lastUpdated: _l, ...kept } = meta ?? {};
  return Object.keys(kept).length ? { ...rest, meta: kept } : rest;
}

function canonical(value: unknown): string {
  const sort = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sort)
      : v && typeof v === 'object'
        ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => (x < y ? -1 : 1)).map(([k, x]) => [k, sort(x)]))
        : v;
  return JSON.stringify(sort(value));
}

export function versionHeaders(v: { versionId: number; lastUpdated: Date }): Record<string, string> {
  return { ETag: `W/"${v.versionId}"`, 'Last-Modified': v.lastUpdated.toUTCString() };
}

/** Accepts `W/"3"`, `"3"` or `3`. */
export function parseETag(etag: string): string {
  return etag.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

/** 412 unless `ifMatch` names the current version (the version the client last saw). */
export function checkIfMatch(ifMatch: string | undefined, current: { version_id: number; deleted: boolean } | undefined, what: string): void {
  if (!ifMatch) return;
  const wanted = parseETag(ifMatch);
  if (!current || current.deleted || String(current.version_id) !== wanted) {
    const have = current && !current.deleted ? `version ${current.version_id}` : 'no current version';
    throw preconditionFailed(`If-Match ${ifMatch} does not match ${what}: the server has ${have}`);
  }
}
