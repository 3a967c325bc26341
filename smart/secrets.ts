import { createHash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

/** 256 bits of randomness, URL-safe: codes, refresh tokens, client secrets, request ids. */
export const randomToken = (): string => randomBytes(32).toString('base64url');

/** High-entropy secrets only (not passwords): a fast hash is enough and keeps lookups indexable. */
export const sha256 = (s: string): string => createHash('sha256').update(s).digest('base64url');

export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

// scrypt N=2^15, r=8, p=1: ~32 MiB and tens of ms per guess (OWASP's minimum is N=2^17 at r=8 for
// interactive logins on dedicated hardware; 2^15 keeps a 2-core server responsive under parallel logins).
const N = 1 << 15;
const R = 8;
const P = 1;
const KEYLEN = 32;

function scryptAsync(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password.normalize('NFC'), salt, KEYLEN, { N: n, r, p, maxmem: 128 * n * r * 2 }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** `scrypt$N$r$p$salt$hash`, parameters stored so they can be raised later without breaking old hashes. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, N, R, P);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

const DUMMY = `scrypt$${N}$${R}$${P}$${Buffer.alloc(16).toString('base64url')}$${Buffer.alloc(KEYLEN).toString('base64url')}`;

/** Constant work whether or not the user exists (pass undefined): no username probing by timing. */
export async function verifyPassword(password: string, stored: string | undefined): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = (stored ?? DUMMY).split('$');
  if (scheme !== 'scrypt') return false;
  const key = await scryptAsync(password, Buffer.from(salt, 'base64url'), Number(n), Number(r), Number(p));
  return timingSafeEqual(key, Buffer.from(hash, 'base64url')) && stored !== undefined;
}
