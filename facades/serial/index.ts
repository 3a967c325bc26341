/**
 * The serial facade: reads the ports listed in SERIAL_CONFIG_FILE (ASTM E1381/E1394 analyzers, line-format
 * bedside devices) and files their readings through the repository, to the patient of the device's
 * association at the reading's time, or holds them. It also mounts the device / association / held-reading
 * admin API, which the HL7 v2 facade's readings share.
 */
import type { Facade, FacadeContext, RunningFacade } from '../../src/index.js';
import { deviceAdminRouter, deviceStore, type DeviceStore } from '../../src/index.js';
import { type PortConfig, loadSerialConfig } from './config.js';
import { ManagedPort } from './port.js';
import { type HandlerDeps, type PortHandler, astmHandler, lineHandler } from './session.js';

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

export const facade: Facade = {
  name: 'serial',
  async start(ctx: FacadeContext): Promise<RunningFacade> {
    const store: DeviceStore = deviceStore({ db: ctx.db, repo: ctx.repo, router: ctx.router, actor: 'facade:serial' });
    ctx.admin.use(deviceAdminRouter(store));
    const file = ctx.config.env.SERIAL_CONFIG_FILE;
    const ports: RunningPort[] = [];
    if (file && ctx.listen) {
      const configs = loadSerialConfig(file);
      for (const cfg of configs) ports.push(startPort(cfg, { store, log: ctx.log }));
      ctx.admin.get('/serial/ports', (_req, res) => {
        res.json({
          ports: ports.map((p) => ({ name: p.cfg.name, path: p.cfg.path, protocol: p.cfg.protocol, open: p.port.isOpen, opens: p.port.opens, stats: p.handler.stats() })),
        });
      });
      ctx.log.info(`serial: ${configs.length} port(s) from ${file}`);
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
