/**
 * Constants of the on-disk format (docs/repository-format.md is the full description).
 * Every multi-byte integer in a binary header is little-endian.
 */

/** The repository format version this build writes and the highest it reads. */
export const FORMAT_VERSION = 1;

/** Default chunk size for new repositories (see docs/repository-format.md, "Chunk size"). */
export const DEFAULT_CHUNK_SIZE = 256 * 1024;
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 8 * 1024 * 1024;

/** Length of a chunk id (keyed BLAKE2b-256). */
export const ID_BYTES = 32;
/** The index entry of an all-zero chunk: 32 zero bytes (never a real keyed BLAKE2b output in practice). */
export const ZERO_ID = Buffer.alloc(ID_BYTES);

export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;

/** Chunk object: 8-byte header, 24-byte nonce, ciphertext with 16-byte tag. */
export const CHUNK_MAGIC = Buffer.from('VBC', 'latin1');
export const CHUNK_HEADER_BYTES = 8;
export const CODEC_RAW = 0;
export const CODEC_ZSTD = 1;

/** Index object: 64-byte header, then sealed blocks of up to ENTRIES_PER_BLOCK ids. */
export const INDEX_MAGIC = Buffer.from('VBPIDX\u0000\u0001', 'latin1');
export const INDEX_HEADER_BYTES = 64;
export const ENTRIES_PER_BLOCK = 2048;

/** Manifest object: 8-byte magic, 24-byte nonce, ciphertext (JSON) with tag. */
export const MANIFEST_MAGIC = Buffer.from('VBPMAN\u0000\u0001', 'latin1');

/** Key derivation context for crypto_kdf (exactly 8 bytes) and the subkey ids. */
export const KDF_CONTEXT = Buffer.from('vbproxy1', 'latin1');
export const SUBKEY_CHUNK_ID = 1;
export const SUBKEY_CHUNK_ENC = 2;
export const SUBKEY_INDEX_ENC = 3;
export const SUBKEY_MANIFEST_ENC = 4;
export const SUBKEY_CONFIG_MAC = 5;

/** Object paths inside a repository. */
export const paths = {
  config: 'config',
  key: 'keys/passphrase.json',
  chunkDir: (hex: string): string => `chunks/${hex.slice(0, 3)}`,
  chunk: (hex: string): string => `chunks/${hex.slice(0, 3)}/${hex}`,
  pointsDir: 'points',
  point: (pointId: string): string => `points/${pointId}`,
  indexDir: (pointId: string): string => `indexes/${pointId}`,
  index: (pointId: string, disk: number): string => `indexes/${pointId}/${disk}.fidx`,
  sessionsDir: 'sessions',
  session: (sessionId: string): string => `sessions/${sessionId}.json`,
  maintenanceLock: 'locks/maintenance',
  gcMarker: 'locks/gc',
} as const;

/** Restore point ids sort by time: `YYYYMMDDTHHMMSSZ-<8 hex>`. */
export const POINT_ID_PATTERN = /^\d{8}T\d{6}Z-[0-9a-f]{8}$/;
export const CHUNK_NAME_PATTERN = /^[0-9a-f]{64}$/;
