/** What every part of the authorization server shares. URLs are read lazily: tests learn their port late. */
import type { Config } from '../src/index.js';
import type { Database } from '../src/index.js';
import type { Repository } from '../src/index.js';
import type { Auditor } from './audit.js';
import type { KeyStore } from './keys.js';
import type { SmartSettings } from './settings.js';
import { ConfluxError } from '../src/index.js';

export interface SmartCore {
  db: Database;
  repo: Repository;
  keys: KeyStore;
  settings: SmartSettings;
  audit: Auditor;
  config: Config;
}

/** The FHIR base: the `aud` apps must ask for, and the issuer of our tokens. */
export const fhirBase = (core: SmartCore): string => core.config.fhirBaseUrl.replace(/\/+$/, '');
export const authUrl = (core: SmartCore, path: string): string => `${core.config.baseUrl.replace(/\/+$/, '')}/auth/${path}`;
export const tokenUrl = (core: SmartCore): string => authUrl(core, 'token');

/** RFC 6749 §5.2 error, answered as JSON by the token, introspection and revocation endpoints. */
export class OAuthError extends ConfluxError {
  constructor(
    readonly error: string,
    readonly description: string,
    readonly status = 400,
    readonly headers: Record<string, string> = {},
  ) {
    super('oauth', `${error}: ${description}`, { status });
  }
}
