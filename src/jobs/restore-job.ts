import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { addJobEvent } from '../catalog/jobs.js';
import { getRestorePoint } from '../catalog/restore-points.js';
import type { Manifest } from '../repository/manifest.js';
import type { RestoreStats } from '../pipeline/restore.js';
import { VddkDiskTarget, type VddkConnection, type VddkDisk } from '../vddk/index.js';
import { getVm } from '../vsphere/inventory.js';
import type { JobControl } from './backup-job.js';
import { JobError } from './errors.js';
import type { RestoreJobData } from './queues.js';
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

/** Restore of design section 2, backwards: to raw image files, or through VDDK into a powered-off VM's disks. */
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
  if (target.kind === 'new-vm') {
    throw new JobError(
      'RESTORE_NEW_VM_UNSUPPORTED',
      `restoring restore point ${point.id} to a new VM "${target.name}" is not implemented yet: restore to image files, or create the VM with disks of the sizes in the restore point and restore into it (target kind "vm")`,
    );
  }
  const wanted = target.diskKeys ?? [...byKey.keys()].sort((a, b) => a - b);
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
    try {
      const vm = vmRef(target.vmMoref);
      const info = await getVm(vc.client, vm);
      if (info.powerState !== 'poweredOff') {
        throw new JobError(
          'RESTORE_VM_POWERED_ON',
          `VM ${info.name} (${vm.value}) is ${info.powerState}: power it off before restoring into its disks`,
        );
      }
      for (const k of wanted) {
        const n = byKey.get(k)!;
        const md = manifest.disks.find((d) => d.disk === n)!;
        const vd = info.disks.find((d) => d.key === k);
        if (!vd)
          throw new JobError('RESTORE_TARGET_DISK', `VM ${info.name} has no disk with device key ${k}`);
        if (vd.capacityBytes < md.capacity) {
          throw new JobError(
            'RESTORE_TARGET_DISK',
            `disk ${k} of VM ${info.name} holds ${vd.capacityBytes} bytes, restore point disk ${n} needs ${md.capacity}; grow the disk first`,
          );
        }
        await restoreOne(k, n, async () => {
          let conn: VddkConnection | undefined;
          let disk: VddkDisk | undefined;
          try {
            conn = await rt.vddk.connect(
              vc.vddkSpec({ vmMoref: vm.value, transports: ['nbdssl', 'nbd'], readOnly: false }),
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
