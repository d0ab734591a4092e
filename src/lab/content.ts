import { closeSync, openSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';

/**
 * The content hook: the lab calls `writeDiskContent` once per sample disk it creates, on the base
 * disk's flat extent (a sparse file of exactly `sizeBytes`).
 *
 * Until src/lab/sample-image.ts (the sample-image generator) is merged, this fills a few seeded
 * regions so that disks are not empty. Switching to the generator is this one line:
 *   export const writeDiskContent: DiskContentHook = writeSampleImage;
 * (with `import { writeSampleImage } from './sample-image.js';`).
 */
export interface DiskContentOptions {
  readonly sizeBytes: number;
  readonly seed: number;
  readonly template?: string | undefined;
}

export type DiskContentHook = (path: string, opts: DiskContentOptions) => Promise<void>;

function block(seed: number, i: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  let off = 0;
  let n = 0;
  while (off < size) {
    const h = createHash('sha256').update(`${seed}:${i}:${n++}`).digest();
    off += h.copy(out, off);
  }
  return out;
}

/** Placeholder content: a text-like header, seeded random regions and zero gaps. */
export const fillSeededRegions: DiskContentHook = async (path, opts) => {
  const fd = openSync(path, 'r+');
  try {
    const header = Buffer.from(
      `vbproxy lab disk seed=${opts.seed} template=${opts.template ?? '-'}\n`.repeat(64),
    );
    writeSync(fd, header, 0, header.length, 0);
    const region = 256 * 1024;
    const count = Math.max(1, Math.floor(opts.sizeBytes / (4 * 1024 * 1024)));
    for (let i = 0; i < count; i++) {
      const off = (((opts.seed * 7919 + i * 104729) % count) * 4 + 1) * 1024 * 1024;
      if (off + region > opts.sizeBytes) continue;
      writeSync(fd, block(opts.seed, i, region), 0, region, off);
    }
  } finally {
    closeSync(fd);
  }
};

export const writeDiskContent: DiskContentHook = fillSeededRegions;
