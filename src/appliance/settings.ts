import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { PropertyValidationError, type PropertyIssue } from './errors.js';
import type { OvfEnvironment } from './ovf-env.js';
import { VAPP_PROPERTIES, vappProperty, type VappPropertyKey } from './properties.js';

/** Network settings for the appliance's first Ethernet adapter. */
export type NetworkSettings =
  | { mode: 'dhcp'; dnsServers: string[]; searchDomains: string[] }
  | {
      mode: 'static';
      address: string;
      prefix: number;
      gateway?: string;
      dnsServers: string[];
      searchDomains: string[];
    };

/** Everything first boot needs, validated. */
export interface FirstbootSettings {
  manager: { url: string; enrollmentToken: string; caCertificatePem?: string };
  /** The host name (first label) and the domain (the rest of a fully qualified name, if given). */
  hostname: string;
  domain?: string;
  ntpServers: string[];
  sshAuthorizedKeys: string[];
  network: NetworkSettings;
}

export interface ValidatedProperties {
  settings: FirstbootSettings;
  /** Things worth telling the administrator that do not stop first boot. */
  warnings: string[];
}

const HOST_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;
const SSH_KEY = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) ([A-Za-z0-9+/]+={0,3})(?: [^\r\n]*)?$/;

function isHostName(s: string): boolean {
  return s.length <= 253 && s.split('.').every((l) => HOST_LABEL.test(l));
}

