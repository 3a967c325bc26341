import type { CapabilityStatement, CapabilityStatementRestResource, CapabilityStatementRestSecurity } from '@medplum/fhirtypes';
import { getResourceTypes } from '@medplum/core';
import { loadFhirDefinitions } from './definitions.js';
import { supportedSearchParams } from './search/index.js';
import type { FhirRouter } from './router.js';

export interface CapabilityOptions {
  baseUrl: string;
  version: string;
  /** SMART security extension etc., contributed by smart/ when authorization is on. */
  security?: CapabilityStatementRestSecurity;
}

type TypeInteraction = NonNullable<CapabilityStatementRestResource['interaction']>[number]['code'];

const TYPE_INTERACTIONS: TypeInteraction[] = [
  'read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type',
];

/** Built from the running router and search engine, so it states what the code does, not what a file claims. */
export function buildCapabilityStatement(router: FhirRouter, opts: CapabilityOptions): CapabilityStatement {
  loadFhirDefinitions();
  const resource: CapabilityStatementRestResource[] = (getResourceTypes() as string[])
    .filter((t) => t !== 'Resource' && t !== 'DomainResource')
    .sort()
    .map((type) => ({
      type: type as CapabilityStatementRestResource['type'],
      interaction: TYPE_INTERACTIONS.map((code) => ({ code })),
      versioning: 'versioned-update',
      readHistory: true,
      updateCreate: true,
      conditionalCreate: true,
      conditionalRead: 'not-supported',
      conditionalUpdate: true,
      conditionalDelete: 'multiple',
      referencePolicy: ['literal', 'local'],
      searchParam: supportedSearchParams(type).map((p) => ({
        name: p.name,
        type: p.type as 'string',
        ...(p.definition ? { definition: p.definition } : {}),
      })),
      operation: router.operations
        .filter((o) => o.level !== 'system' && (!o.types || o.types.includes(type)))
        .map((o) => ({ name: o.name, definition: o.definition })),
    }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'Conflux', version: opts.version },
    implementation: { description: 'Conflux FHIR R4 server', url: opts.baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        ...(opts.security ? { security: opts.security } : {}),
        resource,
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'history-system' }, { code: 'search-system' }],
        operation: router.operations.filter((o) => o.level === 'system').map((o) => ({ name: o.name, definition: o.definition })),
      },
    ],
  };
}
