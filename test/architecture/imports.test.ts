/**
 * The house's dependency rule (DESIGN.md "Layout"): facades and smart/ use the core only through its public module
 * (src/index.ts), src/ never imports a facade or smart/, and a facade never imports another facade.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)));
}

/** Every relative import of a file, resolved to a path from the repository root. */
function imports(file: string): string[] {
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => path.normalize(path.join(path.dirname(file), m[1]!)));
}

describe('dependency rule', () => {
  it('facades and smart/ reach the core only through src/index.ts', () => {
    const deep = [...sources('facades'), ...sources('smart')].flatMap((f) =>
      imports(f)
        .filter((i) => i.startsWith(`src${path.sep}`) && i !== path.join('src', 'index.js'))
        .map((i) => `${f} imports ${i}`),
    );
    expect(deep).toEqual([]);
  });

  it('src/ imports no facade and no smart/; a facade imports no other facade', () => {
    const upward = sources('src').flatMap((f) => imports(f).filter((i) => /^(facades|smart)[\\/]/.test(i)).map((i) => `${f} imports ${i}`));
    const across = sources('facades').flatMap((f) => {
      const own = f.split(path.sep)[1];
      return imports(f)
        .filter((i) => i.startsWith(`facades${path.sep}`) && i.split(path.sep)[1] !== own)
        .map((i) => `${f} imports ${i}`);
    });
    expect([...upward, ...across]).toEqual([]);
  });
});
