/**
 * The files in deploy/ for sites that run Conflux for real: HAProxy accepts deploy/haproxy.cfg (with a certificate
 * made here in place of the site's), and systemd parses deploy/conflux.service (only the install paths it names are
 * missing on a development machine).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { haproxyInstalled } from '../../tools/haproxy.js';
import { repoRoot } from '../helpers/cli.js';

/** True when `cmd` runs here. */
const has = (cmd: string, ...args: string[]) => !spawnSync(cmd, args).error;

describe('deploy/', () => {
  it.skipIf(!haproxyInstalled() || !has('openssl', 'version'))('haproxy.cfg is a configuration HAProxy accepts', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'conflux-deploy-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=conflux.test'], { stdio: 'ignore' });
    writeFileSync(path.join(dir, 'conflux.pem'), readFileSync(path.join(dir, 'cert.pem')) + readFileSync(path.join(dir, 'key.pem'), 'utf8'));
    const cfg = readFileSync(path.join(repoRoot, 'deploy/haproxy.cfg'), 'utf8')
      .replace('/etc/haproxy/conflux.pem', path.join(dir, 'conflux.pem'))
      .replace('/run/haproxy/admin.sock', path.join(dir, 'admin.sock'));
    writeFileSync(path.join(dir, 'haproxy.cfg'), cfg);
    const r = spawnSync('haproxy', ['-c', '-f', path.join(dir, 'haproxy.cfg')], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });

  it.skipIf(!has('systemd-analyze', '--version'))('conflux.service is a unit systemd parses', () => {
    const r = spawnSync('systemd-analyze', ['verify', path.join(repoRoot, 'deploy/conflux.service')], { encoding: 'utf8' });
    const problems = (r.stdout + r.stderr).split('\n').filter((l) => l.trim() && !/is not executable: No such file or directory/.test(l));
    expect(problems).toEqual([]);
  });
});
