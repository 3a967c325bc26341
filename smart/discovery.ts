/** SMART App Launch 2.x discovery, the JWKS, the style file, and the CapabilityStatement security block. */
import express from 'express';
import type { CapabilityStatementRestSecurity } from '@medplum/fhirtypes';
import { ASSERTION_ALGS } from './client-auth.js';
import { authUrl, fhirBase, type SmartCore } from './core.js';
import { SPECIAL_SCOPES } from './scopes.js';

export const CAPABILITIES = [
  'launch-ehr',
  'launch-standalone',
  'client-public',
  'client-confidential-symmetric',
  'client-confidential-asymmetric',
  'context-ehr-patient',
  'context-ehr-encounter',
  'context-standalone-patient',
  'permission-offline',
  'permission-online',
  'permission-patient',
  'permission-user',
  'permission-v1',
  'permission-v2',
  'sso-openid-connect',
  'authorize-post',
  'context-banner',
  'context-style',
];

export function smartConfiguration(core: SmartCore): Record<string, unknown> {
  return {
    issuer: fhirBase(core),
    jwks_uri: authUrl(core, 'jwks'),
    authorization_endpoint: authUrl(core, 'authorize'),
    token_endpoint: authUrl(core, 'token'),
    introspection_endpoint: authUrl(core, 'introspect'),
    revocation_endpoint: authUrl(core, 'revoke'),
    grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types_supported: ['code'],
    scopes_supported: [
      ...SPECIAL_SCOPES,
      'patient/*.read',
      'patient/*.rs',
      'patient/*.cruds',
      'user/*.read',
      'user/*.rs',
      'user/*.cruds',
      'system/*.read',
      'system/*.rs',
      'system/*.cruds',
    ],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGS,
    id_token_signing_alg_values_supported: [core.settings.signingAlg],
    subject_types_supported: ['public'],
    capabilities: CAPABILITIES,
  };
}

export function capabilitySecurity(core: SmartCore): CapabilityStatementRestSecurity {
  // A getter per field: the base URL of a test server is only known after it started listening.
  const ext = () => [
    { url: 'token', valueUri: authUrl(core, 'token') },
    { url: 'authorize', valueUri: authUrl(core, 'authorize') },
    { url: 'introspect', valueUri: authUrl(core, 'introspect') },
    { url: 'revoke', valueUri: authUrl(core, 'revoke') },
  ];
  return {
    cors: true,
    service: [
      {
        coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }],
        text: 'OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)',
      },
    ],
    get extension() {
      return [{ url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris', extension: ext() }];
    },
    description: 'SMART App Launch 2.x (EHR and standalone launch, PKCE S256) and SMART Backend Services (private_key_jwt).',
  } as CapabilityStatementRestSecurity;
}

export function discoveryRoutes(core: SmartCore): express.Router {
  const r = express.Router();
  const cors = (res: express.Response) => res.setHeader('Access-Control-Allow-Origin', '*');
  r.get('/fhir/.well-known/smart-configuration', (_req, res) => {
    cors(res);
    res.json(smartConfiguration(core));
  });
  r.get('/auth/jwks', async (_req, res) => {
    cors(res);
    res.setHeader('Cache-Control', 'public, max-age=300');
    res.type('application/jwk-set+json').send(JSON.stringify(await core.keys.jwks()));
  });
  r.get('/auth/smart-style.json', (_req, res) => {
    cors(res);
    res.json({
      color_background: '#f4f6f8',
      color_error: '#b00020',
      color_highlight: '#2a6db5',
      color_modal_backdrop: '',
      color_success: '#2e7d32',
      color_text: '#1d2730',
      dim_border_radius: '8px',
      dim_font_size: '15px',
      dim_spacing_size: '16px',
      font_family_body: 'system-ui, sans-serif',
      font_family_heading: 'system-ui, sans-serif',
    });
  });
  return r;
}
