/**
 * Which types get timeline rows (migrations/090_search_timeline.sql) and how they are derived from a resource's
 * general index rows: the subject reference, each value of the hot token parameters, and the date parameter.
 */
import type { IndexRows } from './extract.js';

export interface TimelineSpec {
  /** reference parameter code holding the subject (0..1 in these types) */
  subject: string;
  /** date parameter whose sort key orders the walk */
  date: string;
  /** token parameters with rows of their own */
  tokens: string[];
}

/** Types whose searches by subject + code/category + date are walked in the timeline index. */
export const TIMELINE: Record<string, TimelineSpec> = {
  Observation: { subject: 'subject', date: 'date', tokens: ['code', 'category'] },
  DiagnosticReport: { subject: 'subject', date: 'date', tokens: ['code', 'category'] },
};

/** The code and value of the row every timeline resource has: "any code", for subject + date alone. */
export const ANY_CODE = '*';

/** [subjectType, subjectId, code, system, value, multi, hi, low, high] */
export type TimelineRow = [string | null, string, string, string | null, string, boolean, string | null, Date | null, Date | null];

export function timelineRows(resourceType: string, rows: Omit<IndexRows, 'timeline'>): TimelineRow[] {
  const spec = TIMELINE[resourceType];
  if (!spec) return [];
  const subject = rows.reference.find((r) => r[0] === spec.subject);
  if (!subject) return [];
  const hi = rows.sort.find((s) => s[0] === spec.date)?.[2] ?? null;
  const dates = rows.date.filter((d) => d[0] === spec.date);
  const [low, high] = dates.length === 1 ? [dates[0][1], dates[0][2]] : [null, null];
  const out: TimelineRow[] = [];
  const row = (code: string, system: string | null, value: string, multi: boolean): void => {
    out.push([subject[1], subject[2], code, system, value, multi, hi, low, high]);
  };
  for (const code of spec.tokens) {
    // one row per value: a resource coded twice with the same value (two systems) must not match twice
    const byValue = new Map<string, Array<string | null>>();
    for (const [c, system, value] of rows.token) {
      if (c !== code || value === null) continue;
      byValue.set(value, [...(byValue.get(value) ?? []), system]);
    }
    for (const [value, systems] of byValue) row(code, systems[0], value, systems.length > 1);
  }
  row(ANY_CODE, null, ANY_CODE, false);
  return out;
}
