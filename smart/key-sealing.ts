/**
 * Private signing keys at rest. With SMART_KEY_ENCRYPTION_KEY set, each private JWK is stored as a JWE
 * (`dir` + A256GCM, the kid in the protected header) so a copy of the database or a backup cannot mint tokens;
 * without it, keys are stored as plain JWKs. The encryption key itself lives only in the environment.
 */
import { compactDecrypt, CompactEncrypt, type JWK } from 'jose';

/** What `smart_signing_key.private_jwk` holds: a JWK, or `{ jwe }` when sealed. */
export type StoredPrivateKey = JWK | { jwe: string };

export const isSealed = (v: StoredPrivateKey): v is { jwe: string } => typeof (v as { jwe?: unknown }).jwe === 'string';

/** SMART_KEY_ENCRYPTION_KEY: 32 bytes, base64 or base64url (e.g. `openssl rand -base64 32`). */
export function parseEncryptionKey(raw: string | undefined): Uint8Array | undefined {
  if (raw === undefined || raw === '') return undefined;
  const bytes = Buffer.from(raw.trim(), 'base64');
  if (bytes.length !== 32) {
    throw new Error(`SMART_KEY_ENCRYPTION_KEY must be 32 bytes in base64 (openssl rand -base64 32); it decodes to ${bytes.length} bytes`);
  }
  return new Uint8Array(bytes);
}

export async function seal(jwk: JWK, key: Uint8Array): Promise<{ jwe: string }> {
  const jwe = await new CompactEncrypt(new TextEncoder().encode(JSON.stringify(jwk)))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: jwk.kid, cty: 'jwk+json' })
    .encrypt(key);
  return { jwe };
}

export async function unseal(stored: StoredPrivateKey, kid: string, key: Uint8Array | undefined): Promise<JWK> {
  if (!isSealed(stored)) return stored;
  if (!key) throw new Error(`signing key ${kid} is stored encrypted: set SMART_KEY_ENCRYPTION_KEY to the key it was sealed with`);
  try {
    const { plaintext } = await compactDecrypt(stored.jwe, key);
    return JSON.parse(new TextDecoder().decode(plaintext)) as JWK;
  } catch {
    throw new Error(`SMART_KEY_ENCRYPTION_KEY does not decrypt signing key ${kid} (a different key sealed it)`);
  }
}
