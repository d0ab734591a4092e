/**
 * A compact set of chunk ids for GC's mark phase: the first 64 bits of each id in a sorted
 * BigUint64Array (8 bytes per referenced chunk, e.g. 16 MiB for two million chunks). A prefix
 * collision can only keep an unreferenced chunk, never delete a referenced one.
 */
export class ChunkIdSet {
  private parts: BigUint64Array[] = [];
  private current = new BigUint64Array(65536);
  private fill = 0;
  private sorted: BigUint64Array | undefined;

  add(id: Buffer): void {
    if (this.fill === this.current.length) {
      this.parts.push(this.current);
      this.current = new BigUint64Array(65536);
      this.fill = 0;
    }
    this.current[this.fill++] = id.readBigUInt64BE(0);
    this.sorted = undefined;
  }

  private seal(): BigUint64Array {
    if (this.sorted) return this.sorted;
    const total = this.parts.length * 65536 + this.fill;
    const all = new BigUint64Array(total);
    let o = 0;
    for (const p of this.parts) {
      all.set(p, o);
      o += p.length;
    }
    all.set(this.current.subarray(0, this.fill), o);
    all.sort();
    let u = 0;
    for (let i = 0; i < all.length; i++) if (i === 0 || all[i] !== all[u - 1]) all[u++] = all[i]!;
    this.sorted = all.subarray(0, u);
    this.parts = [this.sorted];
    this.current = new BigUint64Array(65536);
    this.fill = 0;
    return this.sorted;
  }

  get size(): number {
    return this.seal().length;
  }

  hasHex(hex: string): boolean {
    const a = this.seal();
    const key = BigInt(`0x${hex.slice(0, 16)}`);
    let lo = 0;
    let hi = a.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = a[mid]!;
      if (v === key) return true;
      if (v < key) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }
}
