import express, { type NextFunction, type Request, type Response } from 'express';
import type { AccessPolicy } from '../fhir/access.js';
import { FhirError } from '../fhir/outcome.js';
import { httpFailure } from './error-outcome.js';
import type { FhirRequest, FhirResponse, FhirRouter, HttpMethod } from '../fhir/router.js';

export const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const JSON_TYPES = ['application/fhir+json', 'application/json', 'application/json-patch+json'];
const XML_FORMATS = /xml/i;

export type Authenticate = (req: Request) => Promise<AccessPolicy>;

/** Express is only an adapter: it turns HTTP into a FhirRequest, and a FhirResponse back into HTTP. */
export function fhirExpressRouter(router: FhirRouter, authenticate: Authenticate, maxBodyBytes: number): express.Router {
  const r = express.Router();
  r.use(negotiateFormat);
  r.use(
    express.raw({
      type: (req) => req.headers['content-length'] !== '0' && req.method !== 'GET',
      limit: maxBodyBytes,
    }),
  );
  r.use(async (req: Request, res: Response, next: NextFunction) => {
    try {
      const access = await authenticate(req);
      const fhirReq = toFhirRequest(req, access);
      const fhirRes = await router.handle(fhirReq);
      send(req, res, fhirReq, fhirRes);
    } catch (err) {
      next(err);
    }
  });
  r.use(fhirErrorHandler);
  return r;
}

/** JSON only: `_format` or an Accept asking for XML alone gets a 406 that says so. */
function negotiateFormat(req: Request, _res: Response, next: NextFunction): void {
  const format = typeof req.query._format === 'string' ? req.query._format : undefined;
  const accept = req.headers.accept ?? '';
  const wantsXmlOnly = (format && XML_FORMATS.test(format)) || (XML_FORMATS.test(accept) && !/json|\*\/\*/.test(accept));
  if (wantsXmlOnly) {
    next(FhirError.of(406, 'not-supported', 'This server speaks FHIR JSON only (application/fhir+json); XML is not supported'));
    return;
  }
  next();
}

function parseBody(req: Request): unknown {
  const raw = req.body;
  if (!Buffer.isBuffer(raw) || raw.length === 0) return undefined;
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') return new URLSearchParams(raw.toString('utf8'));
  if (type && !JSON_TYPES.includes(type)) {
    throw FhirError.of(415, 'not-supported', `Content-Type "${type}" is not supported; send application/fhir+json`);
  }
  const text = raw.toString('utf8');
  const depth = nestingDepth(text);
  if (depth > MAX_JSON_DEPTH) {
    throw FhirError.of(400, 'too-costly', `Request body nests JSON ${depth} levels deep; the limit is ${MAX_JSON_DEPTH} (no FHIR resource needs more)`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw FhirError.of(400, 'structure', `Request body is not valid JSON: ${(err as Error).message}`);
  }
}

/** Deeper JSON would overflow the stack of the recursive steps after parsing (validation, indexing). */
const MAX_JSON_DEPTH = 128;

/** The deepest nesting of objects and arrays in a JSON text, brackets inside strings not counted (one pass, no recursion). */
export function nestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) max = Math.max(max, ++depth);
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

function toFhirRequest(req: Request, access: AccessPolicy): FhirRequest {
  const url = req.originalUrl;
  const q = url.indexOf('?');
  let query: Array<[string, string]> = q < 0 ? [] : [...new URLSearchParams(url.slice(q + 1))];
  let body = parseBody(req);
  if (body instanceof URLSearchParams) {
    // POST [type]/_search: form parameters join the URL's.
    query = [...query, ...body];
    body = undefined;
  }
  const headers: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
  return {
    method: req.method as HttpMethod,
    path: req.path.replace(/^\/+/, '').replace(/\/+$/, ''),
    query: query.filter(([k]) => k !== '_format' && k !== '_pretty'),
    headers,
    body,
    access,
  };
}

function send(req: Request, res: Response, fhirReq: FhirRequest, fhirRes: FhirResponse): void {
  for (const [k, v] of Object.entries(fhirRes.headers ?? {})) res.setHeader(k, v);
  if (fhirReq.method === 'GET' && fhirRes.status === 200 && notModified(req, fhirRes.headers ?? {})) {
    res.status(304).end();
    return;
  }
  const isWrite = fhirReq.method !== 'GET' && fhirRes.outcome !== undefined;
  const prefer = req.get('prefer') ?? '';
  res.status(fhirRes.status);
  if (isWrite && /return=minimal/.test(prefer)) {
    res.setHeader('Content-Type', FHIR_JSON);
    res.end();
  } else if (isWrite && /return=OperationOutcome/i.test(prefer)) {
    endJson(res, JSON.stringify(fhirRes.outcome));
  } else {
    endJson(res, fhirRes.json ?? JSON.stringify(fhirRes.resource ?? ''));
  }
}

/**
 * Ends with a JSON string in one socket write. Express's `send` turns a body over 1,000 characters into a Buffer,
 * which Node writes apart from the headers (two syscalls a response, 12 % of a read's CPU in the profile), and
 * hashes it for an ETag that FHIR does not want (ours is the version).
 */
function endJson(res: Response, json: string): void {
  res.setHeader('Content-Type', FHIR_JSON);
  res.setHeader('Content-Length', Buffer.byteLength(json));
  res.end(json);
}

/** If-None-Match on the ETag, or If-Modified-Since against Last-Modified (second precision, as HTTP dates are). */
function notModified(req: Request, headers: Record<string, string>): boolean {
  const inm = req.get('if-none-match');
  if (inm && headers.ETag) {
    const norm = (s: string) => s.trim().replace(/^W\//, '');
    return inm.split(',').some((t) => t.trim() === '*' || norm(t) === norm(headers.ETag));
  }
  const ims = req.get('if-modified-since');
  if (ims && headers['Last-Modified']) {
    const since = Date.parse(ims);
    return !Number.isNaN(since) && Date.parse(headers['Last-Modified']) <= since;
  }
  return false;
}

/** Every failure leaves as an OperationOutcome: no HTML error pages, no stack traces. */
export function fhirErrorHandler(err: unknown, _req: Request, res: Response, _next: NextFunction): void {
  const f = httpFailure(err);
  if (f.internal) console.error('[fhir] unhandled error:', err);
  if (res.headersSent) return;
  for (const [k, v] of Object.entries(f.headers)) res.setHeader(k, v);
  res.status(f.status);
  endJson(res, JSON.stringify(f.outcome));
}
