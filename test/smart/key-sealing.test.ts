/**
 * SMART_KEY_ENCRYPTION_KEY: private signing keys are sealed (JWE) in the database, keys stored before the
 * setting are sealed at start, and a missing or wrong key stops the start with a message that says which.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jwtVerify, SignJWT } from 'jose';
import type { Database } from '../../src/db/database.js';
import { KeyStore } from '../../smart/keys.js';
import { parseEncryptionKey } from '../../smart/key-sealing.js';
import { testDatabases } from '../helpers/db.js';

const stored = async (db: Database) =>
  (await db.query<{ kid: string; private_jwk: unknown }>('SELECT kid, private_jwk FROM smart_signing_key')).rows.map((r) => ({
    kid: r.kid,
    text: typeof r.private_jwk === 'string' ? r.private_jwk : JSON.stringify(r.private_jwk),
  }));

async function signAndVerify(keys: KeyStore): Promise<string> {
  const { kid, alg, key } = await keys.signingKey();
  const jwt = await new SignJWT({ sub: 'x' }).setProtectedHeader({ alg, kid }).setIssuedAt().setExpirationTime('5m').sign(key);
  await jwtVerify(jwt, keys.resolve);
  return jwt;
}

describe.each(testDatabases())('signing keys at rest on $name', (tdb) => {
  let db: Database;
  let drop: () => Promise<void>;
  const secret = new Uint8Array(randomBytes(32));
  beforeAll(async () => {
    ({ db, drop } = await tdb.open());
  });
  afterAll(async () => drop?.());

  it('a key stored in plain form is sealed at the first start with the setting, and keeps working', async () => {
    const plain = new KeyStore(db, 'ES384', 300);
    await plain.init();
    const before = await stored(db);
    expect(before).toHaveLength(1);
    expect(before[0]!.text).toContain('"d"');
    const jwt = await signAndVerify(plain);

    const sealed = new KeyStore(db, 'ES384', 300, secret);
    await sealed.init();
    const after = await stored(db);
    expect(after.map((r) => r.kid)).toEqual(before.map((r) => r.kid));
    expect(after[0]!.text).toMatch(/"jwe":/);
    expect(after[0]!.text).not.toContain('"d"');
    await jwtVerify(jwt, sealed.resolve); // what the plain key signed still verifies
    await signAndVerify(sealed);
  });

  it('rotation stores the new key sealed too', async () => {
    const keys = new KeyStore(db, 'ES384', 300, secret);
    await keys.init();
    const { kid } = await keys.rotate();
    const row = (await stored(db)).find((r) => r.kid === kid)!;
    expect(row.text).toMatch(/"jwe":/);
    expect(row.text).not.toContain('"d"');
    expect((await keys.signingKey()).kid).toBe(kid);
    await signAndVerify(keys);
  });

  it('without the setting, or with another key, the start fails saying why', async () => {
    await expect(new KeyStore(db, 'ES384', 300).init()).rejects.toThrow(/stored encrypted: set SMART_KEY_ENCRYPTION_KEY/);
    await expect(new KeyStore(db, 'ES384', 300, new Uint8Array(randomBytes(32))).init()).rejects.toThrow(/SMART_KEY_ENCRYPTION_KEY does not decrypt signing key/);
  });
});

describe('SMART_KEY_ENCRYPTION_KEY parsing', () => {
  it('takes 32 bytes of base64 and names the setting otherwise', () => {
    expect(parseEncryptionKey(undefined)).toBeUndefined();
    expect(parseEncryptionKey(randomBytes(32).toString('base64'))).toHaveLength(32);
    expect(() => parseEncryptionKey('c2hvcnQ=')).toThrow(/SMART_KEY_ENCRYPTION_KEY must be 32 bytes .* decodes to 5 bytes/);
  });
});
