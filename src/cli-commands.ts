import { readFileSync } from 'node:fs';
import { usageError } from './cli-errors.js';
/**
 * Every operator command is one admin API call, so the CLI and the REST API can never drift apart.
 * `npm run conflux -- <words> [--flag value ...]` → method + path (+ JSON body or query from the flags).
 */
export interface CliArgs {
  /** Positional words after the command, e.g. the message id of `messages replay <id>`. */
  positional: string[];
  flags: Record<string, string | string[] | boolean>;
}

export interface CliCommand {
  words: string;
  summary: string;
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: (args: CliArgs) => string;
  /** GET: flags become the query string; otherwise the JSON body. */
  body?: (args: CliArgs) => unknown;
}

const need = (a: CliArgs, what: string) => {
  const v = a.positional[0];
  if (!v) throw usageError(`missing ${what}`);
  return encodeURIComponent(v);
};
const flag = (a: CliArgs, name: string): string => {
  const v = a.flags[name];
  if (typeof v !== 'string' || !v) throw usageError(`missing --${name}`);
  return encodeURIComponent(v);
};
/** `--serial-number X` → { serialNumber: X }: flags are kebab-case, the admin API's JSON is camelCase. */
const camelFlags = (a: CliArgs, omit: string[] = []) => {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(a.flags)) {
    if (k === 'json' || omit.includes(k)) continue;
    out[k.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase())] = v;
  }
  return out;
};

