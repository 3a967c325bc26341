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

export const CLI_COMMANDS: CliCommand[] = [
  { words: 'status', summary: 'server status', method: 'GET', path: () => '/admin/status' },
  { words: 'messages list', summary: 'HL7 v2 message log (--status, --type, --control-id, --patient, --since, --direction)', method: 'GET', path: () => '/admin/messages' },
  { words: 'messages show', summary: 'one logged message with its raw bytes and ACK', method: 'GET', path: (a) => `/admin/messages/${need(a, 'message id')}` },
  { words: 'messages replay', summary: 'replay one message (<id>) or every dead/error message (--all [--destination NAME])', method: 'POST', path: (a) => (a.positional[0] ? `/admin/messages/${need(a, 'message id')}/replay` : '/admin/messages/replay'), body: flagsOnly },
];
