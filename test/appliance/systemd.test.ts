import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cliPath, repoRoot, tempDir } from './helpers.js';

const unitDir = join(repoRoot, 'systemd');
const units = readdirSync(unitDir).filter((f) => f.endsWith('.service')).sort();

/** A unit file as key -> values per section (a key may repeat). */
function parseUnit(name: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of readFileSync(join(unitDir, name), 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      continue;
    }
    const eq = line.indexOf('=');
    const key = `${section}.${line.slice(0, eq)}`;
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

function words(u: Map<string, string[]>, key: string): string[] {
  return (u.get(key) ?? []).flatMap((v) => v.split(/\s+/)).filter((w) => w !== '');
}

/** A file system root with the host's systemd units, ours, and /usr/bin/vbproxy. */
function unitRoot(t: import('node:test').TestContext): string {
  const root = tempDir(t, 'vbproxy-units-');
  mkdirSync(join(root, 'usr/lib/systemd'), { recursive: true });
  cpSync('/lib/systemd/system', join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
  mkdirSync(join(root, 'etc/systemd/system'), { recursive: true });
  for (const u of units) cpSync(join(unitDir, u), join(root, 'etc/systemd/system', u));
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  writeFileSync(join(root, 'usr/bin/vbproxy'), `#!/bin/sh\nexec node ${cliPath} "$@"\n`);
  chmodSync(join(root, 'usr/bin/vbproxy'), 0o755);
  return root;
}

test('the units are the API (which also registers with the manager), the worker and first boot', () => {
  assert.deepEqual(units, ['vbproxy-api.service', 'vbproxy-firstboot.service', 'vbproxy-worker.service']);
});

test('systemd-analyze verify passes on every unit with no warning at all', (t) => {
  const root = unitRoot(t);
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', `--root=${root}`, ...units], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'systemd-analyze prints nothing for a clean unit');
});

test('systemd-analyze verify catches a broken unit (the check above can fail)', (t) => {
  const root = unitRoot(t);
  const p = join(root, 'etc/systemd/system/vbproxy-api.service');
  writeFileSync(p, readFileSync(p, 'utf8').replace('ProtectSystem=strict', 'ProtectSytem=strict'));
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', `--root=${root}`, 'vbproxy-api.service'], { encoding: 'utf8' });
  assert.match(r.stderr, /Unknown key 'ProtectSytem'/);
});

test('first boot is a oneshot after the network, PostgreSQL and Redis, before the API and the worker, run once', () => {
  const u = parseUnit('vbproxy-firstboot.service');
  assert.deepEqual(u.get('Service.Type'), ['oneshot']);
  assert.deepEqual(u.get('Service.ExecStart'), ['/usr/bin/vbproxy firstboot']);
  for (const a of ['network-online.target', 'postgresql.service', 'redis-server.service']) assert.ok(words(u, 'Unit.After').includes(a), a);
  assert.ok(words(u, 'Unit.Wants').includes('network-online.target'));
  for (const b of ['vbproxy-api.service', 'vbproxy-worker.service']) {
    assert.ok(words(u, 'Unit.Before').includes(b), b);
  }
  assert.deepEqual(u.get('Unit.ConditionPathExists'), ['!/var/lib/vbproxy/firstboot.done']);
  assert.deepEqual(u.get('Service.StandardOutput'), ['journal'], 'progress in the journal; the CLI writes the outcome to the consoles');
  for (const svc of ['vbproxy-api.service', 'vbproxy-worker.service']) {
    const s = parseUnit(svc);
    assert.ok(words(s, 'Unit.Requires').includes('vbproxy-firstboot.service'), `${svc} requires first boot`);
    assert.ok(words(s, 'Unit.After').includes('vbproxy-firstboot.service'), `${svc} runs after first boot`);
  }
});

test('the services run hardened as the vbproxy user with restart policies; only the worker sees disks, through a group', () => {
  for (const svc of ['vbproxy-api.service', 'vbproxy-worker.service']) {
    const u = parseUnit(svc);
    const one = (k: string): string | undefined => u.get(`Service.${k}`)?.at(-1);
    assert.equal(one('User'), 'vbproxy', svc);
    assert.equal(one('Restart'), 'on-failure', svc);
    assert.equal(one('NoNewPrivileges'), 'yes', svc);
    assert.equal(one('ProtectSystem'), 'strict', svc);
    assert.equal(one('PrivateTmp'), 'yes', svc);
    assert.equal(one('CapabilityBoundingSet'), '', `${svc} has no capabilities`);
    assert.ok(words(u, 'Service.ReadWritePaths').includes('/var/lib/vbproxy'), svc);
  }
  const api = parseUnit('vbproxy-api.service');
  assert.deepEqual(api.get('Service.PrivateDevices'), ['yes']);
  const worker = parseUnit('vbproxy-worker.service');
  assert.deepEqual(worker.get('Service.SupplementaryGroups'), ['vbproxy-disk']);
  assert.deepEqual(worker.get('Service.DevicePolicy'), ['closed']);
  assert.deepEqual(worker.get('Service.DeviceAllow'), ['block-sd rw']);
  assert.match(worker.get('Service.Environment')![0]!, /^LD_LIBRARY_PATH=\/opt\/vmware-vix-disklib-distrib\/lib64$/);
});

test('systemd-analyze security rates the API and the worker as well protected', (t) => {
  const root = unitRoot(t);
  for (const svc of ['vbproxy-api.service', 'vbproxy-worker.service']) {
    const r = spawnSync('systemd-analyze', ['security', '--offline=yes', `--root=${root}`, '--no-pager', svc], { encoding: 'utf8' });
    const m = /Overall exposure level for \S+: (\d+\.\d)/.exec(r.stdout);
    assert.ok(m, r.stdout + r.stderr);
    assert.ok(Number(m[1]) <= 2.5, `${svc} exposure ${m[1]} (0 best, 10 worst)`);
  }
});

test('sysusers creates the vbproxy user and its disk group; tmpfiles creates private directories', (t) => {
  const root = tempDir(t, 'vbproxy-sysusers-');
  mkdirSync(join(root, 'etc'));
  const su = spawnSync('systemd-sysusers', [`--root=${root}`, join(unitDir, 'vbproxy.sysusers')], { encoding: 'utf8' });
  assert.equal(su.status, 0, su.stderr);
  const passwd = readFileSync(join(root, 'etc/passwd'), 'utf8');
  const user = /^vbproxy:x:(\d+):(\d+):[^:]*:\/var\/lib\/vbproxy:\/usr\/sbin\/nologin$/m.exec(passwd);
  assert.ok(user, passwd);
  assert.ok(Number(user[1]) < 1000, 'a system user');
  assert.match(readFileSync(join(root, 'etc/group'), 'utf8'), /^vbproxy-disk:x:\d+:vbproxy$/m);

  const tf = spawnSync('systemd-tmpfiles', [`--root=${root}`, '--create', join(unitDir, 'vbproxy.tmpfiles')], { encoding: 'utf8' });
  assert.equal(tf.status, 0, tf.stderr);
  const st = (p: string) => statSync(join(root, p));
  assert.equal(st('etc/vbproxy/secrets').mode & 0o777, 0o750);
  assert.equal(st('etc/vbproxy/secrets').uid, 0);
  assert.equal(st('etc/vbproxy/secrets').gid, Number(user[2]));
  assert.equal(st('var/lib/vbproxy/secrets').mode & 0o777, 0o700);
  assert.equal(st('var/lib/vbproxy/secrets').uid, Number(user[1]));
});
