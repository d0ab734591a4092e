import { createRequire } from 'node:module';

/**
 * An uninitialised Buffer of `size` bytes that starts at an `alignment` boundary in memory, for
 * direct I/O (O_DIRECT, unbuffered VDDK disks): a view into a slightly larger ArrayBuffer that
 * nothing else uses, so it may still be transferred to another thread whole. The address comes
 * from koffi (Node has no aligned allocation), loaded on first use: chunk workers that never need
 * an aligned buffer do not pay for loading it.
 */
export function alignedBuffer(size: number, alignment: number): Buffer {
  const koffi = createRequire(import.meta.url)('koffi') as { address(b: Buffer): bigint };
  const raw = Buffer.allocUnsafeSlow(size + alignment);
  const skew = Number(koffi.address(raw) % BigInt(alignment));
  const start = skew === 0 ? 0 : alignment - skew;
  return raw.subarray(start, start + size);
}
