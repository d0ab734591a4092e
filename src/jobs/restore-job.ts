import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { addJobEvent } from '../catalog/jobs.js';
import { getRestorePoint } from '../catalog/restore-points.js';
import type { Manifest } from '../repository/manifest.js';
import type { RestoreStats } from '../pipeline/restore.js';
import { VddkDiskTarget, type VddkConnection, type VddkDisk } from '../vddk/index.js';
import { describeError, isTransient } from '../errors.js';
import type { VimClient } from '../vsphere/client.js';
import { createVm, destroyVm, placementFor } from '../vsphere/vm-lifecycle.js';
import { creatableNics, describeNetwork, hostNetworks, placeNics, type PlacedNic } from '../vsphere/nics.js';
import { parseControllers, type DiskInfo } from '../vsphere/disks.js';
import { getVm, type VmInfo } from '../vsphere/inventory.js';
import { moref, type MoRef } from '../vsphere/wire/values.js';
import type { JobControl } from './backup-job.js';
import { JobError } from './errors.js';
import type { RestoreJobData } from './queues.js';
import { datastoreOf, newVmLayout, parseVmConfig } from './vm-config.js';
import { connectVcenter, vmRef, type JobRuntime } from './runtime.js';

export interface RestoredDisk {
  diskKey: number;
  disk: number;
  bytes: number;
  durationMs: number;
  /** The image file written, or the VM disk file written through VDDK. */
  target: string;
  transport: string;
}

export interface RestoreResult {
  restorePointId: string;
  disks: RestoredDisk[];
}

/** Disk numbers of a manifest by VM device key (from the tags the backup wrote). */
function diskKeys(m: Manifest): Map<number, number> {
  const out = new Map<number, number>();
  for (const d of m.disks) {
    const k = Number(m.tags[`disk.${d.disk}.key`] ?? Number.NaN);
    out.set(Number.isInteger(k) ? k : d.disk, d.disk);
  }
  return out;
}

/**
 * Restore of design section 2, backwards: to raw image files, or through VDDK into the disks of a
 * powered-off VM, an existing one or a new one created from the configuration in the restore point.
 */
