import type { VimClient } from './client.js';
import { parseDisks, type DiskInfo } from './disks.js';
import { VimProtocolError } from './errors.js';
import { getVm } from './inventory.js';
import { retrieveOne } from './property.js';
import { runTask, type WaitOptions } from './tasks.js';
import { isMoRef, isVimObject, type MoRef, type VimObject, type VimValue } from './wire/values.js';

/** The tag vbproxy puts in its snapshots' names and descriptions. */
export const SNAPSHOT_NAME_PREFIX = 'vbproxy-backup';

export interface SnapshotTag {
  readonly jobId: string;
  /** Moref of the proxy VM taking the snapshot. */
  readonly proxy: string;
  readonly created: string;
}

export function snapshotName(tag: SnapshotTag): string {
  return `${SNAPSHOT_NAME_PREFIX} ${tag.jobId}`;
}

export function snapshotDescription(tag: SnapshotTag): string {
  return `product=vbproxy;job=${tag.jobId};proxy=${tag.proxy};created=${tag.created}. Taken by vbproxy for a backup; it removes it when the backup ends.`;
}

/** Parses a vbproxy snapshot description; undefined for anybody else's snapshot. */
export function parseSnapshotTag(name: string, description: string): SnapshotTag | undefined {
  if (!name.startsWith(SNAPSHOT_NAME_PREFIX)) return undefined;
  const m = /product=vbproxy;job=([^;]+);proxy=([^;]*);created=([^.;\s]+)/.exec(description);
  if (!m) return undefined;
  return { jobId: m[1]!, proxy: m[2]!, created: m[3]! };
}

export interface SnapshotNode {
  readonly ref: MoRef;
  readonly name: string;
  readonly description: string;
  readonly createTime: string;
  readonly quiesced: boolean;
  readonly state: string;
  readonly parent: MoRef | undefined;
  readonly children: readonly MoRef[];
  readonly current: boolean;
  /** The vbproxy tag, when this is one of ours. */
  readonly tag: SnapshotTag | undefined;
}

/** Flattens a VirtualMachineSnapshotInfo into nodes, depth first, parents before children. */
export function walkSnapshotTree(info: VimObject | undefined): SnapshotNode[] {
  if (!info) return [];
  const current = isMoRef(info.currentSnapshot) ? info.currentSnapshot.value : undefined;
  const out: SnapshotNode[] = [];
  const visit = (tree: VimObject, parent: MoRef | undefined): void => {
    const ref = tree.snapshot;
    if (!isMoRef(ref)) return;
    const kids = ((tree.childSnapshotList as VimValue[] | undefined) ?? []).filter(isVimObject);
    const name = typeof tree.name === 'string' ? tree.name : '';
    const description = typeof tree.description === 'string' ? tree.description : '';
    out.push({
      ref,
      name,
      description,
      createTime: typeof tree.createTime === 'string' ? tree.createTime : '',
      quiesced: tree.quiesced === true,
      state: typeof tree.state === 'string' ? tree.state : '',
      parent,
      children: kids.map((k) => k.snapshot).filter(isMoRef),
      current: ref.value === current,
      tag: parseSnapshotTag(name, description),
    });
    for (const k of kids) visit(k, ref);
  };
  for (const root of ((info.rootSnapshotList as VimValue[] | undefined) ?? []).filter(isVimObject))
    visit(root, undefined);
  return out;
}

export async function listSnapshots(client: VimClient, vm: MoRef): Promise<SnapshotNode[]> {
  const { props } = await retrieveOne(client, vm, ['snapshot'], true);
  const info = props.get('snapshot');
  return walkSnapshotTree(isVimObject(info) ? info : undefined);
}

export interface CreateSnapshotOptions extends WaitOptions {
  readonly name: string;
  readonly description: string;
  readonly quiesce: boolean;
  /** Always false for backups; exposed for completeness. */
  readonly memory?: boolean;
}

export interface CreatedSnapshot {
  readonly ref: MoRef;
  /** Whether the guest was actually quiesced (from the snapshot tree). */
  readonly quiesced: boolean;
  /** The disks of the snapshot, with their changeIds. */
  readonly disks: readonly DiskInfo[];
}

/**
 * CreateSnapshot_Task and reads back the snapshot's disks and quiesced flag. A quiesce failure is
 * thrown as QuiesceFaultError naming the VM; retries and fallbacks are the job layer's policy.
 */
export async function createSnapshot(
  client: VimClient,
  vm: MoRef,
  opts: CreateSnapshotOptions,
): Promise<CreatedSnapshot> {
  const result = await runTask(
    client,
    'CreateSnapshot_Task',
    {
      _this: vm,
      name: opts.name,
      description: opts.description,
      memory: opts.memory ?? false,
      quiesce: opts.quiesce,
    },
    opts,
  );
  if (!isMoRef(result)) throw new VimProtocolError(`CreateSnapshot_Task on ${vm.value} returned no snapshot`);
  const disks = await snapshotDisks(client, result);
  const node = (await listSnapshots(client, vm)).find((n) => n.ref.value === result.value);
  return { ref: result, quiesced: node?.quiesced ?? false, disks };
}

/** The disks of a snapshot (`config.hardware.device` of the snapshot): the frozen files and changeIds. */
export async function snapshotDisks(client: VimClient, snapshot: MoRef): Promise<DiskInfo[]> {
  const { props } = await retrieveOne(client, snapshot, ['config.hardware.device']);
  return parseDisks(props.get('config.hardware.device'));
}

/** RemoveSnapshot_Task with removeChildren=false and the default consolidation. */
export async function removeSnapshot(
  client: VimClient,
  snapshot: MoRef,
  opts: WaitOptions = {},
): Promise<void> {
  await runTask(client, 'RemoveSnapshot_Task', { _this: snapshot, removeChildren: false }, opts);
}

/** ConsolidateVMDisks_Task. */
export async function consolidateDisks(client: VimClient, vm: MoRef, opts: WaitOptions = {}): Promise<void> {
  await runTask(client, 'ConsolidateVMDisks_Task', { _this: vm }, opts);
}

/**
 * Enables CBT the way VMware documents: only with zero snapshots, then a create/remove stun cycle
 * so that the disks report changeIds. Returns false (and does nothing) when CBT was already on.
 */
export async function enableCbt(client: VimClient, vm: MoRef, opts: WaitOptions = {}): Promise<boolean> {
  const info = await getVm(client, vm);
  if (info.cbtEnabled) return false;
  if (!info.cbtSupported) {
    throw new VimProtocolError(
      `VM ${info.name} (${vm.value}) does not support CBT (virtual hardware 7 or later is needed)`,
    );
  }
  if (walkSnapshotTree(info.snapshot).length > 0) {
    throw new VimProtocolError(
      `VM ${info.name} (${vm.value}) has snapshots: CBT must be enabled with none present; remove them first or back up without CBT`,
    );
  }
  await runTask(
    client,
    'ReconfigVM_Task',
    { _this: vm, spec: { _type: 'VirtualMachineConfigSpec', changeTrackingEnabled: true } },
    opts,
  );
  const snap = await runTask(
    client,
    'CreateSnapshot_Task',
    {
      _this: vm,
      name: `${SNAPSHOT_NAME_PREFIX} cbt-stun`,
      description: 'product=vbproxy;stun cycle to activate CBT',
      memory: false,
      quiesce: false,
    },
    opts,
  );
  if (isMoRef(snap)) await removeSnapshot(client, snap, opts);
  return true;
}
