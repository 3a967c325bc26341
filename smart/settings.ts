/** SMART settings from the environment, with the defaults documented in docs/smart.md. */
import { envReader, type Environment, type PluginConfig } from '../src/index.js';
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

/** What src/plugins.ts calls at start. */
export function config(env: Environment): PluginConfig<SmartSettings> {
  return { settings: smartSettings(env) };
}

export function smartSettings(env: Environment): SmartSettings {
  const read = envReader(env);
  /** Durations are whole seconds or milliseconds, as the name says; none may be 0. */
  const num = (name: string, fallback: number) => read.int(name, fallback, 1);
  const alg = read.oneOf('SMART_SIGNING_ALG', ['RS384', 'ES384'] as const, 'RS384');
  return {
    accessTokenTtl: num('SMART_ACCESS_TOKEN_TTL', 3600),
    backendTokenTtl: num('SMART_BACKEND_TOKEN_TTL', 300),
    codeTtl: num('SMART_CODE_TTL', 60),
    offlineRefreshTtl: num('SMART_OFFLINE_REFRESH_TTL', 90 * 24 * 3600),
    onlineRefreshTtl: num('SMART_ONLINE_REFRESH_TTL', 12 * 3600),
    launchTtl: num('SMART_LAUNCH_TTL', 3600),
    authRequestTtl: num('SMART_AUTH_REQUEST_TTL', 600),
    signingAlg: alg,
    jwksTimeoutMs: num('SMART_JWKS_TIMEOUT_MS', 5000),
    jwksCacheMs: num('SMART_JWKS_CACHE_MS', 10 * 60 * 1000),
    login: {
      maxFailuresPerUser: num('SMART_LOGIN_MAX_FAILURES', 5),
      maxFailuresPerAddress: num('SMART_LOGIN_MAX_FAILURES_PER_ADDRESS', 20),
      lockoutSeconds: num('SMART_LOGIN_LOCKOUT_SECONDS', 300),
    },
    keyEncryptionKey: parseEncryptionKey(env.SMART_KEY_ENCRYPTION_KEY),
  };
}
