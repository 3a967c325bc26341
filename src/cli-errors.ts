/**
 * The command-line edge of the error model (docs/errors.md): what a failed command prints and the exit code it ends
 * with. Scripts branch on the exit code: 2 wrong use (unknown command, missing or conflicting flags), 1 anything
 * else that failed (the admin API refused, the database is in use, a bug). With --json the failure is still one
 * JSON document on stdout.
 */
import { ConfluxError, type ErrorCode } from './errors.js';

export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/** Exit codes other than EXIT.failure, by error code. */
export const EXIT_BY_CODE: Partial<Record<ErrorCode, number>> = { usage: EXIT.usage };

export interface CliFailure {
  exitCode: number;
  /** For stderr, after "conflux: ". */
  message: string;
  /** For stdout under --json. */
  json: { error: string; code?: ErrorCode };
}

export function cliFailure(err: unknown): CliFailure {
  const message = err instanceof Error ? err.message : String(err);
  const code = err instanceof ConfluxError ? err.code : undefined;
  return { exitCode: (code && EXIT_BY_CODE[code]) ?? EXIT.failure, message, json: { error: message, ...(code ? { code } : {}) } };
}

/** The exit code of an admin API answer a command printed. */
export function exitCodeOf(httpStatus: number): number {
  return httpStatus >= 400 ? EXIT.failure : EXIT.ok;
}

/** Wrong use of a command: exit code 2. */
export function usageError(message: string): ConfluxError {
  return new ConfluxError('usage', message);
}
