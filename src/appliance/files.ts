import type { FirstbootSettings } from './settings.js';
import { LAYOUT } from './layout.js';

/** One file first boot writes, with its path in the appliance's file system. */
export interface PlannedFile {
  path: string;
  content: string;
  mode: number;
  /** `service`: owned by the vbproxy user (it must read it); `root`: owned by root. */
  owner: 'root' | 'service';
}

/** The configuration file as first boot writes it (the schema belongs to the config module). */
export interface ApplianceConfig {
  proxy: { name: string };
  manager: { url: string; enrollmentTokenFile: string; credentialsFile: string; caFile?: string };
  api: { listen: string; port: number; tls: { certFile: string; keyFile: string }; tokensFile: string };
  database: { url: string };
  redis: { url: string; prefix: string };
  repository: { path: string; passphraseFile: string };
  catalog: { secretKeyFile: string };
  vddk: { libDir: string; configFile: string };
  logLevel: string;
}

export function renderConfig(s: FirstbootSettings): ApplianceConfig {
  const manager: ApplianceConfig['manager'] = {
    url: s.manager.url,
    enrollmentTokenFile: LAYOUT.enrollmentTokenFile,
    credentialsFile: LAYOUT.credentialsFile,
  };
  if (s.manager.caCertificatePem !== undefined) manager.caFile = LAYOUT.managerCaFile;
  return {
    proxy: { name: s.domain ? `${s.hostname}.${s.domain}` : s.hostname },
    manager,
    api: {
      listen: '0.0.0.0',
      port: LAYOUT.apiPort,
      tls: { certFile: LAYOUT.tlsCertFile, keyFile: LAYOUT.tlsKeyFile },
      tokensFile: LAYOUT.apiTokensFile,
    },
    database: { url: LAYOUT.databaseUrl },
    redis: { url: LAYOUT.redisUrl, prefix: 'vbproxy' },
    repository: { path: LAYOUT.repositoryPath, passphraseFile: LAYOUT.repositoryPassphraseFile },
    catalog: { secretKeyFile: LAYOUT.catalogKeyFile },
    vddk: { libDir: LAYOUT.vddkLibDir, configFile: LAYOUT.vddkConfigFile },
    logLevel: 'info',
  };
}

/** systemd-networkd configuration of the appliance's Ethernet adapter. */
export function renderNetworkFile(s: FirstbootSettings): string {
  const n = s.network;
  const lines = [
    '# Written by vbproxy firstboot from the vApp properties (network.*). Edit the properties, not this file.',
    '[Match]',
    'Type=ether',
    'Name=en* eth*',
    '',
    '[Network]',
  ];
  if (n.mode === 'dhcp') {
    lines.push('DHCP=yes');
  } else {
    lines.push(`Address=${n.address}/${n.prefix}`);
    if (n.gateway) lines.push(`Gateway=${n.gateway}`);
  }
  for (const d of n.dnsServers) lines.push(`DNS=${d}`);
  if (n.searchDomains.length > 0) lines.push(`Domains=${n.searchDomains.join(' ')}`);
  if (s.ntpServers.length > 0) lines.push(`NTP=${s.ntpServers.join(' ')}`);
  lines.push('LinkLocalAddressing=ipv6', '');
  if (n.mode === 'dhcp') {
    lines.push('[DHCPv4]', 'UseDomains=yes', 'UseHostname=no', '');
  }
  return lines.join('\n');
}

/** Every file first boot writes, secrets included, in the order it writes them. */
export function planFiles(s: FirstbootSettings): PlannedFile[] {
  const fqdn = s.domain ? `${s.hostname}.${s.domain}` : s.hostname;
  const files: PlannedFile[] = [
    { path: LAYOUT.enrollmentTokenFile, content: `${s.manager.enrollmentToken}\n`, mode: 0o600, owner: 'service' },
  ];
  if (s.manager.caCertificatePem !== undefined) {
    files.push({ path: LAYOUT.managerCaFile, content: s.manager.caCertificatePem, mode: 0o644, owner: 'root' });
  }
  files.push(
    { path: LAYOUT.configFile, content: `${JSON.stringify(renderConfig(s), null, 2)}\n`, mode: 0o640, owner: 'root' },
    { path: '/etc/hostname', content: `${s.hostname}\n`, mode: 0o644, owner: 'root' },
    {
      path: '/etc/hosts',
      content:
        `127.0.0.1\tlocalhost\n127.0.1.1\t${fqdn === s.hostname ? s.hostname : `${fqdn} ${s.hostname}`}\n\n` +
        '::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n',
      mode: 0o644,
      owner: 'root',
    },
    { path: LAYOUT.networkFile, content: renderNetworkFile(s), mode: 0o644, owner: 'root' },
  );
  if (s.ntpServers.length > 0) {
    files.push({
      path: LAYOUT.timesyncdDropIn,
      content: `# Written by vbproxy firstboot from system.ntp_servers.\n[Time]\nNTP=${s.ntpServers.join(' ')}\n`,
      mode: 0o644,
      owner: 'root',
    });
  }
  files.push({
    path: LAYOUT.adminAuthorizedKeysFile,
    content:
      '# Written by vbproxy firstboot from system.ssh_authorized_key.\n' +
      s.sshAuthorizedKeys.map((k) => `${k}\n`).join(''),
    mode: 0o644,
    owner: 'root',
  });
  return files;
}
