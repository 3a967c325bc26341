import net from 'node:net';
import { describe, expect, it } from 'vitest';
import type { OperationOutcome } from '@medplum/fhirtypes';
import { nestingDepth } from '../../src/http/fhir-express.js';
import { testDatabases } from '../helpers/db.js';
import { suiteServer } from '../helpers/server.js';

const JSON_HEADERS = { 'content-type': 'application/fhir+json' };

/** A raw HTTP/1.1 exchange (fetch refuses to send some of these requests), answered as status line and body. */
function rawRequest(port: number, request: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(request));
    const chunks: Buffer[] = [];
    s.on('data', (c) => chunks.push(c));
    s.on('error', reject);
    s.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0), body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
  });
}

describe('JSON nesting depth', () => {
  it('counts objects and arrays, not brackets inside strings or escaped quotes', () => {
    expect(nestingDepth('{"a":[{"b":"[[[{{{"}]}')).toBe(3);
    expect(nestingDepth('{"a":"\\"[[["}')).toBe(1);
    expect(nestingDepth('1')).toBe(0);
  });
});

describe.each(testDatabases())('hostile HTTP input on $name', (backend) => {
  const suite = suiteServer(backend);
  const diagnostics = async (res: Response) => ((await res.json()) as OperationOutcome).issue.map((i) => i.diagnostics).join('\n');

  it('an id that cannot exist, or a path that is not UTF-8, is a 400 that says so, not a 500', async () => {
    const nul = await fetch(`${suite.base}/Patient/%00`);
    expect(nul.status).toBe(400);
    expect(await diagnostics(nul)).toContain('Invalid id');
    const latin = await fetch(`${suite.base}/Patient/%ff%fe`);
    expect(latin.status).toBe(400);
    expect(await diagnostics(latin)).toContain('is not valid percent-encoded UTF-8');
  });

  it('JSON nested 20,000 levels deep is refused with the limit named, and the server goes on answering', async () => {
    const deep = `{"resourceType":"Patient","extension":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    const res = await fetch(`${suite.base}/Patient`, { method: 'POST', headers: JSON_HEADERS, body: deep });
    expect(res.status).toBe(400);
    expect(await diagnostics(res)).toContain('the limit is 128');
    expect((await fetch(`${suite.base}/metadata`)).status).toBe(200);
  });

  it('__proto__ and constructor are not element names: refused, not stored', async () => {
    const res = await fetch(`${suite.base}/Patient`, { method: 'POST', headers: JSON_HEADERS, body: '{"resourceType":"Patient","__proto__":{"x":1},"name":[{"constructor":{"y":2}}]}' });
    expect(res.status).toBe(400);
    const d = await diagnostics(res);
    expect(d).toContain('Invalid additional property "__proto__" (Patient.__proto__)');
    expect(d).toContain('Invalid additional property "constructor" (Patient.name[0].constructor)');
  });

  it('a 100 KB URL is answered 431 with an OperationOutcome that says what to do', async () => {
    const port = Number(new URL(suite.base).port);
    const res = await rawRequest(port, `GET /fhir/Patient?name=${'a'.repeat(100_000)} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    expect(res.status).toBe(431);
    expect((JSON.parse(res.body) as OperationOutcome).issue[0]!.diagnostics).toContain('POST [type]/_search');
  });
});
