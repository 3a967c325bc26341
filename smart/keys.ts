/**
 * The server's signing keys (access tokens, id_tokens): generated on first start, kept in the database so every
 * process signs and verifies with the same set, published at jwks_uri, rotatable. A retired key stays
 * published (and accepted) until every token it signed has expired.
 */
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK, type JWSHeaderParameters } from 'jose';
import type { Database } from '../src/index.js';
import { isSealed, seal, type StoredPrivateKey, unseal } from './key-sealing.js';

type Key = CryptoKey | Uint8Array;

interface KeyRow {
  kid: string;
  alg: string;
  private_jwk: StoredPrivateKey | string;
  public_jwk: JWK | string;
  created_at: Date;
  retired_at: Date | null;
  publish_until: Date | null;
}

interface LoadedKey {
  kid: string;
  alg: string;
  publicJwk: JWK;
  privateJwk: JWK;
  retired: boolean;
  publishUntil?: Date;
  privateKey?: Key;
  publicKey?: Key;
}

const asJson = <T,>(v: T | string): T => (typeof v === 'string' ? (JSON.parse(v) as T) : v);
/** Another process may rotate: reload at least this often, and when an unknown kid shows up (rate limited). */
const RELOAD_MS = 60_000;
const UNKNOWN_KID_RELOAD_MS = 5_000;

export class KeyStore {
  private keys: LoadedKey[] = [];
  private loadedAt = 0;
  private lastUnknownReload = 0;

  constructor(
    private readonly db: Database,
    private readonly alg: 'RS384' | 'ES384',
    /** Longest lifetime of anything signed (seconds): how long a retired key stays published. */
    private readonly maxTokenTtl: number,
    /** SMART_KEY_ENCRYPTION_KEY: private keys are stored sealed with it (and plain ones sealed at start). */
    private readonly encryptionKey?: Uint8Array,
  ) {}

  /** Loads the keys, generating the first one when the database has none. */
  async init(): Promise<void> {
    if (this.encryptionKey) await this.sealPlainKeys(this.encryptionKey);
    await this.load();
    if (!this.keys.some((k) => !k.retired)) {
      await this.generate();
      await this.load();
    }
  }

  private async load(): Promise<void> {
    const r = await this.db.query<KeyRow>(
      `SELECT kid, alg, private_jwk, public_jwk, created_at, retired_at, publish_until FROM smart_signing_key
        WHERE publish_until IS NULL OR publish_until > now() ORDER BY created_at DESC, kid`,
    );
    const previous = new Map(this.keys.map((k) => [k.kid, k]));
    this.keys = await Promise.all(r.rows.map(async (row) => {
      const prev = previous.get(row.kid);
      return {
        kid: row.kid,
        alg: row.alg,
        publicJwk: asJson(row.public_jwk),
        privateJwk: prev?.privateJwk ?? (await unseal(asJson(row.private_jwk), row.kid, this.encryptionKey)),
        retired: row.retired_at !== null,
        publishUntil: row.publish_until ?? undefined,
        privateKey: prev?.privateKey,
        publicKey: prev?.publicKey,
      };
    }));
    this.loadedAt = Date.now();
  }

  private async generate(): Promise<string> {
    const { publicKey, privateKey } = await generateKeyPair(this.alg, { extractable: true });
    const publicJwk = await exportJWK(publicKey);
    const kid = await calculateJwkThumbprint(publicJwk);
    const pub = { ...publicJwk, kid, alg: this.alg, use: 'sig' };
    const priv = { ...(await exportJWK(privateKey)), kid, alg: this.alg };
    const stored = this.encryptionKey ? await seal(priv, this.encryptionKey) : priv;
    await this.db.query(
      'INSERT INTO smart_signing_key (kid, alg, private_jwk, public_jwk) VALUES ($1, $2, $3, $4) ON CONFLICT (kid) DO NOTHING',
      [kid, this.alg, JSON.stringify(stored), JSON.stringify(pub)],
    );
    return kid;
  }

  /** Keys stored before SMART_KEY_ENCRYPTION_KEY was set are sealed in place, so none stays readable at rest. */
  private async sealPlainKeys(key: Uint8Array): Promise<void> {
    const r = await this.db.query<{ kid: string; private_jwk: StoredPrivateKey | string }>('SELECT kid, private_jwk FROM smart_signing_key');
    for (const row of r.rows) {
      const stored = asJson(row.private_jwk);
      if (isSealed(stored)) continue;
      await this.db.query('UPDATE smart_signing_key SET private_jwk = $2 WHERE kid = $1', [row.kid, JSON.stringify(await seal(stored, key))]);
    }
  }

  private async fresh(): Promise<void> {
    if (Date.now() - this.loadedAt > RELOAD_MS) await this.load();
  }

  /** The newest active key, for signing. */
  async signingKey(): Promise<{ kid: string; alg: string; key: Key }> {
    await this.fresh();
    const k = this.keys.find((x) => !x.retired);
    if (!k) {
      await this.init();
      return this.signingKey();
    }
    k.privateKey ??= await importJWK(k.privateJwk, k.alg);
    return { kid: k.kid, alg: k.alg, key: k.privateKey };
  }

  /** jose key resolver for jwtVerify: our published keys by kid. */
  readonly resolve = async (header: JWSHeaderParameters): Promise<Key> => {
    await this.fresh();
    let k = this.keys.find((x) => x.kid === header.kid);
    if (!k && Date.now() - this.lastUnknownReload > UNKNOWN_KID_RELOAD_MS) {
      this.lastUnknownReload = Date.now();
      await this.load();
      k = this.keys.find((x) => x.kid === header.kid);
    }
    if (!k) throw new Error(`token signed with unknown key "${header.kid ?? '(no kid)'}"`);
    if (k.publishUntil && k.publishUntil.getTime() < Date.now()) throw new Error(`key "${k.kid}" has expired`);
    if (header.alg !== k.alg) throw new Error(`token alg ${header.alg} does not match key alg ${k.alg}`);
    k.publicKey ??= await importJWK(k.publicJwk, k.alg);
    return k.publicKey;
  };

  async jwks(): Promise<{ keys: JWK[] }> {
    await this.fresh();
    return { keys: this.keys.map((k) => k.publicJwk) };
  }

  /** A new signing key; the previous ones stay published until what they signed has expired. */
  async rotate(): Promise<{ kid: string; retired: string[] }> {
    const retired = (
      await this.db.query<{ kid: string }>(
        `UPDATE smart_signing_key SET retired_at = now(), publish_until = now() + make_interval(secs => $1)
          WHERE retired_at IS NULL RETURNING kid`,
        // + two reload periods: another process may sign with the old key until it reloads
        [this.maxTokenTtl + (2 * RELOAD_MS) / 1000],
      )
    ).rows.map((r) => r.kid);
    const kid = await this.generate();
    await this.load();
    return { kid, retired };
  }
}
