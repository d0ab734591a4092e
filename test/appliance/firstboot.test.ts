import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cliPath, dhcpProps, staticProps, tempDir, TOKEN, writeEnv } from './helpers.js';

function firstboot(...args: string[]) {
  return spawnSync(process.execPath, [cliPath, 'firstboot', ...args], { encoding: 'utf8' });
}

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

test('vbproxy firstboot writes the config, its secrets 0600, hostname, network, NTP and SSH files', (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'root');
  const env = writeEnv(dir, staticProps());
  const r = firstboot('--ovf-env', env, '--root', root, '--no-apply');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /read the OVF environment from .*ovf-env\.xml \(12 properties\)/);
  assert.match(r.stdout, /done: vbproxy-02 will register with https:\/\/manager\.example\.com:8443\//);
  assert.ok(!r.stdout.includes(TOKEN) && !r.stderr.includes(TOKEN), 'the token is never printed');

  const config = JSON.parse(readFileSync(join(root, 'etc/vbproxy/config.json'), 'utf8'));
  assert.deepEqual(config.proxy, { name: 'vbproxy-02.lab.example.com' });
  assert.equal(config.manager.url, 'https://manager.example.com:8443/');
  assert.equal(config.manager.enrollmentTokenFile, '/etc/vbproxy/secrets/enrollment-token');
  assert.equal(config.manager.caFile, undefined);
  assert.deepEqual(config.api, {
    listen: '0.0.0.0',
    port: 8443,
    tls: { certFile: '/etc/vbproxy/tls/api.crt', keyFile: '/etc/vbproxy/secrets/api.key' },
    tokensFile: '/var/lib/vbproxy/secrets/api-tokens.json',
  });
  for (const k of ['database', 'redis', 'repository', 'catalog', 'vddk', 'logLevel']) assert.ok(k in config, k);
  assert.ok(!JSON.stringify(config).includes(TOKEN), 'the config holds the token file, not the token');

  const token = join(root, 'etc/vbproxy/secrets/enrollment-token');
  assert.equal(readFileSync(token, 'utf8').trim(), TOKEN);
  for (const secret of ['enrollment-token', 'catalog.key', 'repository-passphrase', 'api.key']) {
    assert.equal(mode(join(root, 'etc/vbproxy/secrets', secret)), 0o600, secret);
  }
  assert.equal(mode(join(root, 'etc/vbproxy/secrets')), 0o750);
  assert.match(readFileSync(join(root, 'etc/vbproxy/secrets/catalog.key'), 'utf8'), /^[0-9a-f]{64}\n$/);

  const cert = spawnSync('openssl', ['x509', '-noout', '-ext', 'subjectAltName', '-in', join(root, 'etc/vbproxy/tls/api.crt')], {
    encoding: 'utf8',
  });
  assert.equal(cert.status, 0, cert.stderr);
  assert.match(cert.stdout, /DNS:vbproxy-02, DNS:vbproxy-02\.lab\.example\.com, IP Address:10\.0\.10\.21/);

  assert.equal(readFileSync(join(root, 'etc/hostname'), 'utf8'), 'vbproxy-02\n');
  assert.match(readFileSync(join(root, 'etc/hosts'), 'utf8'), /^127\.0\.1\.1\tvbproxy-02\.lab\.example\.com vbproxy-02$/m);
  const network = readFileSync(join(root, 'etc/systemd/network/10-vbproxy.network'), 'utf8');
  assert.match(network, /^Address=10\.0\.10\.21\/24$/m);
  assert.match(network, /^Gateway=10\.0\.10\.1$/m);
  assert.match(network, /^DNS=10\.0\.10\.2\nDNS=10\.0\.10\.3$/m);
  assert.match(network, /^Domains=lab\.example\.com$/m);
  assert.doesNotMatch(network, /DHCP=/);
  assert.match(readFileSync(join(root, 'etc/systemd/timesyncd.conf.d/50-vbproxy.conf'), 'utf8'), /^NTP=ntp1\.example\.com 10\.0\.10\.2$/m);
  assert.match(readFileSync(join(root, 'etc/ssh/authorized_keys/vbadmin'), 'utf8'), /^ssh-ed25519 AAAA\S+ admin@example$/m);
  assert.ok(existsSync(join(root, 'var/lib/vbproxy/firstboot.done')));
});

test('DHCP: the network file asks for DHCP; no NTP drop-in without NTP servers', (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'root');
  const r = firstboot('--ovf-env', writeEnv(dir, dhcpProps()), '--root', root, '--no-apply');
  assert.equal(r.status, 0, r.stderr);
  const network = readFileSync(join(root, 'etc/systemd/network/10-vbproxy.network'), 'utf8');
  assert.match(network, /^DHCP=yes$/m);
  assert.doesNotMatch(network, /^Address=/m);
  assert.ok(!existsSync(join(root, 'etc/systemd/timesyncd.conf.d/50-vbproxy.conf')));
});

