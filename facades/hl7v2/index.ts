/**
 * The HL7 v2 facade: inbound MLLP listener (ORU/OUL, ORM/OML, ADT → FHIR through the repository's
 * transaction), message log admin routes, and the outbound destinations (outbox → MLLP toward the EHR).
 */
import type { Facade, FacadeContext, Runtime } from '../../src/index.js';
import { registerHeldFiling } from '../../src/index.js';
import { mergePatients } from '../../src/index.js';
import { messageAdminRoutes } from './inbound/admin-routes.js';
import type { Hl7v2Settings } from './config.js';
import { startMllpListener, type MllpListener } from './inbound/listener.js';
import { loadMappingConfig, type MappingConfig } from './inbound/mapping-config.js';
import { fileHeldAsNew, type DevicePort, type ProcessorDeps } from './inbound/processor.js';
import { startOutbound } from './outbound/index.js';

/** Builds what the inbound processor needs from a running Conflux. */
export async function inboundDeps(ctx: {
  db: Runtime['db'];
  router: Runtime['router'];
  write: Runtime['write'];
  log: FacadeContext['log'];
  mapping?: MappingConfig;
  maxSegments?: number;
}): Promise<ProcessorDeps> {
  // Without one, the defaults (as with HL7_MAPPING_FILE unset).
  const mapping = ctx.mapping ?? loadMappingConfig(undefined);
  let devices: DevicePort | undefined;
  try {
    devices = (await import('../../src/index.js')) as unknown as DevicePort;
  } catch {
    ctx.log.warn('src/devices not available: device readings without a patient are held in the message log only');
  }
  return {
    db: ctx.db,
    mapping: () => mapping,
    maxSegments: ctx.maxSegments,
    devices,
    log: ctx.log,
    transact: (bundle, tx) => ctx.write.transaction({ actor: 'hl7v2', entries: bundle.entry ?? [], tx }),
    // The router's repository: the same write path (versions, index, outbox hooks) the transaction used.
    mergePatients: (tx, req) => mergePatients(ctx.router.ctx.repo, tx, req),
  };
}

export const facade: Facade<Hl7v2Settings> = {
  name: 'hl7v2',
  async start(ctx: FacadeContext<Hl7v2Settings>) {
    const { runtime: rt, settings } = ctx;
    const deps = await inboundDeps({ db: rt.db, router: rt.router, write: rt.write, log: ctx.log, mapping: settings.mapping, maxSegments: settings.mllp.maxSegments });
    rt.admin.use(messageAdminRoutes(deps, rt.repo));
    registerHeldFiling(['mllp'], (tx, message) => fileHeldAsNew(deps, tx, message));
    let listener: MllpListener | undefined;
    if (ctx.listen) {
      listener = await startMllpListener(deps, { ...settings.mllp, host: rt.config.host });
      ctx.log.info(`MLLP listening on port ${listener.port}${settings.mllp.tls ? ' (TLS)' : ''}`);
    }
    const outbound = await startOutbound({ ...ctx, settings: settings.outbound });
    return {
      stop: async () => {
        await listener?.close();
        await outbound.stop();
      },
    };
  },
};
