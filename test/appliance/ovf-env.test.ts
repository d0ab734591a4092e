import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { OvfEnvironmentError } from '../../src/appliance/errors.js';
import {
  acquireOvfEnvironment,
  parseOvfEnvironment,
  readFromIso,
  readFromVmtools,
} from '../../src/appliance/ovf-env.js';
import { dhcpProps, ovfEnvXml, tempDir, TOKEN } from './helpers.js';

test('an OVF environment as vCenter writes it yields every property and the platform', () => {
  const env = parseOvfEnvironment(ovfEnvXml(dhcpProps()), 'test');
  assert.equal(env.properties.size, 12);
  assert.equal(env.properties.get('manager.url'), 'https://manager.example.com:8443/');
  assert.equal(env.properties.get('manager.enrollment_token'), TOKEN);
  assert.equal(env.properties.get('network.address'), '');
  assert.equal(env.platform, 'VMware ESXi');
});

test('values with XML entities are decoded', () => {
  const env = parseOvfEnvironment(ovfEnvXml({ 'system.ssh_authorized_key': 'a "b" & <c>' }), 'test');
  assert.equal(env.properties.get('system.ssh_authorized_key'), 'a "b" & <c>');
});

test('a property without oe:value counts as empty; other prefixes for the namespace work', () => {
  const xml = `<e:Environment xmlns:e="http://schemas.dmtf.org/ovf/environment/1">
    <e:PropertySection><e:Property e:key="system.hostname"/></e:PropertySection></e:Environment>`;
  const env = parseOvfEnvironment(xml, 'test');
  assert.equal(env.properties.get('system.hostname'), '');
  assert.equal(env.platform, undefined);
});

test('bad OVF environment documents are rejected with a message naming the source and the problem', () => {
  const cases: Array<[string, RegExp]> = [
    ['<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"><PropertySection>', /iso:\/dev\/sr0 is not readable: not well-formed XML/],
    ['No value found', /iso:\/dev\/sr0 is not readable/],
    ['<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>', /not an OVF environment: its root element is <Envelope>/],
    ['<Environment/>', /not an OVF environment: .*namespace ""/],
    [
      `<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1">
        <PropertySection><Property oe:value="x"/></PropertySection></Environment>`,
      /a <Property> without an oe:key attribute/,
    ],
    [
      `<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1">
        <PropertySection><Property oe:key="a" oe:value="1"/><Property oe:key="a" oe:value="2"/></PropertySection></Environment>`,
      /lists the property "a" twice/,
    ],
  ];
  for (const [xml, message] of cases) {
    assert.throws(
      () => parseOvfEnvironment(xml, 'iso:/dev/sr0'),
      (err: unknown) => err instanceof OvfEnvironmentError && err.code === 'APPLIANCE_OVF_ENV' && message.test(err.message),
      `for ${xml.slice(0, 60)}`,
    );
  }
});

test('the ISO transport: ovf-env.xml is read from an ISO 9660 image without mounting it', (t) => {
  const dir = tempDir(t);
  const content = join(dir, 'content');
  mkdirSync(content);
  writeFileSync(join(content, 'ovf-env.xml'), ovfEnvXml(dhcpProps()));
  const iso = join(dir, 'ovfenv.iso');
  const r = spawnSync('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'OVF ENV', '-o', iso, content], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  const env = readFromIso(iso);
  assert.ok(env);
  assert.equal(env.origin, `iso:${iso}`);
  assert.equal(env.properties.get('system.hostname'), 'vbproxy-01');

  const fromSource = acquireOvfEnvironment({ kind: 'iso', devices: [join(dir, 'missing.iso'), iso] });
  assert.equal(fromSource.properties.get('network.mode'), 'dhcp');
});

test('an ISO without ovf-env.xml, or no CD-ROM at all, is reported with what to enable', (t) => {
  const dir = tempDir(t);
  const content = join(dir, 'content');
  mkdirSync(content);
  writeFileSync(join(content, 'README.TXT'), 'not an OVF environment');
  const iso = join(dir, 'other.iso');
  assert.equal(spawnSync('xorriso', ['-as', 'mkisofs', '-quiet', '-o', iso, content]).status, 0);
  assert.equal(readFromIso(iso), undefined);
  assert.throws(
    () => acquireOvfEnvironment({ kind: 'iso', devices: [iso] }),
    /no ovf-env\.xml on .*other\.iso: enable the "ISO image" OVF environment transport/,
  );
  assert.throws(() => acquireOvfEnvironment({ kind: 'iso', devices: [] }), /any CD-ROM \(none found\)/);
});

test('the VMware Tools transport: the output of vmtoolsd --cmd "info-get guestinfo.ovfEnv"', (t) => {
  const dir = tempDir(t);
  // A stand-in for VMware's vmtoolsd, which exists only inside a VMware VM: same arguments, same output.
  const tool = join(dir, 'vmtoolsd');
  const xmlFile = join(dir, 'env.xml');
  writeFileSync(xmlFile, ovfEnvXml(dhcpProps()));
  writeFileSync(
    tool,
    `#!/bin/sh\n[ "$1" = "--cmd" ] && [ "$2" = "info-get guestinfo.ovfEnv" ] || exit 64\n` +
      `if [ -f "${xmlFile}" ]; then cat "${xmlFile}"; else echo "No value found"; exit 1; fi\n`,
  );
  chmodSync(tool, 0o755);
  const env = readFromVmtools(tool);
  assert.ok(env);
  assert.match(env.origin, /guestinfo\.ovfEnv/);
  assert.equal(env.properties.get('manager.enrollment_token'), TOKEN);

  writeFileSync(xmlFile, '<Environment>');
  assert.throws(() => readFromVmtools(tool), OvfEnvironmentError);

  spawnSync('rm', [xmlFile]);
  assert.equal(readFromVmtools(tool), undefined, '"No value found" means no environment');
  assert.throws(
    () => acquireOvfEnvironment({ kind: 'vmtools', command: tool }),
    /guestinfo\.ovfEnv is empty.*"VMware Tools" OVF environment transport/,
  );
  assert.equal(readFromVmtools(join(dir, 'no-such-vmtoolsd')), undefined);
});

test('a missing OVF environment file is named in the error', (t) => {
  const dir = tempDir(t);
  assert.throws(
    () => acquireOvfEnvironment({ kind: 'file', path: join(dir, 'nope.xml') }),
    /cannot read the OVF environment file .*nope\.xml/,
  );
});
