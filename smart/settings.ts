/** SMART settings from the environment, with the defaults documented in docs/smart.md. */
import { parseEncryptionKey } from './key-sealing.js';

export interface SmartSettings {
  /** Access tokens from the App Launch flows, seconds. */
  accessTokenTtl: number;
  /** Access tokens from client_credentials (SMART Backend Services recommends at most 5 minutes), seconds. */
  backendTokenTtl: number;
  codeTtl: number;
  /** Refresh tokens from offline_access, and from online_access (shorter: tied to a working session). */
  offlineRefreshTtl: number;
  onlineRefreshTtl: number;
  /** Launch contexts and pending authorization requests. */
  launchTtl: number;
  authRequestTtl: number;
  signingAlg: 'RS384' | 'ES384';
  /** Remote JWKS fetches. */
  jwksTimeoutMs: number;
  jwksCacheMs: number;
  /** Sign-in throttling: failures before a username or a client address is locked out, and for how long. */
  login: { maxFailuresPerUser: number; maxFailuresPerAddress: number; lockoutSeconds: number };
  /** SMART_KEY_ENCRYPTION_KEY (32 bytes): seals the private signing keys in the database. */
  keyEncryptionKey?: Uint8Array;
}

function num(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer (seconds or ms), got "${raw}"`);
  return n;
}

export function smartSettings(env: NodeJS.ProcessEnv): SmartSettings {
  const alg = env.SMART_SIGNING_ALG ?? 'RS384';
  if (alg !== 'RS384' && alg !== 'ES384') throw new Error(`SMART_SIGNING_ALG must be RS384 or ES384, got "${alg}"`);
  return {
    accessTokenTtl: num(env, 'SMART_ACCESS_TOKEN_TTL', 3600),
    backendTokenTtl: num(env, 'SMART_BACKEND_TOKEN_TTL', 300),
    codeTtl: num(env, 'SMART_CODE_TTL', 60),
    offlineRefreshTtl: num(env, 'SMART_OFFLINE_REFRESH_TTL', 90 * 24 * 3600),
    onlineRefreshTtl: num(env, 'SMART_ONLINE_REFRESH_TTL', 12 * 3600),
    launchTtl: num(env, 'SMART_LAUNCH_TTL', 3600),
    authRequestTtl: num(env, 'SMART_AUTH_REQUEST_TTL', 600),
    signingAlg: alg,
    jwksTimeoutMs: num(env, 'SMART_JWKS_TIMEOUT_MS', 5000),
    jwksCacheMs: num(env, 'SMART_JWKS_CACHE_MS', 10 * 60 * 1000),
    login: {
      maxFailuresPerUser: num(env, 'SMART_LOGIN_MAX_FAILURES', 5),
      maxFailuresPerAddress: num(env, 'SMART_LOGIN_MAX_FAILURES_PER_ADDRESS', 20),
      lockoutSeconds: num(env, 'SMART_LOGIN_LOCKOUT_SECONDS', 300),
    },
    keyEncryptionKey: parseEncryptionKey(env.SMART_KEY_ENCRYPTION_KEY),
  };
}
