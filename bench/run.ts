/**
 * `npm run bench -- <name> [args]` runs bench/<name>.ts. Each benchmark prints its own figures.
 * Benchmarks measure speed; the test suite never does.
 */
import { existsSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const dir = fileURLToPath(new URL('.', import.meta.url));
const available = readdirSync(dir)
  .filter((f) => f.endsWith('.ts') && !['run.ts', 'lib.ts'].includes(f))
  .map((f) => f.replace(/\.ts$/, ''));
const [name, ...args] = process.argv.slice(2);
if (!name || !existsSync(`${dir}/${name}.ts`)) {
  console.error(`usage: npm run bench -- <name> [args]\navailable: ${available.join(', ')}`);
  process.exit(2);
}
const r = spawnSync(process.execPath, ['--import', 'tsx', `${dir}/${name}.ts`, ...args], { stdio: 'inherit' });
process.exit(r.status ?? 1);
