import { spawnSync } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, chownSync, closeSync, existsSync, readFileSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describeError } from '../errors.js';
import { FirstbootApplyError } from './errors.js';
import { planFiles, type PlannedFile } from './files.js';
import { LAYOUT } from './layout.js';
import { acquireOvfEnvironment, type OvfEnvSource } from './ovf-env.js';
import { validateProperties, type FirstbootSettings } from './settings.js';

/** uid/gid of the `vbproxy` service account, to own the files the services read. */
export interface ServiceAccount {
  uid: number;
  gid: number;
}

export interface FirstbootOptions {
  /** The appliance's file system root; `/` on the appliance, a temporary directory in tests. */
  root: string;
  source: OvfEnvSource;
  /** Owner of service-readable files; without it files keep the caller's ownership. */
  serviceAccount?: ServiceAccount;
  /** Apply hostname, network and time settings to the running system (only with root `/`). */
  apply: boolean;
  /** Where progress lines go (console and journal on the appliance). */
  report: (line: string) => void;
}

export interface FirstbootResult {
  settings: FirstbootSettings;
  warnings: string[];
  /** Paths (in the appliance) of every file written. */
  written: string[];
  /** Secrets generated because they did not exist yet. */
  generated: string[];
}

/** Looks up the service account with getent; undefined when it does not exist. */
export function lookupServiceAccount(name = 'vbproxy'): ServiceAccount | undefined {
  const r = spawnSync('getent', ['passwd', name], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const f = r.stdout.trim().split(':');
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : undefined;
}

/**
 * Writes `content` to `path` atomically: a temporary file created with the final mode (a secret is
 * never readable by others, not even for a moment), fsync, chown, rename, then fsync of the directory.
 */
export function writeFileAtomic(path: string, content: string | Buffer, mode: number, owner?: ServiceAccount): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    const buf = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  chmodSync(tmp, mode); // openSync's mode is filtered by the umask
  if (owner) chownSync(tmp, owner.uid, owner.gid);
  renameSync(tmp, path);
  const dfd = openSync(dirname(path), 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

function ensureDir(path: string, mode: number, owner?: ServiceAccount): void {
  mkdirSync(path, { recursive: true, mode });
  chmodSync(path, mode);
  if (owner) chownSync(path, 0, owner.gid);
}

function run(cmd: string, args: string[], what: string): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000 });
  if (r.error || r.status !== 0) {
    const detail = r.error ? r.error.message : (r.stderr || r.stdout).trim().split('\n').slice(-3).join(' / ');
    throw new FirstbootApplyError(`${what} failed (${cmd} ${args.join(' ')}): ${detail}`, { cause: r.error });
  }
}

/** The names a certificate for these settings must carry (subjectAltName entries). */
function certificateNames(s: FirstbootSettings): string[] {
  const names = [`DNS:${s.hostname}`];
  if (s.domain) names.push(`DNS:${s.hostname}.${s.domain}`);
  if (s.network.mode === 'static') names.push(`IP:${s.network.address}`);
  return names;
}

/** True when the API certificate exists and names this host (a renamed host gets a new one). */
function certificateMatches(path: string, s: FirstbootSettings): boolean {
  let san: string;
  try {
    san = new X509Certificate(readFileSync(path)).subjectAltName ?? '';
  } catch {
    return false;
  }
  const present = new Set(san.split(/,\s*/).map((n) => n.replace(/^IP Address:/, 'IP:')));
  return certificateNames(s).every((n) => present.has(n));
}

/** A self-signed TLS certificate and key for the API, for the host name and static address. */
function generateTlsCertificate(root: string, s: FirstbootSettings, owner?: ServiceAccount): void {
  const keyPath = join(root, LAYOUT.tlsKeyFile);
  const certPath = join(root, LAYOUT.tlsCertFile);
  mkdirSync(dirname(certPath), { recursive: true });
  const fqdn = s.domain ? `${s.hostname}.${s.domain}` : s.hostname;
  const san = certificateNames(s);
  const tmpKey = `${keyPath}.tmp-${process.pid}`;
  // The key is created 0600 by openssl (umask 077) and only then moved into place.
  const oldUmask = process.umask(0o077);
  try {
    run(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '3650',
        '-subj', `/CN=${fqdn}`, '-addext', `subjectAltName=${san.join(',')}`, '-keyout', tmpKey, '-out', certPath],
      'creating the API TLS certificate',
    );
  } finally {
    process.umask(oldUmask);
  }
  chmodSync(tmpKey, 0o600);
  chmodSync(certPath, 0o644);
  if (owner) chownSync(tmpKey, owner.uid, owner.gid);
  renameSync(tmpKey, keyPath);
}

/**
 * First boot: read the OVF environment, validate every property, write the configuration and its
 * secrets, the host name, network, time and SSH settings, and (on the appliance) apply them.
 * Throws PropertyValidationError listing every bad property, before anything is written.
 */
