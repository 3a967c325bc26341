/**
 * Waiting in tests. A test waits for an event or a state change that proves what it expects (a row's state, a
 * message at the peer, a worker's tick, a port that answers), never for a length of time: `until` re-checks a
 * condition until it holds and fails naming what it waited for (a hang would only say "test timed out"). Every
 * suite uses this one helper; the timeout is a safety net for a broken build, not a statement about speed.
 */
export interface UntilOptions {
  /** Give up after this long (default 20 s). */
  timeoutMs?: number;
  /** Re-check this often (default 25 ms). */
  everyMs?: number;
}

type Maybe<T> = T | undefined | null | false | 0 | '';

/** Resolves to the condition's first truthy value (0 and '' are not: a count that is still 0 has not happened). */
export async function until<T>(condition: () => Maybe<T> | Promise<Maybe<T>>, what: string, opts: UntilOptions = {}): Promise<T> {
  const { timeoutMs = 20_000, everyMs = 25 } = opts;
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await condition();
    if (v) return v as T;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Until `url` answers 2xx (a server process that has just been started). */
export function untilUp(url: string, opts: UntilOptions = {}): Promise<true> {
  return until(async () => (await fetch(url).catch(() => undefined))?.ok, `${url} to answer`, { timeoutMs: 60_000, everyMs: 200, ...opts });
}
