/** Server-rendered login, consent (with patient picker) and error pages. No scripts: they work with anything. */
import { parseClinicalScope, SPECIAL_SCOPES } from './scopes.js';

export const esc = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);

function layout(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)} · Conflux</title>
<style>body{font:15px/1.5 system-ui,sans-serif;background:#f4f6f8;color:#1d2730;margin:0}
main{max-width:34rem;margin:3rem auto;background:#fff;border-radius:8px;padding:1.5rem 2rem;box-shadow:0 1px 4px #0002}
h1{font-size:1.3rem;margin-top:0}label{display:block;margin:.6rem 0}input[type=text],input[type=password],input[type=search]{width:100%;padding:.45rem;box-sizing:border-box}
.scope{font-family:ui-monospace,monospace;font-size:13px;color:#456}.err{color:#b00020;font-weight:600}
button{padding:.5rem 1.2rem;margin-right:.5rem;font-size:15px}fieldset{border:1px solid #ccd;border-radius:6px;margin:1rem 0}</style>
</head><body><main>${body}</main></body></html>`;
}

export function errorPage(title: string, message: string): string {
  return layout(title, `<h1>${esc(title)}</h1><p class="err" id="error">${esc(message)}</p>
<p>The application was not redirected, because its request could not be trusted. Contact the application's vendor.</p>`);
}

export function loginPage(o: { requestId: string; clientName: string; error?: string; username?: string }): string {
  return layout(
    'Sign in',
    `<h1>Sign in</h1><p><strong>${esc(o.clientName)}</strong> asks to access FHIR data on your behalf.</p>
${o.error ? `<p class="err" id="error">${esc(o.error)}</p>` : ''}
<form method="post" action="/auth/login">
<input type="hidden" name="request" value="${esc(o.requestId)}">
<label>Username <input type="text" name="username" id="username" autocomplete="username" required value="${esc(o.username ?? '')}"></label>
<label>Password <input type="password" name="password" id="password" autocomplete="current-password" required></label>
<button type="submit" id="login">Sign in</button>
</form>`,
  );
}

const VERBS: Record<string, string> = { c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' };
const SPECIAL_TEXT: Record<(typeof SPECIAL_SCOPES)[number], string> = {
  openid: 'Know who you are (sign-in)',
  fhirUser: 'Know your FHIR identity (e.g. your Practitioner record)',
  profile: 'See your user name',
  launch: 'Receive the context it was launched in (patient, encounter)',
  'launch/patient': 'Work with a patient you pick',
  'launch/encounter': 'Receive the current encounter',
  offline_access: 'Keep access after you close it (until revoked)',
  online_access: 'Keep access while you are signed in',
};

export function describeScope(scope: string): string {
  if (scope in SPECIAL_TEXT) return SPECIAL_TEXT[scope as keyof typeof SPECIAL_TEXT];
  try {
    const s = parseClinicalScope(scope);
    const verbs = [...s.perms].map((p) => VERBS[p]).join(', ');
    const what = s.type === '*' ? 'all resource types' : s.type;
    const whose = s.context === 'patient' ? "of the patient in context" : s.context === 'user' ? 'that you can access' : 'of the whole system';
    const where = s.criteria.length ? ` where ${s.criteria.map(([n, v]) => `${n}=${v}`).join(' and ')}` : '';
    return `${verbs[0].toUpperCase()}${verbs.slice(1)} ${what} ${whose}${where}`;
  } catch {
    return scope;
  }
}

export function consentPage(o: {
  requestId: string;
  clientName: string;
  user: string;
  scopes: string[];
  patients?: Array<{ id: string; label: string }>;
  patientQuery?: string;
  error?: string;
}): string {
  const scopeRows = o.scopes
    .map(
      (s, i) => `<label><input type="checkbox" name="scope" value="${esc(s)}" id="scope-${i}" checked> ${esc(describeScope(s))}
<span class="scope">${esc(s)}</span></label>`,
    )
    .join('\n');
  const picker = o.patients
    ? `<fieldset><legend>Patient</legend>
${o.patients.length ? o.patients.map((p, i) => `<label><input type="radio" name="patient" value="${esc(p.id)}" id="patient-${i}" ${i === 0 && o.patients!.length === 1 ? 'checked' : ''} required> ${esc(p.label)}</label>`).join('\n') : '<p>No patient matches.</p>'}
</fieldset>`
    : '';
  const search = o.patients
    ? `<form method="get" action="/auth/consent"><input type="hidden" name="request" value="${esc(o.requestId)}">
<label>Find patient <input type="search" name="patient_name" id="patient-search" value="${esc(o.patientQuery ?? '')}"></label><button type="submit">Search</button></form>`
    : '';
  return layout(
    'Allow access',
    `<h1>Allow ${esc(o.clientName)}?</h1><p>Signed in as <strong>${esc(o.user)}</strong>. Untick anything you do not want to allow.</p>
${o.error ? `<p class="err" id="error">${esc(o.error)}</p>` : ''}
${search}
<form method="post" action="/auth/consent">
<input type="hidden" name="request" value="${esc(o.requestId)}">
${picker}
<fieldset><legend>Permissions</legend>${scopeRows}</fieldset>
<button type="submit" name="decision" value="allow" id="allow">Allow</button>
<button type="submit" name="decision" value="deny" id="deny" formnovalidate>Deny</button>
</form>`,
  );
}
