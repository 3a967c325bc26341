/**
 * Message log retention: with MESSAGE_LOG_RETENTION_DAYS set, finished messages (processed or error) older than
 * that are deleted every hour, as an interface engine's data pruner does. Held and in-flight messages are kept
 * whatever their age: they are still somebody's work.
 */
import type { Runtime } from '../runtime.js';
import type { Logger } from '../facade.js';
import { pruneMessages } from './message-log.js';

const EVERY_MS = 60 * 60 * 1000;

/** The retention in days from the environment; undefined keeps everything. */
export function retentionDays(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env.MESSAGE_LOG_RETENTION_DAYS;
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`MESSAGE_LOG_RETENTION_DAYS must be a positive number of days, got "${raw}"`);
  return n;
}

export function startMessagePruner(rt: Runtime, log: Logger): void {
  const days = retentionDays(rt.config.env);
  if (days === undefined) return;
  const run = async () => {
    const n = await pruneMessages(rt.db, new Date(Date.now() - days * 86_400_000));
    if (n) log.info(`message log: deleted ${n} finished message(s) older than ${days} day(s)`);
  };
  const tick = () => void run().catch((err) => log.warn(`message log pruning failed: ${(err as Error).message}`));
  const first = setTimeout(tick, 60_000);
  const timer = setInterval(tick, EVERY_MS);
  first.unref();
  timer.unref();
  rt.onClose.push(async () => {
    clearTimeout(first);
    clearInterval(timer);
  });
  log.info(`message log: finished messages are kept ${days} day(s)`);
}
