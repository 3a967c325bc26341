/**
 * DICOM attribute matching (PS3.4 C.2.2.2), shared by C-FIND, Modality Worklist and QIDO-RS:
 * single value, wildcard (* ?), range (DA/TM/DT "a-b"), UID list, sequence (item) matching, and
 * return-key projection. Person names match case-insensitively; `fuzzy` also matches any name
 * component that starts with the query (QIDO-RS fuzzymatching=true).
 */
import type { DicomJson, JsonElement } from './part10.js';

const NUMERIC_BINARY = new Set(['US', 'SS', 'UL', 'SL', 'FL', 'FD', 'UV', 'SV', 'AT']);

function text(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return String((v as { Alphabetic?: string }).Alphabetic ?? '');
  return String(v);
}

function wildcardRegex(q: string, flags: string): RegExp {
  const body = q.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, flags);
}

function inRange(q: string, value: string): boolean {
  const [lo, hi] = q.split('-').map((s) => s.trim());
  const v = value.trim();
  if (!v) return false;
  // Compare equal-length prefixes so that a date-only bound matches a date-time value.
  if (lo && v.slice(0, lo.length) < lo) return false;
  if (hi && v.slice(0, hi.length) > hi) return false;
  return true;
}

export function matchElement(query: JsonElement, candidate: JsonElement | undefined, fuzzy = false): boolean {
  const qValues = query.Value ?? [];
  if (query.vr === 'SQ') {
    const item = qValues[0] as DicomJson | undefined;
    if (!item || Object.keys(item).length === 0) return true;
    const items = (candidate?.Value ?? []) as DicomJson[];
    if (!Object.values(item).some((e) => hasCriterion(e))) return true;
    return items.some((ci) => matches(item, ci, fuzzy));
  }
  // Binary numbers (US, UL, FL...) cannot say "empty" once decoded (an empty Rows reads as 0): return keys only.
  if (NUMERIC_BINARY.has(query.vr)) return true;
  const qs = qValues.map(text).filter((s) => s !== '');
  if (qs.length === 0) return true;
  const cs = (candidate?.Value ?? []).map(text);
  const vr = query.vr;
  return qs.some((q) => {
    if (q === '*') return true;
    if ((vr === 'DA' || vr === 'TM' || vr === 'DT') && q.includes('-')) return cs.some((c) => inRange(q, c));
    if (vr === 'PN') {
      const qn = q.toUpperCase();
      if (cs.some((c) => wildcardRegex(qn, 'i').test(c.toUpperCase()))) return true;
      if (fuzzy) {
        const parts = qn.split(/[\^ =]+/).filter(Boolean).map((p) => p.replace(/\*$/, ''));
        return cs.some((c) => {
          const comps = c.toUpperCase().split(/[\^ =]+/).filter(Boolean);
          return parts.every((p) => comps.some((cp) => cp.startsWith(p)));
        });
      }
      return false;
    }
    if (/[*?]/.test(q) && vr !== 'UI') return cs.some((c) => wildcardRegex(q, '').test(c));
    return cs.some((c) => c.trim() === q.trim());
  });
}

export function hasCriterion(e: JsonElement): boolean {
  if (NUMERIC_BINARY.has(e.vr)) return false;
  if (e.vr === 'SQ') return ((e.Value?.[0] as DicomJson | undefined) ? Object.values(e.Value?.[0] as DicomJson).some(hasCriterion) : false);
  return (e.Value ?? []).some((v) => text(v) !== '');
}

/** True when `candidate` satisfies every matching key of `query` (empty keys are return keys only). */
export function matches(query: DicomJson, candidate: DicomJson, fuzzy = false, ignore: Set<string> = new Set()): boolean {
  for (const [tag, q] of Object.entries(query)) {
    if (ignore.has(tag) || tag.startsWith('0002') || tag === '00080005' || tag === '00080052') continue;
    if (!matchElement(q, candidate[tag], fuzzy)) return false;
  }
  return true;
}

/** The response identifier: every key of the query, with the candidate's values (or empty). */
export function project(query: DicomJson, candidate: DicomJson): DicomJson {
  const out: DicomJson = {};
  for (const [tag, q] of Object.entries(query)) {
    if (tag.startsWith('0002')) continue;
    const c = candidate[tag];
    if (q.vr === 'SQ' && c?.Value) {
      const qi = q.Value?.[0] as DicomJson | undefined;
      out[tag] = { vr: 'SQ', Value: (c.Value as DicomJson[]).map((item) => (qi && Object.keys(qi).length ? project(qi, item) : item)) };
    } else out[tag] = c ? { ...c, vr: c.vr || q.vr } : { vr: q.vr };
  }
  return out;
}
