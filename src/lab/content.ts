import { createHash } from 'node:crypto';
import { writeSampleImage } from './sample-image.js';

/**
 * The content hook: the lab calls `writeDiskContent` once per sample disk it creates, on the base
 * disk's flat extent (a sparse file of exactly `sizeBytes`). Content comes from the sample-image
 * generator (file-system-like regions: holes, written zeros, text, binaries, random data,
 * duplicates); disks that name the same template are clones of it and share most blocks at the
 * same offsets, as VMs deployed from one template do.
 */
export interface DiskContentOptions {
  readonly sizeBytes: number;
  readonly seed: number;
  readonly template?: string | undefined;
}

export type DiskContentHook = (path: string, opts: DiskContentOptions) => Promise<void>;

/** A stable seed for a template name. */
function templateSeed(name: string): number {
  return createHash('sha256').update(`template:${name}`).digest().readUInt32LE(0);
}

export const writeDiskContent: DiskContentHook = async (path, opts) => {
  await writeSampleImage(path, {
    sizeBytes: opts.sizeBytes,
    seed: opts.seed,
    template: opts.template === undefined ? undefined : templateSeed(opts.template),
  });
};
