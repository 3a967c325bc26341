/**
 * Sign-in throttling. Failed sign-ins are counted per username and per client address; reaching the limit
 * locks that key for `lockoutSeconds`, during which even the right password is refused (and not checked, so a
 * guesser learns nothing and costs no scrypt work). Counts older than the lockout window start again; a
 * successful sign-in clears the username's count. Unknown usernames are counted like known ones.
 */
import type { Queryable } from '../src/index.js';

export interface ThrottleSettings {
  maxFailuresPerUser: number;
  maxFailuresPerAddress: number;
  lockoutSeconds: number;
}

const userKey = (username: string) => `user:${username.toLowerCase()}`;
const addressKey = (ip: string) => `ip:${ip}`;

/** Seconds until the later of the two locks ends, or 0 when neither the user nor the address is locked. */
export async function lockedFor(db: Queryable, username: string, ip: string): Promise<number> {
  const r = await db.query<{ s: number | null }>(
    `SELECT ceil(extract(epoch FROM max(locked_until) - now()))::int AS s FROM smart_login_failure
      WHERE key = ANY($1::text[]) AND locked_until > now()`,
    [[userKey(username), addressKey(ip)]],
  );
  return r.rows[0]?.s ?? 0;
}

/** Counts a failed sign-in against the username and the address; locks whichever reached its limit. */
export async function recordFailure(db: Queryable, username: string, ip: string, s: ThrottleSettings): Promise<void> {
  // The limit of the key's kind ($3 users, $4 addresses); a count whose last failure is older than the lockout window starts again.
  const limit = `CASE WHEN f.key LIKE 'user:%' THEN $3 ELSE $4 END`;
  const count = `CASE WHEN f.last_at < now() - make_interval(secs => $5) THEN 1 ELSE f.failures + 1 END`;
  await db.query(
    `INSERT INTO smart_login_failure AS f (key, failures, last_at, locked_until)
     VALUES ($1, 1, now(), CASE WHEN $3 <= 1 THEN now() + make_interval(secs => $5) END),
            ($2, 1, now(), CASE WHEN $4 <= 1 THEN now() + make_interval(secs => $5) END)
     ON CONFLICT (key) DO UPDATE SET
       failures = ${count},
       last_at = now(),
       locked_until = CASE WHEN ${count} >= ${limit} THEN now() + make_interval(secs => $5) ELSE f.locked_until END`,
    [userKey(username), addressKey(ip), s.maxFailuresPerUser, s.maxFailuresPerAddress, s.lockoutSeconds],
  );
}

/** A successful sign-in: the username starts again from zero (the address keeps its count). */
export async function clearFailures(db: Queryable, username: string): Promise<void> {
  await db.query('DELETE FROM smart_login_failure WHERE key = $1', [userKey(username)]);
}