export const CLI_COMMANDS: CliCommand[] = [
  { words: 'status', summary: 'server status', method: 'GET', path: () => '/admin/status' },
  { words: 'blobs copy', summary: 'copy every blob (--prefix P for some) from one store to the other: --from fs --to postgres, or back; skips blobs already there', method: 'POST', path: () => '/admin/blobs/copy', body: (a) => ({ from: a.flags.from, to: a.flags.to, prefix: a.flags.prefix }) },
  { words: 'reindex', summary: 'rewrite the search index of every stored resource (--type T for one type), e.g. after an upgrade that indexes more', method: 'POST', path: () => '/admin/reindex', body: (a) => ({ type: a.flags.type }) },
  { words: 'messages list', summary: 'message log (--status, --type, --control-id, --sender, --patient, --channel, --hold-kind association|identity-conflict, --since, --until, --limit)', method: 'GET', path: () => '/admin/messages' },
  { words: 'messages show', summary: 'one logged message with its raw bytes and ACK', method: 'GET', path: (a) => `/admin/messages/${need(a, 'message id')}` },
  { words: 'messages prune', summary: 'delete finished (processed or error) messages received before --before ISO; held ones stay', method: 'POST', path: () => '/admin/messages/prune', body: (a) => ({ before: a.flags.before }) },
  { words: 'messages resolve', summary: 'decide a message held for an identity conflict (<id> --action file-as-new|reject [--note TEXT], a note is required to reject); audited', method: 'POST', path: (a) => `/admin/messages/${need(a, 'message id')}/resolve`, body: (a) => ({ action: a.flags.action, note: a.flags.note }) },
  { words: 'messages replay', summary: 're-run a logged inbound message (<id>) after a mapping or config fix', method: 'POST', path: (a) => `/admin/messages/${need(a, 'message id')}/replay` },
  // SMART (smart/admin.ts). --jwks-file is read here, on the operator's side: the server never opens paths it is given.
  { words: 'client add', summary: 'register a SMART client (--name, --redirect-uri (repeatable), --launch-uri, --confidential, --jwks-url or --jwks-file, --scope); prints client_id (and secret)', method: 'POST', path: () => '/admin/clients', body: smartClientBody },
  { words: 'client list', summary: 'registered SMART clients', method: 'GET', path: () => '/admin/clients' },
  { words: 'user add', summary: 'add a login user (--username, --password, --fhir-user Practitioner/ID)', method: 'POST', path: () => '/admin/users', body: (a) => ({ username: a.flags.username, password: a.flags.password, fhir_user: a.flags['fhir-user'] }) },
  { words: 'launch', summary: 'create an EHR launch context (--client, --patient, --encounter); prints the app launch URL with iss and launch', method: 'POST', path: () => '/admin/launch', body: (a) => ({ client_id: a.flags.client, patient: a.flags.patient, encounter: a.flags.encounter }) },
  { words: 'keys rotate', summary: 'rotate the SMART signing key (old keys stay published until their tokens expire)', method: 'POST', path: () => '/admin/keys/rotate' },
  { words: 'device add', summary: 'register a device (--name, --serial-number, --eui64, --port, --manufacturer, --model)', method: 'POST', path: () => '/admin/devices', body: (a) => camelFlags(a) },
  { words: 'device list', summary: 'devices with their current association and held readings', method: 'GET', path: () => '/admin/devices' },
  { words: 'device associate', summary: 'bind a device to a patient (--device ID --patient ID [--location ID] [--start ISO])', method: 'POST', path: (a) => `/admin/devices/${flag(a, 'device')}/associate`, body: (a) => camelFlags(a, ['device']) },
  { words: 'device release', summary: 'end a device association (--device ID [--end ISO])', method: 'POST', path: (a) => `/admin/devices/${flag(a, 'device')}/release`, body: (a) => camelFlags(a, ['device']) },
  { words: 'held list', summary: 'readings held for want of a patient-device association (--status held|assigned|discarded|all)', method: 'GET', path: () => '/admin/held-readings' },
  { words: 'held assign', summary: 'file a held reading to a patient (<id> --patient ID [--note TEXT])', method: 'POST', path: (a) => `/admin/held-readings/${need(a, 'held reading id')}/assign`, body: (a) => camelFlags(a) },
  // HL7 v2 outbound (facades/hl7v2/outbound, docs/hl7v2-outbound.md).
  { words: 'destination add', summary: 'add an HL7 v2 destination (--name --host --port --profile epic|cerner|generic --types ORU,ORM [--tls --tls-ca F --tls-cert F --tls-key F --tls-servername H --tls-insecure] [--filter "DiagnosticReport?category=LAB" (repeatable)] [--statuses preliminary,final,corrected,amended (result statuses it takes; default: all a lab interface carries)] [--ack-timeout MS] [--retry-max-attempts N --retry-initial-ms MS --retry-max-ms MS] [--sending-application --sending-facility --receiving-application --receiving-facility --version --time-zone --option key=value (repeatable)] [--paused] [--replace])', method: 'POST', path: () => '/admin/outbound/destinations', body: destinationBody },
  { words: 'destination list', summary: 'HL7 v2 destinations with queued/sending/delivered/dead counts', method: 'GET', path: () => '/admin/outbound/destinations' },
  { words: 'destination show', summary: 'one destination (<name>)', method: 'GET', path: (a) => `/admin/outbound/destinations/${need(a, 'destination name')}` },
  { words: 'destination pause', summary: 'stop sending to a destination (<name>); messages keep queueing', method: 'POST', path: (a) => `/admin/outbound/destinations/${need(a, 'destination name')}/pause` },
  { words: 'destination resume', summary: 'resume sending to a destination (<name>)', method: 'POST', path: (a) => `/admin/outbound/destinations/${need(a, 'destination name')}/resume` },
  { words: 'outbound list', summary: 'outbound HL7 v2 messages (--destination NAME --state queued,sending,delivered,dead,superseded --patient ID --limit N --before ID --payload true)', method: 'GET', path: () => '/admin/outbound/messages' },
  { words: 'outbound show', summary: 'one outbound message (<id>) with the bytes sent and the ACK received', method: 'GET', path: (a) => `/admin/outbound/messages/${need(a, 'outbound message id')}` },
  { words: 'outbound replay', summary: 'resend one outbound message (<id>) or every dead one (--all [--destination NAME] [--state dead|delivered]); --rebuild builds it again from the current resources', method: 'POST', path: outboundReplayPath, body: (a) => ({ destination: a.flags.destination, state: a.flags.state, rebuild: a.flags.rebuild === true || a.flags.rebuild === 'true' }) },
];