/** Splits a list given as commas and/or spaces. */
function list(value: string): string[] {
  return value
    .split(/[\s,;]+/)
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/**
 * Checks every vApp property and turns them into FirstbootSettings. All bad values are reported
 * together in one PropertyValidationError; the value of the enrollment token never appears in it.
 */
export function validateProperties(env: OvfEnvironment): ValidatedProperties {
  const issues: PropertyIssue[] = [];
  const warnings: string[] = [];
  const get = (key: VappPropertyKey): string => (env.properties.get(key) ?? '').trim();
  const issue = (key: VappPropertyKey, message: string): void => {
    issues.push({ key, label: vappProperty(key)!.label, message });
  };

  for (const key of env.properties.keys()) {
    if (!vappProperty(key)) warnings.push(`ignoring the unknown vApp property "${key}" (not used by this version)`);
  }
  for (const p of VAPP_PROPERTIES) {
    if (p.required && get(p.key) === '') issue(p.key, 'is required but empty');
  }

  // Manager
  const rawUrl = get('manager.url');
  let managerUrl = '';
  if (rawUrl !== '') {
    let url: URL | undefined;
    try {
      url = new URL(rawUrl);
    } catch {
      issue('manager.url', `"${rawUrl}" is not a URL; expected e.g. https://manager.example.com:8443/`);
    }
    if (url) {
      if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        issue('manager.url', `"${rawUrl}" uses ${url.protocol}; expected an https:// (or http://) URL`);
      } else if (url.username !== '' || url.password !== '') {
        issue('manager.url', 'must not contain a user name or password; the appliance enrolls with the enrollment token');
      } else if (url.search !== '' || url.hash !== '') {
        issue('manager.url', `"${rawUrl}" must not have a query or fragment; give the manager's base URL`);
      } else {
        managerUrl = url.href;
        if (url.protocol === 'http:') {
          warnings.push(`the manager URL ${url.href} is plain http: the enrollment token crosses the network unencrypted`);
        }
      }
    }
  }
  const token = get('manager.enrollment_token');
  if (token !== '' && (token.length < 16 || token.length > 4096 || /[^\x21-\x7e]/.test(token))) {
    // Never echo the token: describe it only.
    issue(
      'manager.enrollment_token',
      `is not a valid enrollment token (it has ${token.length} characters${/[^\x21-\x7e]/.test(token) ? ', some of them spaces or non-ASCII' : ''}); ` +
        'copy the token from the manager again: 16 to 4096 printable ASCII characters without spaces',
    );
  }
  let caPem: string | undefined;
  const ca = get('manager.ca_certificate');
  if (ca !== '') {
    const pem = normalizePem(ca.includes('-----BEGIN') ? ca : Buffer.from(ca, 'base64').toString('utf8'));
    try {
      if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate');
      const cert = new X509Certificate(pem);
      caPem = cert.toString();
      if (Date.parse(cert.validTo) < Date.now()) {
        warnings.push(`the manager CA certificate (${cert.subject.replace(/\n/g, ', ')}) expired on ${cert.validTo}`);
      }
    } catch {
      issue(
        'manager.ca_certificate',
        'is not a PEM certificate; give the manager CA certificate as base64 of its PEM file (base64 -w0 ca.pem), or leave it empty to trust the system CAs',
      );
    }
  }

  // System
  const fqdn = get('system.hostname').toLowerCase();
  let hostname = '';
  let domain: string | undefined;
  if (fqdn !== '') {
    if (!isHostName(fqdn)) {
      issue(
        'system.hostname',
        `"${fqdn}" is not a valid host name; use letters, digits and hyphens (not at the start or end of a label), ` +
          'labels of at most 63 characters separated by dots, e.g. vbproxy-01 or vbproxy-01.example.com',
      );
    } else {
      const dot = fqdn.indexOf('.');
      hostname = dot < 0 ? fqdn : fqdn.slice(0, dot);
      if (dot >= 0) domain = fqdn.slice(dot + 1);
      if (/^\d+$/.test(hostname)) issue('system.hostname', `"${fqdn}" starts with an all-digit label; a host name needs a letter`);
    }
  }
  const ntpServers = list(get('system.ntp_servers'));
  for (const s of ntpServers) {
    if (isIP(s) === 0 && !isHostName(s)) {
      issue('system.ntp_servers', `"${s}" is neither an IP address nor a host name; give a comma-separated list`);
    }
  }
  const sshAuthorizedKeys: string[] = [];
  const sshRaw = get('system.ssh_authorized_key');
  if (sshRaw !== '') {
    for (const k of sshRaw.split(/\s*(?:\r?\n|\|)\s*/).filter((s) => s !== '')) {
      if (!SSH_KEY.test(k)) {
        issue(
          'system.ssh_authorized_key',
          `"${k.length > 40 ? `${k.slice(0, 40)}...` : k}" is not an OpenSSH public key; paste one line of id_ed25519.pub (ssh-ed25519 AAAA... comment)`,
        );
      } else {
        sshAuthorizedKeys.push(k);
      }
    }
  }

  // Network
  const mode = get('network.mode').toLowerCase();
  const address = get('network.address');
  const prefixRaw = get('network.prefix');
  const gateway = get('network.gateway');
  const dnsServers = list(get('network.dns_servers'));
  const searchDomains = list(get('network.search_domains')).map((d) => d.toLowerCase());
  for (const d of dnsServers) {
    if (isIP(d) === 0) issue('network.dns_servers', `"${d}" is not an IP address; give a comma-separated list of addresses`);
  }
  for (const d of searchDomains) {
    if (!isHostName(d)) issue('network.search_domains', `"${d}" is not a domain name`);
  }
  let network: NetworkSettings | undefined;
  if (mode === 'dhcp') {
    const ignored = (['network.address', 'network.gateway'] as const).filter((k) => get(k) !== '');
    if (ignored.length > 0) warnings.push(`network.mode is dhcp: ignoring ${ignored.join(', ')}`);
    network = { mode: 'dhcp', dnsServers, searchDomains };
  } else if (mode === 'static') {
    const family = isIP(address);
    if (address === '') issue('network.address', 'is required when the IP configuration is static');
    else if (family === 0) {
      issue(
        'network.address',
        `"${address}" is not an IP address${address.includes('/') ? ' (give the prefix length in its own property)' : ''}`,
      );
    }
    let prefix = Number.NaN;
    const max = family === 6 ? 128 : 32;
    if (prefixRaw === '') issue('network.prefix', 'is required when the IP configuration is static');
    else if (!/^\d{1,3}$/.test(prefixRaw) || (prefix = Number(prefixRaw)) < 1 || prefix > max) {
      issue('network.prefix', `"${prefixRaw}" is not a prefix length between 1 and ${max} (e.g. 24 for 255.255.255.0)`);
      prefix = Number.NaN;
    }
    if (gateway !== '') {
      if (isIP(gateway) === 0) issue('network.gateway', `"${gateway}" is not an IP address`);
      else if (family !== 0 && isIP(gateway) !== family) {
        issue('network.gateway', `"${gateway}" is not of the same IP version as the address ${address}`);
      } else if (family === 4 && !Number.isNaN(prefix) && !sameIpv4Subnet(address, gateway, prefix)) {
        issue('network.gateway', `${gateway} is not in the subnet ${address}/${prefix}`);
      }
    } else {
      warnings.push('no gateway given: the appliance reaches only its own subnet');
    }
    if (dnsServers.length === 0 && !isIP(rawUrlHost(rawUrl))) {
      warnings.push('no DNS servers given with a static address: host names (the manager, vCenter) will not resolve');
    }
    if (family !== 0 && !Number.isNaN(prefix)) {
      network = gateway !== '' ? { mode: 'static', address, prefix, gateway, dnsServers, searchDomains } : { mode: 'static', address, prefix, dnsServers, searchDomains };
    }
  } else if (mode !== '') {
    issue('network.mode', `"${mode}" is not an IP configuration; choose dhcp or static`);
  }

  if (issues.length > 0 || !network) throw new PropertyValidationError(issues);
  const settings: FirstbootSettings = {
    manager: caPem === undefined ? { url: managerUrl, enrollmentToken: token } : { url: managerUrl, enrollmentToken: token, caCertificatePem: caPem },
    hostname,
    ntpServers,
    sshAuthorizedKeys,
    network,
  };
  if (domain !== undefined) settings.domain = domain;
  return { settings, warnings };
}

/**
 * A PEM certificate with its line breaks restored: a vApp property is one line, and XML attribute
 * normalisation turns the newlines of a pasted PEM file into spaces.
 */
function normalizePem(text: string): string {
  const m = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(text);
  if (!m) return text;
  const body = m[1]!.replace(/\s+/g, '');
  const lines = body.match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

function rawUrlHost(raw: string): string {
  try {
    return new URL(raw).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return '';
  }
}

function ipv4ToInt(a: string): number {
  return a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

function sameIpv4Subnet(a: string, b: string, prefix: number): boolean {
  const size = 2 ** (32 - prefix);
  return Math.floor(ipv4ToInt(a) / size) === Math.floor(ipv4ToInt(b) / size);
}
