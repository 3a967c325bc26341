/**
 * The HL7 v2 facade: inbound MLLP listener (ORU/OUL, ORM/OML, ADT → FHIR through the repository's
 * transaction), message log admin routes, and the outbound destinations (outbox → MLLP toward the EHR).
 */
import type { Facade, FacadeContext } from '../../src/index.js';
import { registerHeldFiling } from '../../src/index.js';
import { mergePatients } from '../../src/index.js';
import { messageAdminRoutes } from './inbound/admin-routes.js';
import { startMllpListener, tlsFromEnv, type MllpListener } from './inbound/listener.js';
import { loadMappingConfig } from './inbound/mapping-config.js';
import { fileHeldAsNew, type DevicePort, type ProcessorDeps } from './inbound/processor.js';
import { startOutbound } from './outbound/index.js';

/** Builds what the inbound processor needs from a running Conflux. */
export async function inboundDeps(ctx: Pick<FacadeContext, 'db' | 'router' | 'write' | 'log' | 'config'>): Promise<ProcessorDeps> {
  const mapping = loadMappingConfig(ctx.config.env.HL7_MAPPING_FILE);
  let devices: DevicePort | undefined;
  try {
    devices = (await import('../../src/index.js')) as unknown as DevicePort;
  } catch {
    ctx.log.warn('src/devices not available: device readings without a patient are held in the message log only');
  }
  return {
    db: ctx.db,
    mapping: () => mapping,
    devices,
    log: ctx.log,
    transact: (bundle, tx) => ctx.write.transaction({ actor: 'hl7v2', entries: bundle.entry ?? [], tx }),
    // The router's repository: the same write path (versions, index, outbox hooks) the transaction used.
    mergePatients: (tx, req) => mergePatients(ctx.router.ctx.repo, tx, req),
  };
}

export const facade: Facade = {
  name: 'hl7v2',
  async start(ctx: FacadeContext) {
    const deps = await inboundDeps(ctx);
    ctx.admin.use(messageAdminRoutes(deps, ctx.repo));
    registerHeldFiling(['mllp'], (tx, message) => fileHeldAsNew(deps, tx, message));
    let listener: MllpListener | undefined;
    if (ctx.listen) {
      const env = ctx.config.env;
      listener = await startMllpListener(deps, {
        port: ctx.config.mllpPort,
        host: ctx.config.host,
        maxMessageBytes: env.MLLP_MAX_BYTES ? Number(env.MLLP_MAX_BYTES) : undefined,
        idleTimeoutMs: env.MLLP_IDLE_TIMEOUT_MS ? Number(env.MLLP_IDLE_TIMEOUT_MS) : undefined,
        tls: tlsFromEnv(env),
      });
      ctx.log.info(`MLLP listening on port ${listener.port}${env.MLLP_TLS_CERT ? ' (TLS)' : ''}`);
    }
    const outbound = await startOutbound(ctx);
    return {
      stop: async () => {
        await listener?.close();
        await outbound.stop();
      },
    };
  },
};
