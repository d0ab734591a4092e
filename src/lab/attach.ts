import {
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';

/**
 * Attach records (docs/lab.md section 4): `attached/<vm>/<controllerKey>-<unitNumber>.attach`,
 * written to a temp name and linked into place (link fails if the slot is taken), `createdAt` last.
 */

export interface AttachRecord {
  readonly vm: string;
  readonly controllerKey: number;
  readonly unitNumber: number;
  readonly deviceKey: number;
  readonly fileName: string;
  readonly diskUuid: string;
  readonly capacityBytes: number;
  readonly diskMode: string;
  readonly attachedBy: string;
  readonly sourceVm: string;
  readonly snapshot: string;
  readonly pid: number;
  readonly connectionId: string;
  readonly createdAt: string;
  /** The record's file path. */
  readonly path: string;
}

export function deviceKeyFor(controllerKey: number, unitNumber: number): number {
  return 2000 + (controllerKey - 1000) * 16 + unitNumber;
}

export function attachDir(root: string, vm: string): string {
  return join(root, 'attached', vm);
}

export function parseAttachRecord(text: string, path: string): AttachRecord | undefined {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1));
  }
  if (!kv.has('createdAt')) return undefined;
  const n = (k: string): number => Number(kv.get(k) ?? NaN);
  return {
    vm: kv.get('vm') ?? '',
    controllerKey: n('controllerKey'),
    unitNumber: n('unitNumber'),
    deviceKey: n('deviceKey'),
    fileName: kv.get('fileName') ?? '',
    diskUuid: kv.get('diskUuid') ?? '',
    capacityBytes: n('capacityBytes'),
    diskMode: kv.get('diskMode') ?? 'independent_nonpersistent',
    attachedBy: kv.get('attachedBy') ?? '',
    sourceVm: kv.get('sourceVm') ?? '',
    snapshot: kv.get('snapshot') ?? '',
    pid: n('pid'),
    connectionId: kv.get('connectionId') ?? '',
    createdAt: kv.get('createdAt') ?? '',
    path,
  };
}

/** The complete attach records of one VM (records without `createdAt` are still being written). */
export function listAttachRecords(root: string, vm: string): AttachRecord[] {
  const dir = attachDir(root, vm);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: AttachRecord[] = [];
  for (const name of names) {
    if (!name.endsWith('.attach')) continue;
    const path = join(dir, name);
    try {
      const r = parseAttachRecord(readFileSync(path, 'utf8'), path);
      if (r) out.push(r);
    } catch {
      // Deleted between readdir and read: it is gone.
    }
  }
  return out.sort((a, b) => a.deviceKey - b.deviceKey);
}

/** Every complete attach record of the lab. */
export function listAllAttachRecords(root: string): AttachRecord[] {
  let vms: string[];
  try {
    vms = readdirSync(join(root, 'attached'));
  } catch {
    return [];
  }
  return vms.flatMap((vm) => listAttachRecords(root, vm));
}

export class SlotTakenError extends Error {}

/** Creates a record atomically; SlotTakenError when the controller slot already has one. */
export function createAttachRecord(
  root: string,
  r: Omit<AttachRecord, 'path' | 'createdAt' | 'deviceKey'>,
): AttachRecord {
  const dir = attachDir(root, r.vm);
  mkdirSync(dir, { recursive: true });
  const final = join(dir, `${r.controllerKey}-${r.unitNumber}.attach`);
  const tmp = `${final}.tmp-${process.pid}-${Date.now()}`;
  const full: AttachRecord = {
    ...r,
    deviceKey: deviceKeyFor(r.controllerKey, r.unitNumber),
    createdAt: new Date().toISOString(),
    path: final,
  };
  const lines = [
    `vm=${full.vm}`,
    `controllerKey=${full.controllerKey}`,
    `unitNumber=${full.unitNumber}`,
    `deviceKey=${full.deviceKey}`,
    `fileName=${full.fileName}`,
    `diskUuid=${full.diskUuid}`,
    `capacityBytes=${full.capacityBytes}`,
    `diskMode=${full.diskMode}`,
    `attachedBy=${full.attachedBy}`,
    `sourceVm=${full.sourceVm}`,
    `snapshot=${full.snapshot}`,
    `pid=${full.pid}`,
    `connectionId=${full.connectionId}`,
    `createdAt=${full.createdAt}`,
  ];
  const fd = openSync(tmp, 'wx', 0o644);
  try {
    writeSync(fd, lines.join('\n') + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, final);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new SlotTakenError(`slot ${r.controllerKey}:${r.unitNumber} of ${r.vm} is taken`);
    throw err;
  } finally {
    unlinkSync(tmp);
  }
  return full;
}

export function deleteAttachRecord(r: AttachRecord): void {
  try {
    unlinkSync(r.path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
