/**
 * Instruments send wall-clock times without an offset; the port's configured IANA time zone says which
 * instant they mean. FHIR gets the local time with its offset, so both the instant and the clock reading
 * the operator saw survive.
 */
export interface WallClock {
  y: number;
  mo: number;
  d: number;
  h: number;
  mi: number;
  se: number;
  precision: 'day' | 'minute' | 'second';
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function offsetMinutes(timeZone: string, t: number): number {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    formatters.set(timeZone, f);
  }
  const p = Object.fromEntries(f.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
  const asUtc = Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute), Number(p.second));
  return Math.round((asUtc - Math.floor(t / 1000) * 1000) / 60000);
}

export function assertTimeZone(timeZone: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
  } catch {
    throw new Error(`time zone "${timeZone}" is not an IANA time zone name (e.g. Europe/Berlin, UTC)`);
  }
}

/** The instant a wall-clock time in `timeZone` denotes, and its FHIR dateTime with offset. */
export function fromWallClock(w: WallClock, timeZone: string): { at: Date; fhir: string } {
  const guess = Date.UTC(w.y, w.mo - 1, w.d, w.h, w.mi, w.se);
  let off = offsetMinutes(timeZone, guess);
  let t = guess - off * 60000;
  const off2 = offsetMinutes(timeZone, t);
  if (off2 !== off) {
    off = off2;
    t = guess - off * 60000;
  }
  const pad = (n: number, l = 2) => String(n).padStart(l, '0');
  const date = `${pad(w.y, 4)}-${pad(w.mo)}-${pad(w.d)}`;
  if (w.precision === 'day') return { at: new Date(t), fhir: date };
  const sign = off < 0 ? '-' : '+';
  const tz = off === 0 ? 'Z' : `${sign}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  return { at: new Date(t), fhir: `${date}T${pad(w.h)}:${pad(w.mi)}:${pad(w.se)}${tz}` };
}

export function defaultTimeZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}
