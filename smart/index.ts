/**
 * SMART on FHIR authorization server: App Launch 2.x and Backend Services. Installs the runtime's
 * authentication hooks (every FHIR request gets a ScopePolicy) and the public /auth routes. See docs/smart.md.
 */
import type { Facade } from '../src/index.js';
import { adminRoutes } from './admin.js';
import { makeAuditor } from './audit.js';
import { BearerAuth } from './authenticate.js';
import { authorizeRoutes } from './authorize.js';
import type { SmartCore } from './core.js';
import { capabilitySecurity, discoveryRoutes } from './discovery.js';
import { KeyStore } from './keys.js';
import type { SmartSettings } from './settings.js';
import { tokenRoutes } from './token-endpoint.js';

/** Expired codes, requests, launches, tokens and jtis are deleted this often. */
const PURGE_MS = 10 * 60 * 1000;

export async function purgeExpired(core: Pick<SmartCore, 'db'>): Promise<void> {
  for (const table of ['smart_code', 'smart_auth_request', 'smart_launch', 'smart_jti', 'smart_token']) {
    await core.db.query(`DELETE FROM ${table} WHERE expires_at < now() - interval '1 hour'`);
  }
}

export const facade: Facade<SmartSettings> = {
  name: 'smart',
  async start(ctx) {
    const rt = ctx.runtime;
    const { settings } = ctx;
    const keys = new KeyStore(rt.db, settings.signingAlg, Math.max(settings.accessTokenTtl, settings.backendTokenTtl), settings.keyEncryptionKey);
    await keys.init();
    const core: SmartCore = { db: rt.db, repo: rt.repo, keys, settings, audit: makeAuditor(rt.write, ctx.log), config: rt.config };
    rt.publicRoutes.use(discoveryRoutes(core), authorizeRoutes(core), tokenRoutes(core));
    rt.admin.use(adminRoutes(core));
    let timer: NodeJS.Timeout | undefined;
    if (rt.config.authEnabled) {
      const auth = new BearerAuth(core);
      rt.authenticate = auth.authenticate;
      rt.authorizeAdmin = auth.authorizeAdmin;
      rt.capabilitySecurity = capabilitySecurity(core);
      if (ctx.listen) ctx.log.info(`SMART authorization on: discovery at ${rt.config.fhirBaseUrl}/.well-known/smart-configuration`);
    }
    if (ctx.listen) {
      timer = setInterval(() => purgeExpired(core).catch((err) => ctx.log.warn(`purge failed: ${(err as Error).message}`)), PURGE_MS);
      timer.unref();
    }
    return {
      async stop() {
        if (timer) clearInterval(timer);
      },
    };
  },
};
