import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PropertyValidationError } from '../../src/appliance/errors.js';
import { parseOvfEnvironment } from '../../src/appliance/ovf-env.js';
import { validateProperties } from '../../src/appliance/settings.js';
import { dhcpProps, ovfEnvXml, staticProps, tempDir, TOKEN } from './helpers.js';

function validate(props: Record<string, string>) {
  return validateProperties(parseOvfEnvironment(ovfEnvXml(props), 'test'));
}

/** The issues of a rejected environment, as key -> message. */
function issuesOf(props: Record<string, string>): Map<string, string> {
  try {
    validate(props);
  } catch (err) {
    assert.ok(err instanceof PropertyValidationError, String(err));
    assert.equal(err.code, 'APPLIANCE_BAD_PROPERTY');
    assert.ok(!err.message.includes(TOKEN), 'the enrollment token never appears in an error');
    return new Map(err.issues.map((i) => [i.key, i.message]));
  }
  assert.fail('expected a PropertyValidationError');
}

test('a DHCP deployment validates into settings with DHCP networking', () => {
  const { settings, warnings } = validate(dhcpProps());
  assert.deepEqual(settings.network, { mode: 'dhcp', dnsServers: [], searchDomains: [] });
  assert.equal(settings.hostname, 'vbproxy-01');
  assert.equal(settings.domain, undefined);
  assert.equal(settings.manager.url, 'https://manager.example.com:8443/');
  assert.equal(settings.manager.enrollmentToken, TOKEN);
  assert.deepEqual(warnings, []);
});

test('a static deployment validates: FQDN split, lists parsed, SSH key kept', () => {
  const { settings, warnings } = validate(staticProps());
  assert.deepEqual(settings.network, {
    mode: 'static',
    address: '10.0.10.21',
    prefix: 24,
    gateway: '10.0.10.1',
    dnsServers: ['10.0.10.2', '10.0.10.3'],
    searchDomains: ['lab.example.com'],
  });
  assert.equal(settings.hostname, 'vbproxy-02');
  assert.equal(settings.domain, 'lab.example.com');
  assert.deepEqual(settings.ntpServers, ['ntp1.example.com', '10.0.10.2']);
  assert.equal(settings.sshAuthorizedKeys.length, 1);
  assert.deepEqual(warnings, []);
});

test('static IPv6 works with a prefix up to 128', () => {
  const { settings } = validate({
    ...staticProps(),
    'network.address': '2001:db8:10::21',
    'network.prefix': '64',
    'network.gateway': '2001:db8:10::1',
    'network.dns_servers': '2001:db8:10::53',
  });
  assert.equal(settings.network.mode, 'static');
  assert.equal(settings.network.mode === 'static' && settings.network.prefix, 64);
});

