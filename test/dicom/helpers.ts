import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { parsePart10Header, type ParsedHeader } from '../../facades/dicom/part10.js';
import { fixturePath } from '../../tools/shared-data.js';

/** The pydicom files, all of them in test/fixtures (the corpus holds no more). */
export const DATA = fixturePath('dicom/pydicom');

export function dicomFiles(dir = DATA): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.dcm'))
    .sort()
    .map((f) => path.join(dir, f));
}

export function header(file: string): ParsedHeader {
  return parsePart10Header(readFileSync(file), true) as ParsedHeader;
}

/** A currently free TCP port (for listeners whose port the server does not report back). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a DCMTK tool with Nagle off (docs/design.md) and returns its exit code and output. */
export function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, TCP_NODELAY: '1' }, cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? ((err as unknown as { code: number }).code) : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** storescu proposes only uncompressed syntaxes unless told: propose the file's own compressed syntax. */
export function storescuSyntaxOption(ts: string): string[] {
  const map: Record<string, string> = {
    '1.2.840.10008.1.2.4.50': '-xy',
    '1.2.840.10008.1.2.4.51': '-xx',
    '1.2.840.10008.1.2.4.57': '-xs',
    '1.2.840.10008.1.2.4.70': '-xs',
    '1.2.840.10008.1.2.4.90': '-xv',
    '1.2.840.10008.1.2.4.91': '-xw',
    '1.2.840.10008.1.2.5': '-xr',
    '1.2.840.10008.1.2.1.99': '-xd',
  };
  return map[ts] ? [map[ts]] : [];
}

/** The DICOM facade's services of a running test server (for seeding without a network client). */
export function facadeServices(server: { runtime: object }): import('../../facades/dicom/services.js').DicomServices {
  const svc = (server.runtime as { dicomServices?: import('../../facades/dicom/services.js').DicomServices }).dicomServices;
  if (!svc) throw new Error('the DICOM facade did not register its services on the runtime');
  return svc;
}
