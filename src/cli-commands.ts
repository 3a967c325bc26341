import { readFileSync } from 'node:fs';
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

const flagsOnly = (a: CliArgs) => {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(a.flags)) if (k !== 'json') out[k] = v;
  return out;
};
const need = (a: CliArgs, what: string) => {
  const v = a.positional[0];
  if (!v) throw new Error(`missing ${what}`);
  return encodeURIComponent(v);
};
const flag = (a: CliArgs, name: string): string => {
  const v = a.flags[name];
  if (typeof v !== 'string' || !v) throw new Error(`missing --${name}`);
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
  { words: 'messages list', summary: 'message log (--status, --type, --control-id, --sender, --patient, --channel, --since, --until, --limit)', method: 'GET', path: () => '/admin/messages' },
  { words: 'messages show', summary: 'one logged message with its raw bytes and ACK', method: 'GET', path: (a) => `/admin/messages/${need(a, 'message id')}` },
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
      throw new Error(`--jwks-file ${file}: ${(err as Error).message}`);
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
