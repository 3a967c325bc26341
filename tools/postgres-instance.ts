/**
 * A PostgreSQL of our own from Debian's server binaries (initdb into a folder, pg_ctl start on a port): for the
 * cluster on one machine (deploy/cluster.ts) and for a real streaming replica (pg_basebackup -R) in the tests of
 * DATABASE_READ_URL. As root, the server runs as the `postgres` user, as PostgreSQL requires.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The newest installed server's bin folder, or undefined when the postgresql package is not installed. */
export function postgresBinaries(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => existsSync(path.join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(a) - Number(b));
  return versions.length ? path.join(root, versions.at(-1)!, 'bin') : undefined;
}

export interface PostgresInstance {
  dir: string;
  port: number;
  host: string;
  url(database?: string): string;
  stop(): void;
}

function asPostgres(bin: string, args: string[]): string {
  const argv = process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', bin, ...args] : [bin, ...args];
  return execFileSync(argv[0], argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function ownedByPostgres(dir: string, mode = 0o755): void {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, mode);
  if (process.getuid?.() !== 0) return;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
  chownSync(dir, uid, gid);
}

function start(bin: string, dir: string, port: number, listen: string): PostgresInstance {
  asPostgres(path.join(bin, 'pg_ctl'), [
    '-D', dir, '-l', `${dir}.log`, '-w', '-o',
    `-c listen_addresses=${listen} -c port=${port} -c unix_socket_directories=${dir} -c max_connections=300 -c fsync=off`,
    'start',
  ]);
  const host = listen.split(',')[0];
  return {
    dir,
    port,
    host,
    url: (database = 'postgres') => `postgres://postgres@${host}:${port}/${database}`,
    stop: () => {
      if (existsSync(path.join(dir, 'postmaster.pid'))) asPostgres(path.join(bin, 'pg_ctl'), ['-D', dir, '-m', 'fast', '-w', 'stop']);
    },
  };
}

/** initdb into `dir` (trust for local, loopback and `trustNet`, replication included) and start on `port`. */
export function startPostgres(opts: { dir: string; port: number; listen?: string; trustNet?: string }): PostgresInstance {
  const bin = postgresBinaries();
  if (!bin) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)');
  ownedByPostgres(path.dirname(opts.dir));
  ownedByPostgres(opts.dir, 0o700);
  asPostgres(path.join(bin, 'initdb'), ['-D', opts.dir, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  const nets = ['127.0.0.1/32', ...(opts.trustNet ? [opts.trustNet] : [])];
  writeFileSync(
    path.join(opts.dir, 'pg_hba.conf'),
    ['local all all trust', 'local replication all trust', ...nets.flatMap((n) => [`host all all ${n} trust`, `host replication all ${n} trust`])].join('\n') + '\n',
  );
  return start(bin, opts.dir, opts.port, opts.listen ?? '127.0.0.1');
}

/** A streaming replica of `primary` (pg_basebackup -R: a hot standby that follows it), started on `port`. */
export function startReplica(primary: PostgresInstance, opts: { dir: string; port: number }): PostgresInstance {
  const bin = postgresBinaries()!;
  ownedByPostgres(opts.dir, 0o700);
  asPostgres(path.join(bin, 'pg_basebackup'), ['-h', primary.host, '-p', String(primary.port), '-U', 'postgres', '-D', opts.dir, '-R', '-X', 'stream']);
  return start(bin, opts.dir, opts.port, '127.0.0.1');
}
