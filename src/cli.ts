#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import http from 'node:http';
import { CLI_COMMANDS, type CliArgs, type CliCommand } from './cli-commands.js';
import { cliFailure, EXIT, exitCodeOf } from './cli-errors.js';
import { loadConfig, type Config } from './config.js';
import { isWorker, receiveStart, reportReady, serverInfoPath, superviseWorkers } from './supervisor.js';
// The server's modules (Express, the FHIR definitions, the database drivers, the facades) are imported where they
// are used: the supervisor of WORKERS processes and an admin command talking to a running server never load them.

const BOOLEAN_FLAGS = new Set(['json', 'open', 'confidential', 'all', 'rebuild', 'paused', 'replace', 'tls', 'tls-insecure']);

/** `a b --x 1 --y --x 2 c` → words [a b c], flags {x: [1, 2], y: true}. */
export function parseArgs(argv: string[]): { words: string[]; flags: CliArgs['flags'] } {
  const words: string[] = [];
  const flags: CliArgs['flags'] = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      words.push(a);
      continue;
    }
    const [name, inline] = a.slice(2).split(/=(.*)/s, 2);
    let value: string | boolean;
    if (inline !== undefined) value = inline;
    else if (BOOLEAN_FLAGS.has(name) || i + 1 >= argv.length || argv[i + 1].startsWith('--')) value = true;
    else value = argv[++i];
    const prev = flags[name];
    flags[name] = prev === undefined ? value : ([] as Array<string | boolean>).concat(prev as string, value as string) as string[];
  }
  return { words, flags };
}

function findCommand(words: string[]): { cmd: CliCommand; rest: string[] } | undefined {
  for (const cmd of [...CLI_COMMANDS].sort((a, b) => b.words.length - a.words.length)) {
    const w = cmd.words.split(' ');
    if (w.every((x, i) => words[i] === x)) return { cmd, rest: words.slice(w.length) };
  }
  return undefined;
}

/** Calls the admin API of the running server, or of an in-process runtime when none is up. */
async function runAdminCommand(config: Config, cmd: CliCommand, args: CliArgs): Promise<{ status: number; body: unknown }> {
  const running = await findRunningServer(config);
  if (running) return call(running.url, running.adminToken, cmd, args);
  console.error('conflux: no running server found; running the command in-process on the database');
  const [{ createRuntime }, { startPlugins }] = await Promise.all([import('./runtime.js'), import('./plugins.js')]);
  const rt = await createRuntime(config);
  const facades = await startPlugins(rt, false);
  const server = http.createServer(rt.app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    return await call(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, rt.adminToken, cmd, args);
  } finally {
    server.close();
    for (const f of facades) await f.stop();
    await rt.close();
  }
}

async function findRunningServer(config: Config): Promise<{ url: string; adminToken: string } | undefined> {
  try {
    const info = JSON.parse(await readFile(serverInfoPath(config), 'utf8')) as { url: string; adminToken: string };
    const res = await fetch(`${info.url}/healthz`, { signal: AbortSignal.timeout(2000) });
    return res.ok ? info : undefined;
  } catch {
    return undefined;
  }
}

async function call(base: string, token: string, cmd: CliCommand, args: CliArgs): Promise<{ status: number; body: unknown }> {
  let url = `${base}${cmd.path(args)}`;
  const init: RequestInit = { method: cmd.method, headers: { authorization: `Bearer ${token}` } };
  if (cmd.method === 'GET') {
    const q = new URLSearchParams();
    // --control-id → controlId: flags are kebab-case, the admin API's parameters camelCase.
    const camel = (k: string) => k.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
    for (const [k, v] of Object.entries(args.flags)) if (k !== 'json') for (const x of [v].flat()) q.append(camel(k), String(x));
    if ([...q].length) url += `?${q}`;
  } else {
    init.body = JSON.stringify(cmd.body ? cmd.body(args) : {});
    (init.headers as Record<string, string>)['content-type'] = 'application/json';
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* plain text answer */
  }
  return { status: res.status, body };
}

