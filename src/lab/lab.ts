import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { labCertificate } from './cert.js';
import {
  defaultLabDefinition,
  parseLabDefinition,
  type LabDefinition,
  type LabDefinitionInput,
} from './definition.js';
import type { FaultRule } from './fault.js';
import { LabVimServer } from './vim-server.js';
import { LabWorld } from './world.js';

export interface StartLabOptions {
  /** The lab root (created if missing). An existing lab is reopened with its saved state. */
  readonly dir: string;
  /** The definition for a new lab (ignored when the root already holds one); default: the sample lab. */
  readonly definition?: LabDefinition | LabDefinitionInput | undefined;
  readonly port?: number | undefined;
  readonly host?: string | undefined;
}

export interface RunningLab {
  readonly root: string;
  /** `https://127.0.0.1:<port>/sdk` */
  readonly url: string;
  readonly username: string;
  readonly password: string;
  /** Where the password is kept (mode 0600). */
  readonly passwordFile: string;
  readonly fingerprint256: string;
  readonly thumbprintSha1: string;
  readonly certificatePem: string;
  readonly vddkConf: string;
  readonly world: LabWorld;
  readonly server: LabVimServer;
  injectFault(rule: FaultRule): void;
  clearFaults(): void;
  expireSessions(): void;
  guestWrite(vm: string, diskKey: number, offset: number, data: Buffer): void;
  resetCbt(vm: string): void;
  stop(): Promise<void>;
}

function labPassword(root: string): { password: string; file: string } {
  const file = join(root, 'state', 'password');
  if (!existsSync(file))
    writeFileSync(file, randomBytes(18).toString('base64url') + '\n', { mode: 0o600, flag: 'wx' });
  return { password: readFileSync(file, 'utf8').trim(), file };
}

/** Writes `<root>/vddk.conf` (docs/lab.md 5.1): the keys that belong to the lab as a whole. */
function writeVddkConf(root: string, world: LabWorld, thumbprint: string): string {
  const lines = [
    '# Written by `vbproxy lab`: the lab VDDK configuration (docs/lab.md 5.1).',
    `vixDiskLib.lab.root = "${root}"`,
  ];
  for (const d of world.datastores)
    lines.push(`vixDiskLib.lab.datastore.${d.name} = "${join(root, 'datastores', d.name)}"`);
  lines.push(`vixDiskLib.lab.serverThumbprint = "${thumbprint}"`);
  const path = join(root, 'vddk.conf');
  writeFileSync(path, lines.join('\n') + '\n', { mode: 0o644 });
  return path;
}

/** Starts the lab vSphere in this process (tests, the demo, and `vbproxy lab`). */
export async function startLab(opts: StartLabOptions): Promise<RunningLab> {
  const root = resolve(opts.dir);
  mkdirSync(join(root, 'state'), { recursive: true, mode: 0o700 });
  mkdirSync(join(root, 'attached'), { recursive: true });
  const labJson = join(root, 'lab.json');
  let def: LabDefinition;
  if (existsSync(labJson)) {
    def = parseLabDefinition(JSON.parse(readFileSync(labJson, 'utf8')), labJson);
  } else {
    def = opts.definition ? parseLabDefinition(opts.definition) : defaultLabDefinition();
    writeFileSync(labJson, JSON.stringify(def, null, 2) + '\n');
  }
  const { password, file } = labPassword(root);
  const world = new LabWorld(root, def);
  await world.open();
  const tls = labCertificate(root);
  const server = new LabVimServer({
    world,
    username: def.username,
    password,
    key: tls.key,
    cert: tls.cert,
    port: opts.port,
    host: opts.host,
  });
  const url = await server.start();
  const vddkConf = writeVddkConf(root, world, tls.thumbprintSha1);
  writeFileSync(
    join(root, 'state', 'endpoint.json'),
    JSON.stringify(
      {
        url,
        username: def.username,
        fingerprint256: tls.fingerprint256,
        thumbprintSha1: tls.thumbprintSha1,
        pid: process.pid,
      },
      null,
      2,
    ) + '\n',
    { mode: 0o600 },
  );
  return {
    root,
    url,
    username: def.username,
    password,
    passwordFile: file,
    fingerprint256: tls.fingerprint256,
    thumbprintSha1: tls.thumbprintSha1,
    certificatePem: tls.cert,
    vddkConf,
    world,
    server,
    injectFault: (r) => server.injectFault(r),
    clearFaults: () => server.clearFaults(),
    expireSessions: () => server.expireSessions(),
    guestWrite: (vm, key, off, data) => world.guestWrite(vm, key, off, data),
    resetCbt: (vm) => world.resetCbt(vm),
    stop: async () => {
      await server.stop();
      world.close();
    },
  };
}
