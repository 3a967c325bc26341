import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Facade, type FacadeContext, makeLogger, type RunningFacade } from './facade.js';
import type { Runtime } from './runtime.js';

/**
 * Plug-ins in start order. src/ never imports a facade statically (DESIGN.md): they are loaded by path,
 * so the core builds and runs without any of them. smart/ comes first: it installs authentication.
 */
const PLUGIN_MODULES = ['../smart/index', '../facades/hl7v2/index', '../facades/serial/index', '../facades/dicom/index'];
/**
 * Compiled (dist/src/plugins.js) the plug-ins are the emitted dist/smart/index.js and so on, beside this file as
 * their sources are beside src/plugins.ts; run from source (tsx, vitest) they are the .ts files.
 */
const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

export async function startPlugins(rt: Runtime, listen: boolean): Promise<RunningFacade[]> {
  const running: RunningFacade[] = [];
  for (const rel of PLUGIN_MODULES) {
    const url = new URL(rel + EXT, import.meta.url);
    if (!existsSync(fileURLToPath(url))) continue;
    const mod = (await import(url.href)) as { facade?: Facade };
    if (!mod.facade) continue;
    const ctx: FacadeContext = Object.assign(Object.create(rt) as Runtime, { log: makeLogger(mod.facade.name), listen, runtime: rt });
    running.push(await mod.facade.start(ctx));
  }
  return running;
}
