import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

/** The repository root (tests run from dist/test/appliance). */
export const repoRoot = new URL('../../../', import.meta.url).pathname;
export const cliPath = join(repoRoot, 'dist', 'src', 'cli', 'main.js');

/** A temporary directory removed when the test ends. */
export function tempDir(t: TestContext, prefix = 'vbproxy-appliance-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function escapeAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
}

/** An OVF environment document as vCenter writes it, with the given properties. */
export function ovfEnvXml(props: Record<string, string>): string {
  const lines = Object.entries(props).map(
    ([k, v]) => `    <Property oe:key="${escapeAttr(k)}" oe:value="${escapeAttr(v)}"/>`,
  );
  return `<?xml version="1.0" encoding="UTF-8"?>
<Environment
     xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:ve="http://www.vmware.com/schema/ovfenv"
     oe:id=""
     ve:vCenterId="vm-1042">
   <PlatformSection>
      <Kind>VMware ESXi</Kind>
      <Version>8.0.2</Version>
      <Vendor>VMware, Inc.</Vendor>
      <Locale>en</Locale>
   </PlatformSection>
   <PropertySection>
${lines.join('\n')}
   </PropertySection>
   <ve:EthernetAdapterSection>
      <ve:Adapter ve:mac="00:50:56:aa:bb:cc" ve:network="VM Network" ve:unitNumber="7"/>
   </ve:EthernetAdapterSection>
</Environment>
`;
}

export const TOKEN = 'enr_7Qm2vXk9PzR4tW8yLc3N';

/** Valid properties for a DHCP deployment. */
export function dhcpProps(): Record<string, string> {
  return {
    'manager.url': 'https://manager.example.com:8443/',
    'manager.enrollment_token': TOKEN,
    'manager.ca_certificate': '',
    'system.hostname': 'vbproxy-01',
    'system.ntp_servers': '',
    'system.ssh_authorized_key': '',
    'network.mode': 'dhcp',
    'network.address': '',
    'network.prefix': '24',
    'network.gateway': '',
    'network.dns_servers': '',
    'network.search_domains': '',
  };
}

/** Valid properties for a static IPv4 deployment. */
export function staticProps(): Record<string, string> {
  return {
    ...dhcpProps(),
    'system.hostname': 'vbproxy-02.lab.example.com',
    'system.ntp_servers': 'ntp1.example.com, 10.0.10.2',
    'system.ssh_authorized_key':
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0bm9uZXhpc3RlbnRrZXlmb3J0ZXN0c29ubHkx admin@example',
    'network.mode': 'static',
    'network.address': '10.0.10.21',
    'network.prefix': '24',
    'network.gateway': '10.0.10.1',
    'network.dns_servers': '10.0.10.2,10.0.10.3',
    'network.search_domains': 'lab.example.com',
  };
}

export function writeEnv(dir: string, props: Record<string, string>, name = 'ovf-env.xml'): string {
  const p = join(dir, name);
  writeFileSync(p, ovfEnvXml(props));
  return p;
}
