import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, tempDir } from './helpers.js';

function packer(args: string[], cwd = repoRoot) {
  return spawnSync('packer', args, { cwd, encoding: 'utf8', env: { ...process.env, CHECKPOINT_DISABLE: '1', PACKER_LOG: '' } });
}

/** A stand-in for the npm pack tarball: validate only checks that the file exists. */
function tarball(t: import('node:test').TestContext): string {
  const p = join(tempDir(t), 'vbproxy.tgz');
  writeFileSync(p, '');
  return p;
}

test('packer validate passes on the template (vsphere-iso and qemu sources)', (t) => {
  const r = packer(['validate', '-var-file=packer/validate.pkrvars.hcl', `-var=vbproxy_tarball=${tarball(t)}`, 'packer/']);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  const inspect = packer(['inspect', 'packer/']);
  assert.equal(inspect.status, 0, inspect.stderr);
  assert.match(inspect.stdout, /vsphere-iso\.vbproxy/);
  assert.match(inspect.stdout, /qemu\.vbproxy/);
});

test('packer validate catches a mistake (the check above can fail)', (t) => {
  const dir = tempDir(t);
  cpSync(join(repoRoot, 'packer'), join(dir, 'packer'), { recursive: true });
  const p = join(dir, 'packer', 'vbproxy.pkr.hcl');
  writeFileSync(p, readFileSync(p, 'utf8').replace('disk_controller_type', 'disk_controler_type'));
  const r = packer(['validate', `-var-file=${join(dir, 'packer/validate.pkrvars.hcl')}`, `-var=vbproxy_tarball=${tarball(t)}`, join(dir, 'packer')]);
  assert.notEqual(r.status, 0);
  assert.match(`${r.stdout}${r.stderr}`, /Unsupported argument/);
});

test('the template is in canonical packer fmt form', () => {
  const r = packer(['fmt', '-check', 'packer/']);
  assert.equal(r.status, 0, `not formatted: ${r.stdout}`);
});

test('both sources run the same provisioning scripts, and each script exists and passes shellcheck', () => {
  const hcl = readFileSync(join(repoRoot, 'packer/vbproxy.pkr.hcl'), 'utf8');
  const listed = [...hcl.matchAll(/"(appliance\/provision\/[^"]+\.sh)"/g)].map((m) => m[1]!);
  const onDisk = readdirSync(join(repoRoot, 'appliance/provision')).filter((f) => f.endsWith('.sh')).map((f) => `appliance/provision/${f}`);
  assert.deepEqual(listed.sort(), onDisk.sort());
  assert.match(hcl, /sources = \["source\.qemu\.vbproxy", "source\.vsphere-iso\.vbproxy"\]/);
  const scripts = [...onDisk, 'appliance/ova.sh', 'appliance/build.sh', 'appliance/smoke.sh'];
  const r = spawnSync('shellcheck', ['--severity=warning', ...scripts], { cwd: repoRoot, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout);
});

test('the firewall ruleset parses and admits only SSH and the API port', () => {
  const conf = join(repoRoot, 'appliance/files/nftables/nftables.conf');
  const r = spawnSync('nft', ['-c', '-f', conf], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const text = readFileSync(conf, 'utf8');
  assert.match(text, /type filter hook input priority filter; policy drop;/);
  const accepted = [...text.matchAll(/tcp dport \{ ([^}]+) \}/g)].flatMap((m) => m[1]!.split(',').map((s) => s.trim()));
  assert.deepEqual(accepted, ['22', '8443']);
});

test('every file the provisioning scripts install exists in the repository', () => {
  const dir = join(repoRoot, 'appliance/provision');
  const refs: string[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.sh'))) {
    const text = readFileSync(join(dir, f), 'utf8');
    // "$F/x" is appliance/files/x; "$P/systemd/x" and "$P/files/x" are copies of the repository's.
    for (const m of text.matchAll(/"\$F\/([^"$]+)"/g)) refs.push(`appliance/files/${m[1]}`);
    for (const m of text.matchAll(/"\$P\/(systemd|files)\/([^"$]+)"/g)) {
      refs.push(`${m[1] === 'files' ? 'appliance/files' : 'systemd'}/${m[2]}`);
    }
  }
  assert.ok(refs.length >= 15, `found ${refs.length} references`);
  const missing = refs.filter((r) => spawnSync('test', ['-f', join(repoRoot, r)]).status !== 0);
  assert.deepEqual(missing, []);
  const units = readFileSync(join(dir, '20-vbproxy.sh'), 'utf8').match(/for u in ([^;]+);/)![1]!.trim().split(/\s+/);
  assert.deepEqual(
    units.sort(),
    readdirSync(join(repoRoot, 'systemd')).filter((f) => f.endsWith('.service')).sort(),
    '20-vbproxy.sh installs every unit',
  );
});
