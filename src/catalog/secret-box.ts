import { createRequire } from 'node:module';

/** The part of sodium-native used here (the package ships no type declarations). */
interface SodiumSecretbox {
  crypto_secretbox_KEYBYTES: number;
  crypto_secretbox_NONCEBYTES: number;
  crypto_secretbox_MACBYTES: number;
  sodium_malloc(size: number): Buffer;
  randombytes_buf(buf: Buffer): void;
  crypto_secretbox_easy(c: Buffer, m: Buffer, n: Buffer, k: Buffer): void;
  crypto_secretbox_open_easy(m: Buffer, c: Buffer, n: Buffer, k: Buffer): boolean;
}
const sodium = createRequire(import.meta.url)('sodium-native') as SodiumSecretbox;
import { CatalogError } from './errors.js';

/**
 * Seals secrets kept in the catalog (vCenter passwords) with libsodium's secretbox
 * (XSalsa20-Poly1305) under a 32-byte key that lives in a file outside the database
 * (`catalog.secretKeyFile`, 64 hex characters). Sealed form: nonce || MAC || ciphertext.
 */
export class SecretBox {
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== sodium.crypto_secretbox_KEYBYTES) {
      throw new CatalogError(
        'CATALOG_SECRET_KEY',
        `the catalog secret key must be ${sodium.crypto_secretbox_KEYBYTES} bytes, got ${key.length}`,
      );
    }
    this.#key = sodium.sodium_malloc(sodium.crypto_secretbox_KEYBYTES);
    key.copy(this.#key);
  }

  /** Parses the key file content: 64 hex characters. `source` names the file for messages. */
  static fromKeyFile(content: Buffer, source: string): SecretBox {
    const text = content.toString('utf8').trim();
    if (!/^[0-9a-fA-F]{64}$/.test(text)) {
      throw new CatalogError(
        'CATALOG_SECRET_KEY',
        `${source} must hold 64 hexadecimal characters (32 random bytes, e.g. from "openssl rand -hex 32")`,
      );
    }
    return new SecretBox(Buffer.from(text, 'hex'));
  }

  /** A fresh random key as the 64 hex characters a key file holds. */
  static generateKeyHex(): string {
    const key = Buffer.alloc(sodium.crypto_secretbox_KEYBYTES);
    sodium.randombytes_buf(key);
    return key.toString('hex');
  }

  seal(plaintext: string): Buffer {
    const message = Buffer.from(plaintext, 'utf8');
    const out = Buffer.alloc(
      sodium.crypto_secretbox_NONCEBYTES + sodium.crypto_secretbox_MACBYTES + message.length,
    );
    const nonce = out.subarray(0, sodium.crypto_secretbox_NONCEBYTES);
    sodium.randombytes_buf(nonce);
    sodium.crypto_secretbox_easy(out.subarray(sodium.crypto_secretbox_NONCEBYTES), message, nonce, this.#key);
    message.fill(0);
    return out;
  }

  open(sealed: Buffer): string {
    const n = sodium.crypto_secretbox_NONCEBYTES;
    if (sealed.length < n + sodium.crypto_secretbox_MACBYTES) {
      throw new CatalogError('CATALOG_SECRET_CORRUPT', 'a sealed catalog secret is truncated');
    }
    const out = Buffer.alloc(sealed.length - n - sodium.crypto_secretbox_MACBYTES);
    if (!sodium.crypto_secretbox_open_easy(out, sealed.subarray(n), sealed.subarray(0, n), this.#key)) {
      throw new CatalogError(
        'CATALOG_SECRET_KEY_MISMATCH',
        'a catalog secret does not open with the key in catalog.secretKeyFile (wrong key file, or the row was altered)',
      );
    }
    return out.toString('utf8');
  }
}
