import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Environment, PluginConfig } from './env.js';
import { type Facade, type FacadeContext, makeLogger, type RunningFacade } from './facade.js';
import type { Runtime } from './runtime.js';

/**
 * Plug-ins in start order. src/ never imports a facade statically (docs/architecture.md): they are loaded by path,
 * so the core builds and runs without any of them. smart/ comes first: it installs authentication.
 * `config` is the plug-in's config module (exports `config(env)`), light enough for the supervisor to load;
 * `main` exports the `facade`.
 */
const PLUGINS = [
  { id: 'smart', config: '../smart/settings', main: '../smart/index' },
  { id: 'hl7v2', config: '../facades/hl7v2/config', main: '../facades/hl7v2/index' },
  { id: 'serial', config: '../facades/serial/config', main: '../facades/serial/index' },
  { id: 'dicom', config: '../facades/dicom/config', main: '../facades/dicom/index' },
] as const;
/**
 * Compiled (dist/src/plugins.js) the plug-ins are the emitted dist/smart/index.js and so on, beside this file as
 * their sources are beside src/plugins.ts; run from source (tsx, vitest) they are the .ts files.
 */
const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

/** The parsed settings of each installed plug-in, by plug-in id. */
export type PluginConfigs = Readonly<Record<string, PluginConfig<unknown>>>;

function moduleUrl(rel: string): URL | undefined {
  const url = new URL(rel + EXT, import.meta.url);
  return existsSync(fileURLToPath(url)) ? url : undefined;
}

/** Runs every installed plug-in's config parser on `env` (part of loadConfig: a wrong value stops the start). */
export async function loadPluginConfigs(env: Environment): Promise<PluginConfigs> {
  const out: Record<string, PluginConfig<unknown>> = {};
  for (const p of PLUGINS) {
    const url = moduleUrl(p.config);
    if (!url || !moduleUrl(p.main)) continue;
    const mod = (await import(url.href)) as { config?: (env: Environment) => PluginConfig<unknown> };
    if (mod.config) out[p.id] = mod.config(env);
  }
  return out;
}

export async function startPlugins(rt: Runtime, listen: boolean): Promise<RunningFacade[]> {
  const running: RunningFacade[] = [];
  for (const p of PLUGINS) {
    const url = moduleUrl(p.main);
    if (!url) continue;
    const mod = (await import(url.href)) as { facade?: Facade<unknown> };
    if (!mod.facade) continue;
    const ctx: FacadeContext<unknown> = { runtime: rt, settings: rt.config.plugins[p.id]?.settings, log: makeLogger(mod.facade.name), listen };
    running.push(await mod.facade.start(ctx));
  }
  return running;
}
