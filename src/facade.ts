import type { Runtime } from './runtime.js';

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

/**
 * What a plug-in (a facade, or smart/) gets at start: the runtime (assign its hooks, such as authenticate,
 * there), the plug-in's own settings as its config module parsed them, a logger, and whether it may open sockets.
 */
export interface FacadeContext<S = undefined> {
  runtime: Runtime;
  settings: S;
  log: Logger;
  /**
   * False when the CLI runs an admin command in-process (no server is up): register admin routes,
   * but open no listeners and start no background workers.
   */
  listen: boolean;
}

export interface RunningFacade {
  stop(): Promise<void>;
}

/** A facade module exports `facade: Facade`; `serve` loads each one listed in src/plugins.ts. */
export interface Facade<S = undefined> {
  name: string;
  start(ctx: FacadeContext<S>): Promise<RunningFacade>;
}

export function makeLogger(name: string): Logger {
  const line = (level: string, msg: string) => `${new Date().toISOString()} ${level} [${name}] ${msg}`;
  return {
    info: (msg) => console.log(line('INFO', msg)),
    warn: (msg) => console.warn(line('WARN', msg)),
    error: (msg) => console.error(line('ERROR', msg)),
  };
}
