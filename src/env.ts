/**
 * The configuration layer's toolkit: reading raw environment values, for src/config.ts and each plug-in's config
 * module. A public module beside src/index.ts: a plug-in's config module imports only this, so that the supervisor
 * and the CLI can check every setting without loading the server.
 */

/** The environment as the configuration layer sees it: names to raw strings. */
export type Environment = Readonly<Record<string, string | undefined>>;

/** A setting with a wrong value; `variable` names the environment variable (or file) at fault. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Readers of one environment: each names its variable when the value is wrong. */
export function envReader(env: Environment) {
  const raw = (name: string) => {
    const v = env[name];
    return v === undefined || v === '' ? undefined : v;
  };
  /** A whole number >= min (0 unless said), or the fallback when unset. */
  const int = (name: string, fallback: number, min = 0): number => {
    const v = raw(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new ConfigError(name, `${name} must be an integer >= ${min}, got "${v}"`);
    return n;
  };
  // Plain functions, not methods: callers destructure them.
  return {
    raw,
    int,
    /** As `int`, undefined when unset. */
    optionalInt(name: string, min = 0): number | undefined {
      return raw(name) === undefined ? undefined : int(name, 0, min);
    },
    /** A TCP port (0 picks a free one). */
    port(name: string, fallback: number): number {
      const v = raw(name);
      const n = v === undefined ? fallback : Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65_535) throw new ConfigError(name, `${name} must be a port number from 0 to 65535, got "${v}"`);
      return n;
    },
    /** 1/true/yes/on or 0/false/no/off, any case. */
    bool(name: string, fallback: boolean): boolean {
      const v = raw(name)?.toLowerCase();
      if (v === undefined) return fallback;
      if (['1', 'true', 'yes', 'on'].includes(v)) return true;
      if (['0', 'false', 'no', 'off'].includes(v)) return false;
      throw new ConfigError(name, `${name} must be true or false (1/0, yes/no, on/off), got "${raw(name)}"`);
    },
    oneOf<T extends string>(name: string, values: readonly T[], fallback: T): T {
      const v = raw(name) ?? fallback;
      if (!values.includes(v as T)) throw new ConfigError(name, `${name} must be ${values.join(' or ')}, got "${v}"`);
      return v as T;
    },
  };
}

/**
 * What a plug-in's config module returns from `config(env)`: its typed settings, and the ports it listens on by
 * environment variable, so that the supervisor can give all its workers the same free port for a 0.
 */
export interface PluginConfig<S> {
  settings: S;
  ports?: ListenPort[];
}

export interface ListenPort {
  /** The environment variable that sets it (e.g. MLLP_PORT). */
  variable: string;
  /** What the supervisor's log calls it (e.g. MLLP). */
  label: string;
  port: number;
}
