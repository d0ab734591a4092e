import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OvfEnvironmentError } from './errors.js';
import { childElements, childText, NS, parseXml } from './xml.js';

/** What the OVF environment document says: the vApp property values and where it came from. */
export interface OvfEnvironment {
  /** Property key -> value, exactly as deployed (values are not trimmed here). */
  readonly properties: ReadonlyMap<string, string>;
  /** `PlatformSection/Kind`, e.g. `VMware ESXi`, when present. */
  readonly platform?: string;
  /** Where the document was read from, for messages: `vmtoolsd`, `iso:/dev/sr0`, or a file path. */
  readonly origin: string;
}

/**
 * Parses an OVF environment document (DSP0243 section 11: `Environment` with a `PropertySection`
 * of `Property oe:key oe:value` elements). Throws OvfEnvironmentError for anything else, naming
 * `origin` and the problem.
 */
export function parseOvfEnvironment(xml: string, origin: string): OvfEnvironment {
  let doc: Document;
  try {
    doc = parseXml(xml);
  } catch (err) {
    throw new OvfEnvironmentError(
      `the OVF environment from ${origin} is not readable: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  const root = doc.documentElement!;
  if (root.localName !== 'Environment' || root.namespaceURI !== NS.env) {
    throw new OvfEnvironmentError(
      `the document from ${origin} is not an OVF environment: its root element is ` +
        `<${root.nodeName}> in namespace "${root.namespaceURI ?? ''}", expected <Environment> in "${NS.env}"`,
    );
  }
  const properties = new Map<string, string>();
  for (const section of childElements(root, NS.env, 'PropertySection')) {
    for (const p of childElements(section, NS.env, 'Property')) {
      const key = p.getAttributeNS(NS.env, 'key');
      if (!key) {
        throw new OvfEnvironmentError(`the OVF environment from ${origin} has a <Property> without an oe:key attribute`);
      }
      if (properties.has(key)) {
        throw new OvfEnvironmentError(`the OVF environment from ${origin} lists the property "${key}" twice`);
      }
      properties.set(key, p.hasAttributeNS(NS.env, 'value') ? (p.getAttributeNS(NS.env, 'value') ?? '') : '');
    }
  }
  const platformSection = childElements(root, NS.env, 'PlatformSection')[0];
  const platform = platformSection ? childText(platformSection, NS.env, 'Kind') : undefined;
  return platform === undefined ? { properties, origin } : { properties, platform, origin };
}

/** Where first boot looks for the OVF environment. */
export type OvfEnvSource =
  | { kind: 'auto' }
  | { kind: 'vmtools'; command?: string }
  | { kind: 'iso'; devices?: string[] }
  | { kind: 'file'; path: string };

/**
 * The OVF environment through the VMware Tools transport: `vmtoolsd --cmd "info-get guestinfo.ovfEnv"`.
 * Returns undefined when the VM has no such guestinfo value (vApp options off, or the ISO transport).
 */
export function readFromVmtools(command = 'vmtoolsd'): OvfEnvironment | undefined {
  const r = spawnSync(command, ['--cmd', 'info-get guestinfo.ovfEnv'], { encoding: 'utf8', timeout: 30_000 });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new OvfEnvironmentError(`could not run ${command} to read the OVF environment: ${r.error.message}`, {
      cause: r.error,
    });
  }
  const out = r.stdout.trim();
  if (r.status !== 0 || out === '') {
    // vmtoolsd prints "No value found" when guestinfo.ovfEnv is not set, and fails outside VMware.
    return undefined;
  }
  return parseOvfEnvironment(out, `${command} (guestinfo.ovfEnv)`);
}

/** The CD-ROM devices of this machine, e.g. /dev/sr0. */
export function cdromDevices(devDir = '/dev'): string[] {
  try {
    return readdirSync(devDir)
      .filter((n) => /^sr\d+$/.test(n))
      .sort()
      .map((n) => join(devDir, n));
  } catch {
    return [];
  }
}

/**
 * The OVF environment through the ISO transport: `ovf-env.xml` at the root of an ISO 9660 image
 * (a CD-ROM device or an image file), extracted with xorriso without mounting anything.
 * Returns undefined when the image has no such file; throws when xorriso is missing.
 */
export function readFromIso(image: string): OvfEnvironment | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-ovfenv-'));
  try {
    const target = join(dir, 'ovf-env.xml');
    for (const name of ['/ovf-env.xml', '/OVF_ENV.XML', '/OVF-ENV.XML']) {
      const r = spawnSync('xorriso', ['-osirrox', 'on', '-indev', image, '-extract', name, target], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      if (r.error) {
        throw new OvfEnvironmentError(`could not run xorriso to read the OVF environment ISO ${image}: ${r.error.message}`, {
          cause: r.error,
        });
      }
      if (r.status === 0) {
        try {
          return parseOvfEnvironment(readFileSync(target, 'utf8'), `iso:${image}`);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
          throw err;
        }
      }
    }
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The OVF environment from a file (a copy of ovf-env.xml, or a test document). */
export function readFromFile(path: string): OvfEnvironment {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new OvfEnvironmentError(`cannot read the OVF environment file ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseOvfEnvironment(text, path);
}

/**
 * Finds the OVF environment: VMware Tools first, then every CD-ROM (ISO transport), unless a
 * source is named. Throws OvfEnvironmentError saying where it looked when there is none.
 */
export function acquireOvfEnvironment(source: OvfEnvSource = { kind: 'auto' }): OvfEnvironment {
  switch (source.kind) {
    case 'file':
      return readFromFile(source.path);
    case 'vmtools': {
      const env = readFromVmtools(source.command);
      if (env) return env;
      throw new OvfEnvironmentError(
        'VMware Tools has no OVF environment (guestinfo.ovfEnv is empty): enable the vApp options of this VM ' +
          'with the "VMware Tools" OVF environment transport, or deploy it from the OVA again',
      );
    }
    case 'iso': {
      const devices = source.devices ?? cdromDevices();
      for (const d of devices) {
        const env = readFromIso(d);
        if (env) return env;
      }
      throw new OvfEnvironmentError(
        `no ovf-env.xml on ${devices.length === 0 ? 'any CD-ROM (none found)' : devices.join(', ')}: ` +
          'enable the "ISO image" OVF environment transport in the vApp options and connect the CD-ROM drive',
      );
    }
    case 'auto': {
      const fromTools = readFromVmtools();
      if (fromTools) return fromTools;
      const devices = cdromDevices();
      for (const d of devices) {
        const env = readFromIso(d);
        if (env) return env;
      }
      throw new OvfEnvironmentError(
        'no OVF environment found: VMware Tools has no guestinfo.ovfEnv and no CD-ROM ' +
          `(${devices.length === 0 ? 'none found' : devices.join(', ')}) holds ovf-env.xml. ` +
          'Deploy the appliance from its OVA (which turns on the vApp options), or enable vApp options with the ' +
          '"VMware Tools" or "ISO image" transport, fill in the properties and power the VM on again',
      );
    }
  }
}