function smartClientBody(a: CliArgs): unknown {
  const f = a.flags;
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  let jwks: unknown;
  const file = str(f['jwks-file']);
  if (file) {
    try {
      jwks = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw usageError(`--jwks-file ${file}: ${(err as Error).message}`);
    }
  }
  return {
    name: f.name,
    redirect_uris: f['redirect-uri'] === undefined ? undefined : [f['redirect-uri']].flat(),
    launch_uri: f['launch-uri'],
    confidential: f.confidential === true,
    jwks_url: f['jwks-url'],
    jwks,
    scope: f.scope === undefined ? undefined : [f.scope].flat().join(' '),
  };
}

/** A bare `outbound replay` must not mean "every dead message": the bulk form needs --all, spelled out. */
function outboundReplayPath(a: CliArgs): string {
  const all = a.flags.all === true;
  if (a.positional.length > 1) throw usageError(`outbound replay takes one message id, got ${a.positional.join(' ')}`);
  if (a.positional[0] && all) throw usageError('outbound replay: give either a message id or --all, not both');
  if (a.positional[0]) return `/admin/outbound/messages/${need(a, 'outbound message id')}/replay`;
  if (all) return '/admin/outbound/messages/replay';
  throw usageError('outbound replay needs a message id (outbound replay <id>) or --all (every dead message, optionally --destination NAME --state dead|delivered)');
}

/** `destination add` flags → the destination JSON of the admin API (and of HL7_DESTINATIONS_FILE). */
function destinationBody(a: CliArgs): unknown {
  const f = a.flags;
  const one = (k: string) => (f[k] === undefined ? undefined : String([f[k]].flat().at(-1)));
  const num = (k: string) => (one(k) === undefined ? undefined : Number(one(k)));
  const options: Record<string, string> = {};
  const named: Record<string, string> = { 'sending-application': 'sendingApplication', 'sending-facility': 'sendingFacility', 'receiving-application': 'receivingApplication', 'receiving-facility': 'receivingFacility', version: 'version', 'time-zone': 'timeZone', 'processing-id': 'processingId' };
  for (const [flagName, key] of Object.entries(named)) if (one(flagName) !== undefined) options[key] = one(flagName)!;
  for (const kv of f.option === undefined ? [] : [f.option].flat()) {
    const [k, ...v] = String(kv).split('=');
    if (!k || v.length === 0) throw usageError(`--option needs key=value, got "${kv}"`);
    options[k] = v.join('=');
  }
  const tlsWanted = f.tls !== undefined || f['tls-ca'] !== undefined || f['tls-cert'] !== undefined || f['tls-insecure'] !== undefined;
  const retry = { maxAttempts: num('retry-max-attempts'), initialDelayMs: num('retry-initial-ms'), maxDelayMs: num('retry-max-ms') };
  return {
    name: one('name'),
    host: one('host'),
    port: num('port'),
    profile: one('profile'),
    types: one('types'),
    filter: f.filter === undefined ? undefined : [f.filter].flat().map(String),
    statuses: one('statuses'),
    ackTimeoutMs: num('ack-timeout'),
    retry: Object.values(retry).some((v) => v !== undefined) ? retry : undefined,
    tls: tlsWanted ? { ca: one('tls-ca'), cert: one('tls-cert'), key: one('tls-key'), servername: one('tls-servername'), rejectUnauthorized: f['tls-insecure'] === undefined ? undefined : false } : undefined,
    options: Object.keys(options).length ? options : undefined,
    paused: f.paused === true || f.paused === 'true' ? true : undefined,
    replace: f.replace === true || f.replace === 'true' ? true : undefined,
  };
}
