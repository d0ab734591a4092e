import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

const cli = new URL('../../src/cli/main.js', import.meta.url).pathname;

test('vbproxy vddk info prints the library, its version, transports and that it is the lab library', () => {
  const r = spawnSync(process.execPath, [cli, 'vddk', 'info', '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout) as {
    library: string;
    version: string;
    lab: boolean;
    transports: string[];
  };
  assert.match(info.library, /native\/lib64\/libvixDiskLib\.so\.8$/);
  assert.equal(info.version, '8.0.0');
  assert.equal(info.lab, true);
  assert.deepEqual(info.transports, ['file', 'san', 'hotadd', 'nbdssl', 'nbd']);
  const text = spawnSync(process.execPath, [cli, 'vddk', 'info'], { encoding: 'utf8' });
  assert.match(text.stdout, /^kind: +lab library \(vbproxy lab VDDK 8\.0\.0-lab\)$/m);
});

test('vbproxy vddk info with a directory without VDDK says what to set (exit 1)', () => {
  const r = spawnSync(process.execPath, [cli, 'vddk', 'info', '--libdir', '/nonexistent'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 1);
  assert.match(
    r.stderr,
    /no libvixDiskLib\.so\.8 or libvixDiskLib\.so\.7 under \/nonexistent\/lib64: set VBPROXY_VDDK_LIBDIR/,
  );
});

test('vbproxy vddk info with a configuration file that cannot be read names it (exit 1)', () => {
  const r = spawnSync(process.execPath, [cli, 'vddk', 'info', '--config', '/nonexistent/vddk.conf'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /VixDiskLib_InitEx failed: The file was not found \[4\]/);
  assert.match(r.stderr, /cannot read the configuration file \/nonexistent\/vddk\.conf/);
});