test('every bad property is reported at once, by label and key, with what a good value looks like', () => {
  const issues = issuesOf({
    ...staticProps(),
    'manager.url': 'manager.example.com',
    'manager.enrollment_token': 'short',
    'system.hostname': '-bad_host-',
    'system.ntp_servers': 'ntp1.example.com, not a host!',
    'system.ssh_authorized_key': 'ssh-dss AAAAB3Nza oldkey',
    'network.address': '10.0.10.300',
    'network.prefix': '33',
    'network.gateway': 'gw',
    'network.dns_servers': '8.8.8.8, dns.example.com',
  });
  assert.deepEqual([...issues.keys()].sort(), [
    'manager.enrollment_token',
    'manager.url',
    'network.address',
    'network.dns_servers',
    'network.gateway',
    'network.prefix',
    'system.hostname',
    'system.ntp_servers',
    'system.ssh_authorized_key',
  ]);
  assert.match(issues.get('manager.url')!, /is not a URL; expected e\.g\. https:\/\//);
  assert.match(issues.get('manager.enrollment_token')!, /has 5 characters.*copy the token from the manager again/);
  assert.match(issues.get('system.hostname')!, /"-bad_host-" is not a valid host name/);
  assert.match(issues.get('network.prefix')!, /"33" is not a prefix length between 1 and 32/);
  assert.match(issues.get('network.address')!, /"10\.0\.10\.300" is not an IP address/);
  assert.match(issues.get('network.dns_servers')!, /"dns\.example\.com" is not an IP address/);
  assert.match(issues.get('system.ssh_authorized_key')!, /not an OpenSSH public key/);
});

test('the whole message names the vSphere Client place to fix it and every label', () => {
  try {
    validate({ ...dhcpProps(), 'network.mode': 'manual', 'system.hostname': '' });
    assert.fail('expected an error');
  } catch (err) {
    assert.ok(err instanceof PropertyValidationError);
    assert.match(err.message, /^2 vApp properties have bad values; correct them in the VM's vApp Options/);
    assert.match(err.message, /- IP configuration \(network\.mode\): "manual" is not an IP configuration; choose dhcp or static/);
    assert.match(err.message, /- Hostname \(system\.hostname\): is required but empty/);
  }
});

test('required properties: manager URL, token, hostname, IP configuration', () => {
  const issues = issuesOf({});
  assert.deepEqual([...issues.keys()].sort(), ['manager.enrollment_token', 'manager.url', 'network.mode', 'system.hostname']);
  for (const m of issues.values()) assert.equal(m, 'is required but empty');
});

test('static networking needs address and prefix; the gateway must be in the subnet', () => {
  const missing = issuesOf({ ...staticProps(), 'network.address': '', 'network.prefix': '' });
  assert.match(missing.get('network.address')!, /required when the IP configuration is static/);
  assert.match(missing.get('network.prefix')!, /required when the IP configuration is static/);

  const cidr = issuesOf({ ...staticProps(), 'network.address': '10.0.10.21/24' });
  assert.match(cidr.get('network.address')!, /give the prefix length in its own property/);

  const outside = issuesOf({ ...staticProps(), 'network.gateway': '10.0.11.1' });
  assert.deepEqual([...outside.keys()], ['network.gateway']);
  assert.match(outside.get('network.gateway')!, /10\.0\.11\.1 is not in the subnet 10\.0\.10\.21\/24/);

  const family = issuesOf({ ...staticProps(), 'network.gateway': 'fe80::1' });
  assert.match(family.get('network.gateway')!, /not of the same IP version/);
});

test('a manager URL must be http(s) without credentials, query or fragment', () => {
  assert.match(issuesOf({ ...dhcpProps(), 'manager.url': 'ftp://m.example.com/' }).get('manager.url')!, /uses ftp:/);
  assert.match(
    issuesOf({ ...dhcpProps(), 'manager.url': 'https://admin:pw@m.example.com/' }).get('manager.url')!,
    /must not contain a user name or password/,
  );
  assert.match(issuesOf({ ...dhcpProps(), 'manager.url': 'https://m.example.com/?x=1' }).get('manager.url')!, /query or fragment/);
});

test('warnings: plain http, unknown properties, static values ignored with DHCP, no gateway or DNS', () => {
  const { warnings } = validate({
    ...dhcpProps(),
    'manager.url': 'http://10.0.0.5:8080/',
    'network.address': '10.0.0.9',
    'guestinfo.future_setting': 'x',
  });
  assert.equal(warnings.length, 3);
  assert.ok(warnings.some((w) => /plain http: the enrollment token crosses the network unencrypted/.test(w)));
  assert.ok(warnings.some((w) => /ignoring the unknown vApp property "guestinfo\.future_setting"/.test(w)));
  assert.ok(warnings.some((w) => /network\.mode is dhcp: ignoring network\.address/.test(w)));

  const s = validate({ ...staticProps(), 'network.gateway': '', 'network.dns_servers': '' });
  assert.ok(s.warnings.some((w) => /no gateway given/.test(w)));
  assert.ok(s.warnings.some((w) => /no DNS servers given/.test(w)));
});

test('the manager CA certificate is accepted as base64 of a PEM file or as PEM, and rejected otherwise', (t) => {
  const dir = tempDir(t);
  const r = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30', '-subj', '/CN=Test CA',
      '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem')],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  const pem = readFileSync(join(dir, 'ca.pem'), 'utf8');
  const b64 = validate({ ...dhcpProps(), 'manager.ca_certificate': Buffer.from(pem).toString('base64') });
  assert.equal(b64.settings.manager.caCertificatePem?.trim(), pem.trim());
  const raw = validate({ ...dhcpProps(), 'manager.ca_certificate': pem });
  assert.equal(raw.settings.manager.caCertificatePem?.trim(), pem.trim());
  const bad = issuesOf({ ...dhcpProps(), 'manager.ca_certificate': Buffer.from('hello').toString('base64') });
  assert.match(bad.get('manager.ca_certificate')!, /is not a PEM certificate; .*base64 -w0 ca\.pem/);
});