test('first boot runs once; --force runs again and keeps the secrets it generated', (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'root');
  const env = writeEnv(dir, dhcpProps());
  assert.equal(firstboot('--ovf-env', env, '--root', root, '--no-apply').status, 0);
  const key = readFileSync(join(root, 'etc/vbproxy/secrets/catalog.key'), 'utf8');
  const passphrase = readFileSync(join(root, 'etc/vbproxy/secrets/repository-passphrase'), 'utf8');

  const same = firstboot('--ovf-env', env, '--root', root, '--no-apply', '--force');
  assert.equal(same.status, 0, same.stderr);
  assert.doesNotMatch(same.stdout, /generated/, 'the same settings keep every generated secret and the certificate');

  const again = firstboot('--ovf-env', env, '--root', root, '--no-apply');
  assert.equal(again.status, 0);
  assert.match(again.stdout, /already completed .*use --force to run again/);

  const forced = firstboot('--ovf-env', writeEnv(dir, { ...dhcpProps(), 'system.hostname': 'renamed' }), '--root', root, '--no-apply', '--force');
  assert.equal(forced.status, 0, forced.stderr);
  assert.doesNotMatch(forced.stdout, /generated .*catalog\.key/);
  assert.equal(readFileSync(join(root, 'etc/hostname'), 'utf8'), 'renamed\n');
  assert.match(forced.stdout, /generated \/etc\/vbproxy\/tls\/api\.crt/, 'a renamed host gets a certificate with its new name');
  const san = spawnSync('openssl', ['x509', '-noout', '-ext', 'subjectAltName', '-in', join(root, 'etc/vbproxy/tls/api.crt')], {
    encoding: 'utf8',
  });
  assert.match(san.stdout, /DNS:renamed/);
  assert.equal(readFileSync(join(root, 'etc/vbproxy/secrets/catalog.key'), 'utf8'), key);
  assert.equal(readFileSync(join(root, 'etc/vbproxy/secrets/repository-passphrase'), 'utf8'), passphrase);
});

test('bad properties: exit 1, every problem on stderr, nothing written, first boot not marked done', (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'root');
  mkdirSync(root);
  const env = writeEnv(dir, { ...staticProps(), 'network.prefix': '40', 'manager.enrollment_token': 'x y', 'system.hostname': 'a..b' });
  const r = firstboot('--ovf-env', env, '--root', root, '--no-apply');
  assert.equal(r.status, 1);
  const lines = r.stderr.trim().split('\n');
  assert.ok(lines.every((l) => l.startsWith('vbproxy firstboot: ')), 'every line is prefixed for the console and the journal');
  assert.match(lines[0]!, /FAILED: 3 vApp properties have bad values; correct them in the VM's vApp Options/);
  assert.match(r.stderr, /Prefix length \(network\.prefix\): "40" is not a prefix length between 1 and 32/);
  assert.match(r.stderr, /Enrollment token \(manager\.enrollment_token\): is not a valid enrollment token/);
  assert.match(r.stderr, /Hostname \(system\.hostname\): "a\.\.b" is not a valid host name/);
  assert.ok(!existsSync(join(root, 'etc')), 'nothing is written before every property is valid');
  assert.ok(!existsSync(join(root, 'var/lib/vbproxy/firstboot.done')));
});

test('an unreadable OVF environment and usage errors are reported clearly', (t) => {
  const dir = tempDir(t);
  const broken = join(dir, 'broken.xml');
  spawnSync('sh', ['-c', `printf '<Environment' > ${broken}`]);
  const r = firstboot('--ovf-env', broken, '--root', join(dir, 'root'), '--no-apply');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /FAILED: the OVF environment from .*broken\.xml is not readable: not well-formed XML/);

  const usage = firstboot('--source', 'file', '--root', join(dir, 'root'));
  assert.equal(usage.status, 2);
  assert.match(usage.stderr, /--source file needs --ovf-env <file>/);
});

test('first boot reads the ISO transport through --iso', (t) => {
  const dir = tempDir(t);
  const content = join(dir, 'iso');
  mkdirSync(content);
  writeEnv(content, dhcpProps());
  const iso = join(dir, 'env.iso');
  assert.equal(spawnSync('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'OVF ENV', '-o', iso, content]).status, 0);
  const r = firstboot('--iso', iso, '--root', join(dir, 'root'), '--no-apply');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`read the OVF environment from iso:${iso}`));
});
