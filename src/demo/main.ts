/**
 * `npm run demo`: until the end-to-end lab demo exists, a readable round trip of a generated VM
 * disk image through the repository: init, full backup, guest writes (2% of 64 KiB blocks),
 * incremental from the changed extents, restore of both points, byte-for-byte comparison, verify.
 * Options: --size-mb N (default 512), --keep (keep the temporary directory).
 */
import { mkdtemp, rm, copyFile, open } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Repository } from '../repository/repository.js';
import { RawImageSource } from '../pipeline/image-file.js';
import type { Extent } from '../pipeline/disk.js';
import type { Manifest } from '../repository/manifest.js';
import { mutateImage, writeSampleImage } from '../lab/sample-image.js';

const { values } = parseArgs({
  options: { 'size-mb': { type: 'string', default: '512' }, keep: { type: 'boolean', default: false } },
});
const sizeBytes = Number(values['size-mb']) * 1024 * 1024;

async function sameBytes(a: string, b: string): Promise<boolean> {
  const [fa, fb] = await Promise.all([open(a), open(b)]);
  try {
    const [sa, sb] = await Promise.all([fa.stat(), fb.stat()]);
    if (sa.size !== sb.size) return false;
    const ba = Buffer.alloc(8 << 20);
    const bb = Buffer.alloc(8 << 20);
    for (let o = 0; o < sa.size; o += ba.length) {
      const n = Math.min(ba.length, sa.size - o);
      await Promise.all([fa.read(ba, 0, n, o), fb.read(bb, 0, n, o)]);
      if (!ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
    }
    return true;
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

async function backup(
  repo: Repository,
  image: string,
  incremental?: { base: string; extents: Extent[] },
): Promise<{ m: Manifest; ms: number }> {
  const t = Date.now();
  const src = await RawImageSource.open(image);
  try {
    const s = await repo.beginBackup({ name: 'demo-vm' });
    await s.backupDisk(src, {
      disk: 0,
      label: image,
      base: incremental ? { pointId: incremental.base, disk: 0 } : undefined,
      changedExtents: incremental?.extents,
    });
    const m = await s.commit({ consistency: 'crash', vmConfig: VM_CONFIG });
    return { m, ms: Date.now() - t };
  } finally {
    await src.close();
  }
}

const MB = 1e6;
const VM_CONFIG = Buffer.from('{"guestId":"debian12_64Guest","memoryMB":2048,"numCPUs":2}');
const pad = (s: string, n: number): string => s.padStart(n);

async function main(): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'vbproxy-demo-'));
  const started = Date.now();
  try {
    const image = join(dir, 'demo-vm.img');
    const before = join(dir, 'demo-vm.before.img');
    console.log(
      `vbproxy demo: repository round trip of a generated ${(sizeBytes / 2 ** 20).toFixed(0)} MiB VM disk image in ${dir}`,
    );
    let t = Date.now();
    await writeSampleImage(image, { sizeBytes, seed: 2026 });
    await copyFile(image, before);
    console.log(
      `  generated the image (partition table, holes, zeros, text, binary, random, duplicates) in ${((Date.now() - t) / 1000).toFixed(1)} s`,
    );

    // The passphrase lives only in memory for the demo; it is never printed.
    const repo = await Repository.init(join(dir, 'repo'), randomBytes(24).toString('base64'));
    console.log(
      `  initialised the repository (chunk size ${repo.chunkSize / 1024} KiB, XChaCha20-Poly1305, zstd, keyed BLAKE2b ids)`,
    );
    const full = await backup(repo, image);
    const extents = await mutateImage(image, { fraction: 0.02, blockSize: 64 * 1024, seed: 7 });
    console.log(
      `  guest writes: ${extents.reduce((s, e) => s + e.length, 0) / 1024} KiB in ${extents.length} extents (2% of 64 KiB blocks)`,
    );
    const incr = await backup(repo, image, { base: full.m.id, extents });

    const rows: string[][] = [];
    for (const [mode, r] of [
      ['full', full],
      ['incremental', incr],
    ] as const) {
      const s = r.m.disks[0]!.stats;
      rows.push([
        mode,
        (s.readBytes / MB).toFixed(1),
        (s.storedBytes / MB).toFixed(1),
        s.newBytes > 0 ? (s.readBytes / s.newBytes).toFixed(2) : '-',
        s.storedBytes > 0 ? (s.newBytes / s.storedBytes).toFixed(2) : '-',
        (r.ms / 1000).toFixed(2),
        (s.readBytes / MB / (r.ms / 1000)).toFixed(0),
        '',
      ]);
    }
    let allSame = true;
    for (const [mode, point, original] of [
      ['restore full', full.m.id, before],
      ['restore incr', incr.m.id, image],
    ] as const) {
      t = Date.now();
      const out = join(dir, `${point}.img`);
      const rs = await repo.restoreToFile(point, 0, out);
      const ms = Date.now() - t;
      const same = await sameBytes(out, original);
      allSame &&= same;
      rows.push([
        mode,
        (rs.bytes / MB).toFixed(1),
        '-',
        '-',
        '-',
        (ms / 1000).toFixed(2),
        (rs.bytes / MB / (ms / 1000)).toFixed(0),
        same ? 'identical' : 'DIFFERENT',
      ]);
      await rm(out);
    }
    const verify = await repo.verify();
    const stored = await repo.getPoint(incr.m.id);
    const configBack =
      Buffer.from(stored.vmConfig ?? '', 'base64').toString('utf8') === VM_CONFIG.toString('utf8');
    await repo.close();

    const head = ['mode', 'read MB', 'stored MB', 'dedup x', 'compr x', 'seconds', 'MB/s', 'byte check'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    console.log('');
    console.log(head.map((h, i) => pad(h, widths[i]!)).join('  '));
    for (const r of rows) console.log(r.map((c, i) => pad(c, widths[i]!)).join('  '));
    console.log('');
    console.log(
      '  read: bytes read from the image (holes and unchanged chunks are not read); stored: new bytes written',
    );
    console.log(
      '  dedup x: read / new plaintext (zero and duplicate chunks are not stored); compr x: new plaintext / stored',
    );
    console.log(
      `  verify: ${verify.ok ? 'every chunk of both restore points authenticated and matches its id' : 'DAMAGE FOUND'} (${verify.chunksChecked} chunks)`,
    );
    console.log(
      `  VM configuration blob read back from the encrypted manifest: ${configBack ? 'identical' : 'DIFFERENT'}`,
    );
    console.log(`  total ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return allSame && verify.ok && configBack ? 0 : 1;
  } finally {
    if (!values.keep) await rm(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
