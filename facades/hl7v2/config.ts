/**
 * The HL7 v2 facade's settings, read once from the environment at start (docs/hl7v2.md, docs/hl7v2-outbound.md):
 * the plug-in's config module, which src/plugins.ts calls before anything starts.
 */
import { readFileSync } from 'node:fs';
import { ConfigError, envReader, type Environment, type PluginConfig } from '../../src/index.js';
import type { ListenerTls } from './inbound/listener.js';
import { loadMappingConfig, type MappingConfig } from './inbound/mapping-config.js';

export interface Hl7v2Settings {
  mllp: {
    /** MLLP_PORT; 0 picks a free one. */
    port: number;
    /** MLLP_MAX_BYTES and MLLP_IDLE_TIMEOUT_MS; unset, the listener's defaults. */
    maxMessageBytes?: number;
    idleTimeoutMs?: number;
    /** MLLP_MAX_SEGMENTS (default 10,000): larger messages are answered AE before mapping. */
    maxSegments: number;
    tls?: ListenerTls;
  };
  /** HL7_MAPPING_FILE merged over the defaults. */
  mapping: MappingConfig;
  outbound: OutboundSettings;
}

export interface OutboundSettings {
  /** HL7_OUTBOUND_POLL_MS, HL7_OUTBOUND_BATCH, HL7_OUTBOUND_CONNECT_TIMEOUT_MS: the delivery workers. */
  pollMs: number;
  batch: number;
  connectTimeoutMs: number;
  /** HL7_OUTBOUND_REFRESH_MS: how soon a process sees destinations another one changed. */
  refreshMs: number;
  /** HL7_DESTINATIONS_FILE, applied at every server start. */
  destinationsFile?: string;
}

/** What src/plugins.ts calls at start. */
export function config(env: Environment): PluginConfig<Hl7v2Settings> {
  const settings: Hl7v2Settings = {
    mllp: {
      port: envReader(env).port('MLLP_PORT', 2575),
      maxMessageBytes: envReader(env).optionalInt('MLLP_MAX_BYTES', 1),
      idleTimeoutMs: envReader(env).optionalInt('MLLP_IDLE_TIMEOUT_MS', 1),
      maxSegments: envReader(env).int('MLLP_MAX_SEGMENTS', 10_000, 1),
      tls: tlsFromEnv(env),
    },
    mapping: loadMappingConfig(env.HL7_MAPPING_FILE),
    outbound: outboundSettings(env),
  };
  return { settings, ports: [{ variable: 'MLLP_PORT', label: 'MLLP', port: settings.mllp.port }] };
}

export function outboundSettings(env: Environment): OutboundSettings {
  const { int, raw } = envReader(env);
  return {
    pollMs: int('HL7_OUTBOUND_POLL_MS', 200, 1),
    batch: int('HL7_OUTBOUND_BATCH', 16, 1),
    connectTimeoutMs: int('HL7_OUTBOUND_CONNECT_TIMEOUT_MS', 10_000, 1),
    refreshMs: int('HL7_OUTBOUND_REFRESH_MS', 2000, 1),
    destinationsFile: raw('HL7_DESTINATIONS_FILE'),
  };
}

/**
 * TLS settings from MLLP_TLS_CERT / MLLP_TLS_KEY / MLLP_TLS_CA. A half-done configuration is an error, not
 * plain TCP: an operator who set a certificate expects encryption, and one who set a CA expects to refuse
 * senders without a client certificate.
 */
export function tlsFromEnv(env: Environment): ListenerTls | undefined {
  const { MLLP_TLS_CERT: cert, MLLP_TLS_KEY: key, MLLP_TLS_CA: ca } = env;
  if (!cert && !key && !ca) return undefined;
  const missing = [!cert && 'MLLP_TLS_CERT', !key && 'MLLP_TLS_KEY'].filter((x): x is string => !!x);
  if (missing.length) throw new ConfigError(missing[0]!, `MLLP over TLS is configured only in part: ${missing.join(' and ')} not set`);
  const read = (name: string, file: string) => {
    try {
      return readFileSync(file);
    } catch (e) {
      throw new ConfigError(name, `${name}: cannot read ${file}: ${(e as Error).message}`);
    }
  };
  return { cert: read('MLLP_TLS_CERT', cert!), key: read('MLLP_TLS_KEY', key!), ca: ca ? read('MLLP_TLS_CA', ca) : undefined, requestCert: !!ca };
}