export function runFirstboot(opts: FirstbootOptions): FirstbootResult {
  const env = acquireOvfEnvironment(opts.source);
  opts.report(`read the OVF environment from ${env.origin} (${env.properties.size} properties)`);
  const { settings, warnings } = validateProperties(env);
  for (const w of warnings) opts.report(`warning: ${w}`);

  const root = opts.root;
  const owner = opts.serviceAccount;
  const at = (p: string): string => join(root, p);
  ensureDir(at(LAYOUT.configDir), 0o755);
  ensureDir(at(LAYOUT.secretsDir), 0o750, owner);
  ensureDir(at(LAYOUT.stateDir), 0o750, owner);
  ensureDir(at(LAYOUT.stateSecretsDir), 0o700, owner);
  if (owner) {
    chownSync(at(LAYOUT.stateDir), owner.uid, owner.gid);
    chownSync(at(LAYOUT.stateSecretsDir), owner.uid, owner.gid);
  }

  const written: string[] = [];
  const write = (f: PlannedFile): void => {
    writeFileAtomic(at(f.path), f.content, f.mode, f.owner === 'service' ? owner : undefined);
    if (f.owner === 'root' && owner && f.path === LAYOUT.configFile) chownSync(at(f.path), 0, owner.gid);
    written.push(f.path);
  };
  try {
    for (const f of planFiles(settings)) write(f);
  } catch (err) {
    throw new FirstbootApplyError(`writing the configuration under ${root} failed: ${describeError(err)}`, { cause: err });
  }

  // Secrets the appliance makes itself, once: kept across a re-run so that data stays readable.
  const generated: string[] = [];
  const generate = (path: string, content: () => string): void => {
    if (existsSync(at(path))) return;
    writeFileAtomic(at(path), content(), 0o600, owner);
    generated.push(path);
  };
  // 64 hex characters: the format SecretBox.fromKeyFile (src/catalog/secret-box.ts) reads.
  generate(LAYOUT.catalogKeyFile, () => `${randomBytes(32).toString('hex')}\n`);
  generate(LAYOUT.repositoryPassphraseFile, () => `${randomBytes(32).toString('base64url')}\n`);
  if (!existsSync(at(LAYOUT.tlsKeyFile)) || !certificateMatches(at(LAYOUT.tlsCertFile), settings)) {
    generateTlsCertificate(root, settings, owner);
    generated.push(LAYOUT.tlsKeyFile, LAYOUT.tlsCertFile);
  }
  for (const g of generated) opts.report(`generated ${g}`);
  for (const w of written) opts.report(`wrote ${w}`);

  if (opts.apply) applyToRunningSystem(settings, opts.report);

  writeFileAtomic(
    at(LAYOUT.firstbootDoneFile),
    `${JSON.stringify({ completedAt: new Date().toISOString(), origin: env.origin })}\n`,
    0o644,
  );
  return { settings, warnings, written, generated };
}

/** The catalog's PostgreSQL role and database (peer authentication over the local socket). */
function ensureDatabase(report: (line: string) => void): void {
  const query = (sql: string): string => {
    const r = spawnSync('runuser', ['-u', 'postgres', '--', 'psql', '-v', 'ON_ERROR_STOP=1', '-tAc', sql], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    if (r.error || r.status !== 0) {
      throw new FirstbootApplyError(
        `PostgreSQL is not answering (${r.error?.message ?? r.stderr.trim()}); check "systemctl status postgresql"`,
        { cause: r.error },
      );
    }
    return r.stdout.trim();
  };
  if (query("SELECT 1 FROM pg_roles WHERE rolname = 'vbproxy'") !== '1') {
    run('runuser', ['-u', 'postgres', '--', 'createuser', 'vbproxy'], 'creating the PostgreSQL role vbproxy');
    report('created the PostgreSQL role vbproxy');
  }
  if (query("SELECT 1 FROM pg_database WHERE datname = 'vbproxy'") !== '1') {
    run('runuser', ['-u', 'postgres', '--', 'createdb', '--owner=vbproxy', 'vbproxy'], 'creating the catalog database');
    report('created the PostgreSQL database vbproxy');
  }
}

/** Hostname, network and time settings take effect now, without a reboot; the catalog database exists. */
function applyToRunningSystem(s: FirstbootSettings, report: (line: string) => void): void {
  ensureDatabase(report);
  run('hostname', [s.hostname], 'setting the host name');
  report(`host name set to ${s.hostname}`);
  run('networkctl', ['reload'], 'reloading the network configuration');
  report(`network configured (${s.network.mode === 'dhcp' ? 'DHCP' : `${s.network.address}/${s.network.prefix}`})`);
  if (s.ntpServers.length > 0) {
    run('systemctl', ['try-restart', 'systemd-timesyncd.service'], 'restarting time synchronisation');
    report(`NTP servers: ${s.ntpServers.join(', ')}`);
  }
}
