/**
 * A real headless Chromium signs in and consents on the server's pages, driving a fhirclient app (standalone
 * launch with the patient picker). Skipped only when no Chromium is installed (apt-get install chromium).
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabases } from '../helpers/db.js';
import { startApp } from './flow.js';
import { seedPatients, type SmartTestServer, startSmartServer } from './helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

describe.skipIf(!existsSync(CHROMIUM))('login and consent in headless Chromium', () => {
  let s: SmartTestServer;
  let drop: () => Promise<void>;
  let browser: Browser;
  let d: Awaited<ReturnType<typeof seedPatients>>;

  beforeAll(async () => {
    const opened = await testDatabases()[0].open();
    drop = opened.drop;
    s = await startSmartServer(opened.db);
    d = await seedPatients(s);
    await s.admin('POST', '/users', { username: 'nurse', password: 'nurse-password', fhir_user: 'Practitioner/n1' });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await s?.stop();
    await drop?.();
  });

  it('signs in, picks a patient, unticks a scope, allows, and the app reads only what was granted', async () => {
    const cfg = { clientId: '', scope: 'launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs', iss: s.fhir, alsoRead: () => [`Observation/${d.aliceLab.id}`] };
    const app = await startApp(cfg);
    try {
      cfg.clientId = (await s.admin('POST', '/clients', { name: 'Chromium app', redirect_uris: [app.redirectUri] })).body.client_id;
      const page = await browser.newPage();
      await page.goto(`${app.base}/standalone`);
      expect(page.url()).toContain('/auth/authorize');
      await expect(page.title()).resolves.toContain('Sign in');
      // a wrong password first
      await page.fill('#username', 'nurse');
      await page.fill('#password', 'wrong-password');
      await page.click('#login');
      expect(await page.textContent('#error')).toContain('Wrong username or password');
      await page.fill('#password', 'nurse-password');
      await page.click('#login');
      await page.waitForURL(/\/auth\/consent/);
      expect(await page.textContent('h1')).toContain('Chromium app');
      await page.getByLabel(/Alice Anders/).check();
      await page.locator('input[name="scope"][value="patient/Observation.rs"]').uncheck();
      await page.click('#allow');
      await page.waitForSelector('#done');
      expect(await page.textContent('#done')).toContain(d.alice.id!);
      const r = await app.result;
      expect(r.patientId).toBe(d.alice.id);
      expect(r.tokenResponse.scope).not.toContain('patient/Observation.rs');
      expect(r.reads).toEqual({ [`Patient/${d.alice.id}`]: 200, [`Observation/${d.aliceLab.id}`]: 403 });
      // The pages refuse to be framed.
      const res = await page.request.get(`${s.base}/auth/authorize?client_id=x`);
      expect(res.headers()['x-frame-options']).toBe('DENY');
      await page.close();
    } finally {
      await app.close();
    }
  }, 60_000);
});
