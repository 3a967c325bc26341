import fastJsonPatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { badRequest } from './outcome.js';

/** Applies an RFC 6902 JSON Patch; a failed `test` or a bad path is a 400 that says which operation. */
export function applyJsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw badRequest('A JSON Patch body must be an array of operations');
  const error = fastJsonPatch.validate(ops as Operation[], doc);
  if (error) throw badRequest(`JSON Patch operation ${error.index} (${error.operation?.op} ${error.operation?.path}) is invalid: ${error.name}`);
  try {
    return fastJsonPatch.applyPatch(doc, ops as Operation[], false, false).newDocument;
  } catch (err) {
    throw badRequest(`JSON Patch failed: ${(err as Error).message.split('\n')[0]}`);
  }
}