function usage(): string {
  const lines = [
    'usage: npm run conflux -- <command> [--flags] [--json]',
    '',
    '  serve [--open]            start HTTP, MLLP and DIMSE listeners (what npm start runs)',
    '  migrate                   apply pending database migrations and exit',
    ...CLI_COMMANDS.map((c) => `  ${c.words.padEnd(25)} ${c.summary}`),
  ];
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const { words, flags } = parseArgs(argv);
  const json = flags.json === true;
  const config = await loadConfig(process.env, flags.open ? ['--open'] : []);
  const out = (value: unknown, human: string) => console.log(json ? JSON.stringify(value) : human);
  switch (words[0]) {
    case 'serve': {
      // PostgreSQL with WORKERS > 1: this process supervises the server processes (each one comes back here).
      if (config.workers > 1 && !isWorker()) return superviseWorkers(config);
      const { startServer } = await import('./server.js');
      const started = isWorker()
        ? receiveStart().then(async ({ adminToken, slot }) => {
            const s = await startServer(config, { supervised: { adminToken, slot } });
            reportReady(s.url);
            return s;
          })
        : startServer(config);
      let stopping = false;
      const shutdown = (signal: string) => {
        if (stopping) return;
        stopping = true;
        console.log(`${signal} received`);
        // A signal during start stops the server once it is up (a failed start exits through main's catch).
        started.then((server) => server.stop()).then(
          () => process.exit(0),
          (err) => {
            console.error(err);
            process.exit(1);
          },
        );
      };
      if (isWorker()) {
        // A signal to the whole process group (Ctrl-C, `timeout`, a process manager) reaches the workers and the
        // supervisor, which then sends its own SIGTERM: one graceful stop, never a second signal's default kill.
        // SIGINT is the supervisor's to act on, so that it knows it is stopping before any worker exits.
        process.on('SIGTERM', () => shutdown('SIGTERM'));
        process.on('SIGINT', () => undefined);
      } else {
        process.once('SIGTERM', () => shutdown('SIGTERM'));
        process.once('SIGINT', () => shutdown('SIGINT'));
      }
      await started;
      // A server that has just started still holds the garbage of loading the FHIR definitions (on Node 24 over
      // 100 MB), which an idle process would keep until load forced a collection: one full collection now returns
      // it. `gc` exists when node runs with --expose-gc, as `npm start` runs it.
      (globalThis as { gc?: () => void }).gc?.();
      return -1;
    }
    case 'migrate': {
      const [{ openDatabase }, { migrate }] = await Promise.all([import('./db/open.js'), import('./db/migrate.js')]);
      const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: config.databasePoolSize });
      try {
        const applied = await migrate(db);
        out({ applied, database: db.kind }, applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
      } finally {
        await db.close();
      }
      return 0;
    }
    case undefined:
    case 'help':
      console.log(usage());
      return words[0] ? EXIT.ok : EXIT.usage;
  }
  const found = findCommand(words);
  if (!found) {
    console.error(`unknown command "${words.join(' ')}"\n\n${usage()}`);
    return EXIT.usage;
  }
  const args = { positional: found.rest, flags };
  // Wrong use (a missing id, conflicting flags) is reported before a server is looked for or a database opened.
  found.cmd.path(args);
  found.cmd.body?.(args);
  const { status, body } = await runAdminCommand(config, found.cmd, args);
  out(body, typeof body === 'string' ? body : JSON.stringify(body, null, 2));
  return exitCodeOf(status);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    const f = cliFailure(err);
    // With --json, a failure is still one JSON document on stdout, for scripts.
    if (process.argv.includes('--json')) console.log(JSON.stringify(f.json));
    console.error(`conflux: ${f.message}`);
    process.exit(f.exitCode);
  },
);
