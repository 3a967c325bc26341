/**
 * npm run fuzz -- <target> [--seconds N] [--jobs N]: coverage-guided fuzzing of one target with Jazzer.js (libFuzzer).
 *
 * Jazzer.js instruments JavaScript as it is loaded, so the targets are first compiled into dist-fuzz/ (fuzz/tsconfig.json).
 * The corpus grows in fuzz/corpus/<target>/ (kept between runs, not in git); it is seeded from test/fixtures and, when
 * present, the shared corpus (tools/shared-data.ts). A finding (an input whose exception is not a ConfluxError, or a
 * crash, or a timeout) is written to fuzz/findings/<target>-crash-<sha1> and the run stops: make it a regression
 * test (test/fuzz/findings.test.ts replays every file in fuzz/findings) and fix it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { FIXTURES, SHARED_DATA } from '../tools/shared-data.js';
import { TARGETS, type TargetName } from '../tools/fuzz-targets.js';
import { needsGlibcCompat, patchAddon } from './glibc-compat.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const OUT = path.join(ROOT, 'dist-fuzz');

/** Seeds per target, and the largest input libFuzzer makes (its default, 4 KB, cuts every DICOM file). */
const PLAN: Record<TargetName, { seeds: string[]; maxLen: number }> = {
  hl7v2: { seeds: ['hl7v2'], maxLen: 16_384 },
  astm: { seeds: ['astm', 'hl7v2/corpus/astm'], maxLen: 8_192 },
  'dicom-part10': { seeds: ['dicom'], maxLen: 262_144 },
  'dicom-dcmjs': { seeds: ['dicom'], maxLen: 262_144 },
  'fhir-json': { seeds: ['fhir/synthea', 'fhir/r4-examples', 'fhir/inferno-uscore'], maxLen: 65_536 },
};

function usage(): never {
  console.error(`usage: npm run fuzz -- <target> [--seconds N] [--jobs N]\ntargets: ${Object.keys(TARGETS).join(', ')}`);
  process.exit(2);
}

const args = process.argv.slice(2);
const target = args[0] as TargetName | undefined;
if (!target || !(target in TARGETS)) usage();
const flag = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const n = Number(args[i + 1]);
  if (!Number.isInteger(n) || n <= 0) usage();
  return n;
};
const seconds = flag('seconds', 60);

console.error(`compiling the fuzz targets into ${path.relative(ROOT, OUT)}/ …`);
const tsc = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', path.join(ROOT, 'fuzz/tsconfig.json')], { stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);

// The prebuilt libFuzzer addon may need a newer glibc than this system has: load a patched copy instead (glibc-compat.ts).
const jazzerRequire = createRequire(createRequire(import.meta.url).resolve('@jazzer.js/core'));
const addon = path.join(path.dirname(jazzerRequire.resolve('@jazzer.js/fuzzer')), '..', 'prebuilds', `fuzzer-${process.platform}-${process.arch}.node`);
const preload = path.join(OUT, 'addon-redirect.cjs');
let nodeArgs: string[] = [];
if (process.platform === 'linux' && process.arch === 'x64' && existsSync(addon) && !loads(addon) && needsGlibcCompat(readFileSync(addon))) {
  const copy = path.join(OUT, path.basename(addon));
  patchAddon(addon, copy);
  writeFileSync(
    preload,
    `// Written by fuzz/run.ts: loads the glibc-compatible copy of Jazzer.js's addon.\nconst Module = require('node:module');\nconst load = Module._extensions['.node'];\nModule._extensions['.node'] = (m, f) => load(m, f === ${JSON.stringify(addon)} ? ${JSON.stringify(copy)} : f);\n`,
  );
  nodeArgs = ['--require', preload];
  console.error(`the prebuilt fuzzer needs glibc 2.38: using a patched copy (${path.relative(ROOT, copy)})`);
}

const corpus = path.join(ROOT, 'fuzz', 'corpus', target);
const findings = path.join(ROOT, 'fuzz', 'findings');
mkdirSync(corpus, { recursive: true });
mkdirSync(findings, { recursive: true });
const plan = PLAN[target];
const seeds = plan.seeds.flatMap((s) => [path.join(FIXTURES, s), ...(SHARED_DATA ? [path.join(SHARED_DATA, s)] : [])]).filter((d) => existsSync(d));
console.error(`target ${target}: ${seconds} s, corpus ${path.relative(ROOT, corpus)}, seeds ${seeds.map((s) => path.relative(ROOT, s)).join(', ')}`);

const cli = jazzerRequire.resolve('@jazzer.js/core/dist/cli.js');
const child = spawn(
  process.execPath,
  [
    ...nodeArgs,
    cli,
    path.join(OUT, 'fuzz', 'targets', `${target}.js`),
    '--sync',
    '-i', OUT,
    '-e', 'node_modules',
    '--',
    `-max_total_time=${seconds}`,
    `-max_len=${plan.maxLen}`,
    `-artifact_prefix=${findings}/${target}-`,
    '-print_final_stats=1',
    ...(flag('jobs', 1) > 1 ? [`-jobs=${flag('jobs', 1)}`, `-workers=${flag('jobs', 1)}`] : []),
    corpus,
    ...seeds,
  ],
  { stdio: 'inherit', cwd: ROOT },
);
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));

function loads(file: string): boolean {
  try {
    process.dlopen({ exports: {} } as NodeJS.Module, file);
    return true;
  } catch {
    return false;
  }
}
