/**
 * The serial facade: reads the ports listed in SERIAL_CONFIG_FILE (ASTM E1381/E1394 analyzers, line-format
 * bedside devices) and files their readings through the repository, to the patient of the device's
 * association at the reading's time, or holds them. It also mounts the device / association / held-reading
 * admin API, which the HL7 v2 facade's readings share.
 */
import type { Facade, FacadeContext, FiledMessage, MessageRecord, RunningFacade, Tx } from '../../src/index.js';
import { SERIAL_PORT_SYSTEM, conflict, deviceAdminRouter, deviceStore, registerHeldFiling, type DeviceStore } from '../../src/index.js';
import { decodeCapture, framesToText } from './astm/frame.js';
import { parseRecords, splitMessages } from './astm/records.js';
import type { PortConfig, SerialSettings } from './config.js';
import { fileReadings } from './filing.js';
import { mapAstmMessage } from './mapping/astm-map.js';
import { ManagedPort } from './port.js';
import { CHANNEL, type HandlerDeps, type PortHandler, astmHandler, lineHandler } from './session.js';

export interface RunningPort {
  cfg: PortConfig;
  port: ManagedPort;
  handler: PortHandler;
}

/** Starts one port (exported for tests and the benchmark). */
export function startPort(cfg: PortConfig, deps: Omit<HandlerDeps, 'write'>): RunningPort {
  let port: ManagedPort | undefined;
  const handlerDeps: HandlerDeps = { ...deps, write: (b) => port?.write(b) };
  const handler = cfg.protocol === 'astm' ? astmHandler(cfg, handlerDeps) : lineHandler(cfg, handlerDeps);
  port = new ManagedPort(cfg, (chunk) => handler.feed(chunk), deps.log);
  port.start();
  return { cfg, port, handler };
}

export const facade: Facade<SerialSettings> = {
  name: 'serial',
  async start(ctx: FacadeContext<SerialSettings>): Promise<RunningFacade> {
    const rt = ctx.runtime;
    const store: DeviceStore = deviceStore({ db: rt.db, repo: rt.repo, write: rt.write, actor: 'facade:serial' });
    rt.admin.use(deviceAdminRouter(store));
    const { file, ports: configs } = ctx.settings;
    const ports: RunningPort[] = [];
    registerHeldFiling([CHANNEL], (tx, message) => fileHeldAsNew(store, configs, tx, message));
    // A serial line has one reader: under the supervisor, the worker in slot 0 (its replacement after a crash too).
    const reader = (ctx.runtime.workerSlot ?? 0) === 0;
    if (file && ctx.listen) {
      if (reader) for (const cfg of configs) ports.push(startPort(cfg, { store, log: ctx.log }));
      rt.admin.get('/serial/ports', (_req, res) => {
        res.json({
          ports: ports.map((p) => ({ name: p.cfg.name, path: p.cfg.path, protocol: p.cfg.protocol, open: p.port.isOpen, opens: p.port.opens, stats: p.handler.stats() })),
          ...(reader ? {} : { note: `the serial ports are read by worker slot 0; this is slot ${ctx.runtime.workerSlot}: ask again for its figures` }),
        });
      });
      ctx.log.info(reader ? `serial: ${configs.length} port(s) from ${file}` : `serial: ${configs.length} port(s) from ${file} are read by worker slot 0`);
    }
    return {
      async stop() {
        for (const p of ports) {
          p.handler.close();
          await p.port.stop();
        }
      },
    };
  },
};

/**
 * An operator's "file as new" for an ASTM message held for an identity conflict: the logged frames are mapped
 * again with their port's settings and filed in the resolution's transaction with policy file-as-new, so the
 * reports whose sample id is another patient's become new resources of this message's patient; the other
 * patient's data is not touched, and reports already filed are matched again (idempotent).
 */
export async function fileHeldAsNew(store: DeviceStore, configs: PortConfig[], tx: Tx, message: MessageRecord): Promise<FiledMessage> {
  const cfg = configs.find((c) => c.name === message.sender);
  if (!cfg) throw conflict(`message ${message.id} came from port "${message.sender ?? '?'}", which SERIAL_CONFIG_FILE no longer lists: it cannot be mapped again; reject it`);
  if (message.messageType !== 'ASTM' || cfg.protocol !== 'astm') throw conflict(`message ${message.id} is not an ASTM message; only ASTM reports can be filed as new`);
  const text = framesToText(decodeCapture(message.raw).filter((f) => f.checksumOk));
  const out: FiledMessage = { resourceRefs: [], patientRefs: [] };
  let filed = 0;
  for (const records of splitMessages(parseRecords(text).records)) {
    const set = mapAstmMessage(records, { codeMap: cfg.codeMap, timeZone: cfg.timeZone, patientIdentifierSystem: cfg.patientIdentifierSystem });
    // The same device identity the session gives a transmission, so the result keys are the same.
    set.deviceIdentifiers = [{ system: SERIAL_PORT_SYSTEM, value: cfg.path }, ...cfg.deviceIdentifiers, ...set.deviceIdentifiers];
    const r = await fileReadings(store, set, { plausibility: cfg.plausibility, futureSkewMs: cfg.futureSkewMs, messageId: message.id, policy: 'file-as-new', tx });
    filed += r.filed;
    out.resourceRefs.push(...r.resourceRefs);
    out.patientRefs.push(...r.patientRefs);
  }
  if (filed === 0) throw conflict(`message ${message.id} has no report that can be filed now (no patient for it, or it is held for another reason); reject it or resolve the held readings`);
  out.patientRefs = [...new Set(out.patientRefs)];
  return out;
}