export async function runRestoreJob(
  rt: JobRuntime,
  data: RestoreJobData,
  ctl: JobControl,
): Promise<RestoreResult> {
  const point = await getRestorePoint(rt.pool, data.restorePointId);
  const repo = await rt.repositories.get(point.repository);
  const manifest = await repo.getPoint(point.manifestName);
  const byKey = diskKeys(manifest);
  const target = data.target;
  const wanted =
    (target.kind === 'new-vm' ? undefined : target.diskKeys) ?? [...byKey.keys()].sort((a, b) => a - b);
  for (const k of wanted) {
    if (!byKey.has(k))
      throw new JobError('RESTORE_UNKNOWN_DISK', `restore point ${point.id} has no disk ${k}`);
  }
  const total = wanted.reduce((a, k) => a + manifest.disks.find((d) => d.disk === byKey.get(k))!.capacity, 0);
  let doneBefore = 0;
  const disks: RestoredDisk[] = [];
  const options = {
    signal: ctl.signal,
    onProgress: (p: { doneBytes: number }) =>
      ctl.progress({ doneBytes: doneBefore + p.doneBytes, totalBytes: total, phase: 'restore' }),
  };
  /** Restores one disk in a disk slot of this proxy, and records what was written where. */
  const restoreOne = async (
    diskKey: number,
    disk: number,
    restore: () => Promise<{ stats: RestoreStats; target: string; transport: string }>,
  ): Promise<void> => {
    const release = await rt.diskSlots.acquire();
    try {
      const { stats, target, transport } = await restore();
      disks.push({ diskKey, disk, bytes: stats.bytes, durationMs: stats.durationMs, target, transport });
      doneBefore += stats.bytes;
    } finally {
      release();
    }
  };

  if (target.kind === 'file') {
    await mkdir(target.directory, { recursive: true });
    for (const k of wanted) {
      const n = byKey.get(k)!;
      const path = join(target.directory, `${point.vmName}-disk${k}.img`);
      await restoreOne(k, n, async () => ({
        stats: await repo.restoreToFile(manifest.id, n, path, options),
        target: path,
        transport: 'file',
      }));
    }
  } else {
    const vc = await connectVcenter(rt, target.vcenterId);
    /** The VM this restore created, once it exists. */
    let createdVm: { label: string; ref: MoRef } | undefined;
    try {
      /** Which disk of the target VM (its device key and file) receives which disk of the point. */
      let pairs: { sourceKey: number; disk: DiskInfo }[];
      let vmMoref: string;
      if (target.kind === 'new-vm') {
        const created = await createTargetVm(vc.client, point.id, manifest.vmConfig, wanted, target, ctl);
        vmMoref = created.vm.ref.value;
        createdVm = { label: `${target.name} (${vmMoref})`, ref: created.vm.ref };
        pairs = created.pairs;
        for (const nic of created.unconnectedNics) {
          await addJobEvent(
            rt.pool,
            data.jobId,
            'warn',
            `${nic.label} (${nic.type}) of VM ${target.name} was created not connected: ${nic.why}; connect it before powering the VM on`,
            { vm: vmMoref, nic: nic.label, type: nic.type, network: nic.network },
          );
        }
        for (const nic of created.skippedNics) {
          await addJobEvent(
            rt.pool,
            data.jobId,
            'warn',
            `${nic.label} (${nic.type}) of VM ${target.name} was not recreated: vbproxy creates emulated and paravirtual network cards only (an SR-IOV card needs a physical function of the host); add it by hand`,
            { vm: vmMoref, nic: nic.label, type: nic.type },
          );
        }
        await addJobEvent(
          rt.pool,
          data.jobId,
          'info',
          `created VM ${target.name} (${vmMoref}) for the restore`,
          {
            vm: vmMoref,
            disks: pairs.map((p) => ({ sourceKey: p.sourceKey, file: p.disk.fileName })),
          },
        );
      } else {
        const vm = vmRef(target.vmMoref);
        const info = await getVm(vc.client, vm);
        if (info.powerState !== 'poweredOff') {
          throw new JobError(
            'RESTORE_VM_POWERED_ON',
            `VM ${info.name} (${vm.value}) is ${info.powerState}: power it off before restoring into its disks`,
          );
        }
        vmMoref = vm.value;
        pairs = wanted.map((k) => {
          const vd = info.disks.find((d) => d.key === k);
          if (!vd)
            throw new JobError('RESTORE_TARGET_DISK', `VM ${info.name} has no disk with device key ${k}`);
          return { sourceKey: k, disk: vd };
        });
      }
      for (const { sourceKey: k, disk: vd } of pairs) {
        const n = byKey.get(k)!;
        const md = manifest.disks.find((d) => d.disk === n)!;
        if (vd.capacityBytes < md.capacity) {
          throw new JobError(
            'RESTORE_TARGET_DISK',
            `disk ${vd.key} of VM ${vmMoref} holds ${vd.capacityBytes} bytes, restore point disk ${n} needs ${md.capacity}; grow the disk first`,
          );
        }
        await restoreOne(k, n, async () => {
          let conn: VddkConnection | undefined;
          let disk: VddkDisk | undefined;
          try {
            conn = await rt.vddk.connect(
              vc.vddkSpec({ vmMoref, transports: ['nbdssl', 'nbd'], readOnly: false }),
            );
            disk = await conn.open(vd.fileName, { readOnly: false });
            const stats = await repo.restoreDisk(manifest.id, n, new VddkDiskTarget(disk), options);
            return { stats, target: vd.fileName, transport: disk.transport };
          } finally {
            await disk?.close().catch(() => undefined);
            await conn?.disconnect().catch(() => undefined);
          }
        });
      }
    } catch (err) {
      if (createdVm !== undefined) {
        // The VM is this job's and its disks are incomplete: delete it rather than leave a VM
        // that looks restored.
        const removed = await removeCreatedVm(vc.client, createdVm.ref);
        throw new JobError(
          'RESTORE_NEW_VM_INCOMPLETE',
          removed === undefined
            ? `the restore into new VM ${createdVm.label} failed, so the VM was deleted again: ${describeError(err)}`
            : `the restore into new VM ${createdVm.label} failed and deleting that VM failed too (${describeError(removed)}): delete it before you run the restore again; the restore failed with: ${describeError(err)}`,
          // Retried (if the failure was transient) only when the VM is gone again.
          { cause: err, transient: removed === undefined && isTransient(err) },
        );
      }
      throw err;
    } finally {
      await vc.close();
    }
  }
  await addJobEvent(
    rt.pool,
    data.jobId,
    'info',
    `restored ${disks.length} disk(s) of restore point ${point.id}`,
    {
      disks: disks.map((d) => ({ diskKey: d.diskKey, target: d.target, bytes: d.bytes })),
    },
  );
  return { restorePointId: point.id, disks };
}

