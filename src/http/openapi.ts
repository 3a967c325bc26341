import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

// From the package root: compiled, this module runs from dist/src/http/, one folder deeper than src/http/.
const PACKAGE_ROOT = new URL(import.meta.url.endsWith('.ts') ? '../../' : '../../../', import.meta.url);
const OPENAPI_DIR = fileURLToPath(new URL('openapi/', PACKAGE_ROOT));

interface OpenApiDoc {
  openapi: string;
  info: { title: string; version: string; description?: string };
  servers?: Array<{ url: string }>;
  paths: Record<string, Record<string, { summary?: string; description?: string; tags?: string[] }>>;
  components?: Record<string, Record<string, unknown>>;
  tags?: Array<{ name: string; description?: string }>;
}

let cached: OpenApiDoc | undefined;

/**
 * `openapi/openapi.json` is the base document; every other `openapi/*.json` is a fragment
 * (`{ paths, components?, tags? }`) owned by one module (hl7v2, devices, dicomweb, smart, export…).
 */
export function buildOpenApi(version: string, baseUrl: string): OpenApiDoc {
  if (!cached) {
    const base = JSON.parse(readFileSync(path.join(OPENAPI_DIR, 'openapi.json'), 'utf8')) as OpenApiDoc;
    for (const file of readdirSync(OPENAPI_DIR).filter((f) => f.endsWith('.json') && f !== 'openapi.json').sort()) {
      const frag = JSON.parse(readFileSync(path.join(OPENAPI_DIR, file), 'utf8')) as Partial<OpenApiDoc>;
      Object.assign(base.paths, frag.paths ?? {});
      for (const [kind, entries] of Object.entries(frag.components ?? {})) {
        base.components = base.components ?? {};
        base.components[kind] = { ...(base.components[kind] ?? {}), ...entries };
      }
      base.tags = [...(base.tags ?? []), ...(frag.tags ?? [])];
    }
    cached = base;
  }
  return { ...cached, info: { ...cached.info, version }, servers: [{ url: baseUrl }] };
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

/** A readable, dependency-free rendering of the OpenAPI document (works offline, unlike CDN viewers). */
export function docsPage(version: string, baseUrl: string): string {
  const doc = buildOpenApi(version, baseUrl);
  const rows = Object.entries(doc.paths)
    .flatMap(([p, ops]) =>
      Object.entries(ops)
        .filter(([m]) => ['get', 'post', 'put', 'patch', 'delete'].includes(m))
        .map(([m, op]) => `<tr><td class="m ${m}">${m.toUpperCase()}</td><td><code>${esc(p)}</code></td><td>${esc(op.summary ?? '')}${op.description ? `<div class="d">${esc(op.description)}</div>` : ''}</td></tr>`),
    )
    .join('\n');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(doc.info.title)} API</title>
<style>body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}td{border-bottom:1px solid #ddd;padding:.4rem .6rem;vertical-align:top}
.m{font-weight:700;width:5rem}.get{color:#0a6}.post{color:#06c}.put,.patch{color:#a60}.delete{color:#c22}.d{color:#555;font-size:13px}</style>
</head><body><h1>${esc(doc.info.title)} ${esc(version)}</h1><p>${esc(doc.info.description ?? '')}</p>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI ${esc(doc.openapi)})</p>
<table><tbody>${rows}</tbody></table></body></html>`;
}
