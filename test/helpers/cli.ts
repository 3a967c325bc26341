/**
 * The conflux CLI as an operator runs it, in a child process. Always asynchronous: a synchronous spawn blocks the test
 * worker's event loop for the whole command, and on a busy machine that starves vitest's own messages to its workers
 * ("Timeout calling onTaskUpdate") and every other wait in the file.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';

export const repoRoot = path.resolve(import.meta.dirname, '../..');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `command` with `args` in the repository and resolves with its exit code and output, whatever the code. */
export function runProcess(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd: repoRoot, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/** `conflux <args>` from source (tsx), with `env` over this process's environment. */
export function conflux(args: string[], env: Record<string, string> = {}, base: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  return runProcess(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { ...base, ...env });
}