/**
 * Creates the powered-off VM of a restore to a new VM, with the guest OS type, vCPUs, memory,
 * firmware and disk layout kept in the restore point (same controller types and bus numbers, same
 * units, same capacities, thin), on the target datastore or else the one the first disk was on, in
 * the target folder or else the datacenter's VM folder, and its network cards (same type, same
 * network when the placement host sees it, generated MAC addresses; a card whose network is not
 * there is created not connected and returned in `unconnectedNics`; a card of a type vbproxy does not
 * create, such as SR-IOV, is left out and returned in `skippedNics`). Returns each restored disk's
 * new counterpart (matched by bus and unit, since vCenter assigns new device keys).
 */
async function createTargetVm(
  client: VimClient,
  pointId: string,
  storedConfig: string | null,
  wanted: readonly number[],
  target: { name: string; datastore?: string | undefined; folder?: string | undefined },
  ctl: JobControl,
): Promise<{
  vm: VmInfo;
  pairs: { sourceKey: number; disk: DiskInfo }[];
  unconnectedNics: { label: string; type: string; network: string; why: string }[];
  skippedNics: { label: string; type: string }[];
}> {
  const config = parseVmConfig(pointId, storedConfig);
  const layout = newVmLayout(config, wanted);
  const datastore = target.datastore ?? datastoreOf(config.disks[0]?.fileName ?? '');
  if (datastore === undefined) {
    throw new JobError(
      'RESTORE_NEW_VM_FAILED',
      `restore point ${pointId} names no datastore: give target.datastore`,
    );
  }
  let vm: VmInfo;
  let nics: PlacedNic[] = [];
  const { create: kept, skip } = creatableNics(config.nics ?? []);
  const skippedNics = skip.map((n) => ({ label: n.label ?? `network adapter ${n.key}`, type: n.type }));
  try {
    const place = await placementFor(
      client,
      datastore,
      target.folder ? moref('Folder', target.folder) : undefined,
    );
    if (kept.length > 0) nics = placeNics(kept, await hostNetworks(client, place.host));
    vm = await createVm(client, {
      name: target.name,
      ...place,
      datastore,
      controllers: layout.controllers,
      disks: layout.disks,
      guestId: config.guestId ?? undefined,
      numCPUs: config.numCPU ?? undefined,
      memoryMB: config.memoryMB ?? undefined,
      firmware: config.firmware ?? undefined,
      nics,
      signal: ctl.signal,
    });
  } catch (err) {
    throw new JobError(
      'RESTORE_NEW_VM_FAILED',
      `cannot create VM ${target.name} on datastore ${datastore} for restore point ${pointId}: ${describeError(err)}`,
      { cause: err, transient: isTransient(err) },
    );
  }
  const busOf = new Map(layout.controllers.map((c) => [c.key, c.busNumber]));
  const created = parseControllers(vm.devices);
  const pairs: { sourceKey: number; disk: DiskInfo }[] = [];
  for (const d of layout.disks) {
    const ctrl = [...created.values()].find((c) => c.busNumber === busOf.get(d.controllerKey) && c.scsi);
    const disk = vm.disks.find((x) => x.controllerKey === ctrl?.key && x.unitNumber === d.unitNumber);
    if (!disk) {
      const failed = await removeCreatedVm(client, vm.ref);
      const removed =
        failed === undefined
          ? 'it was deleted again'
          : `deleting it failed too (${describeError(failed)}): delete it`;
      throw new JobError(
        'RESTORE_NEW_VM_FAILED',
        `VM ${target.name} (${vm.ref.value}) was created without a disk at SCSI ${String(busOf.get(d.controllerKey))}:${d.unitNumber}, and ${removed}; check the vCenter's events`,
      );
    }
    pairs.push({ sourceKey: d.sourceKey, disk });
  }
  const unconnectedNics = nics.flatMap((n, i) =>
    n.unconnected === undefined
      ? []
      : [
          {
            label: n.label,
            type: n.type,
            network: describeNetwork(kept[i]?.network),
            why: n.unconnected,
          },
        ],
  );
  return { vm, pairs, unconnectedNics, skippedNics };
}

/**
 * Deletes a VM this restore created and could not finish. Returns the error if that failed too
 * (the caller reports it next to the restore's own error), else undefined.
 */
async function removeCreatedVm(client: VimClient, vm: MoRef): Promise<unknown> {
  try {
    await destroyVm(client, vm);
    return undefined;
  } catch (err) {
    return err;
  }
}
