import sodium from 'sodium-native';
import { z } from 'zod';
import {
  KDF_CONTEXT,
  SUBKEY_CHUNK_ENC,
  SUBKEY_CHUNK_ID,
  SUBKEY_CONFIG_MAC,
  SUBKEY_INDEX_ENC,
  SUBKEY_MANIFEST_ENC,
} from './format.js';
import { WrongPassphraseError, CorruptObjectError } from './errors.js';
import { deriveKek } from './kdf.js';

/** The keys derived from the master key. Never logged, never written in plaintext. */
export interface RepositoryKeys {
  /** Key of the keyed BLAKE2b that names chunks. */
  readonly chunkId: Buffer;
  /** XChaCha20-Poly1305 key of chunk objects. */
  readonly chunkEnc: Buffer;
  /** XChaCha20-Poly1305 key of index blocks. */
  readonly indexEnc: Buffer;
  /** XChaCha20-Poly1305 key of manifests. */
  readonly manifestEnc: Buffer;
  /** Keyed BLAKE2b key that authenticates the config object. */
  readonly configMac: Buffer;
}

/** Argon2id parameters (libsodium's INTERACTIVE limits: 64 MiB keeps the CLI under its memory budget). */
export const DEFAULT_KDF = {
  opslimit: sodium.crypto_pwhash_OPSLIMIT_INTERACTIVE,
  memlimit: sodium.crypto_pwhash_MEMLIMIT_INTERACTIVE,
};

export const keyFileSchema = z.object({
  version: z.literal(1),
  kdf: z.object({
    algorithm: z.literal('argon2id13'),
    opslimit: z.number().int().positive(),
    memlimit: z.number().int().positive(),
    salt: z.string(),
  }),
  /** XChaCha20-Poly1305 of the master key under the Argon2id output, AD = repository id. */
  nonce: z.string(),
  wrappedKey: z.string(),
  /** Optional: the master key sealed (crypto_box_seal) to the manager's X25519 public key. */
  managerSeal: z.object({ publicKey: z.string(), sealedKey: z.string() }).optional(),
  createdAt: z.string(),
});
export type KeyFile = z.infer<typeof keyFileSchema>;

export function newMasterKey(): Buffer {
  const key = sodium.sodium_malloc(32);
  sodium.randombytes_buf(key);
  return key;
}

export function deriveKeys(master: Buffer): RepositoryKeys {
  const sub = (id: number): Buffer => {
    const k = sodium.sodium_malloc(32);
    sodium.crypto_kdf_derive_from_key(k, id, KDF_CONTEXT, master);
    return k;
  };
  return {
    chunkId: sub(SUBKEY_CHUNK_ID),
    chunkEnc: sub(SUBKEY_CHUNK_ENC),
    indexEnc: sub(SUBKEY_INDEX_ENC),
    manifestEnc: sub(SUBKEY_MANIFEST_ENC),
    configMac: sub(SUBKEY_CONFIG_MAC),
  };
}

/** Wraps `master` under a passphrase (and optionally seals it to a manager public key). */
export async function wrapMasterKey(
  master: Buffer,
  passphrase: string,
  repositoryId: string,
  options: { managerPublicKey?: Buffer; kdf?: { opslimit: number; memlimit: number } } = {},
): Promise<KeyFile> {
  const { opslimit, memlimit } = options.kdf ?? DEFAULT_KDF;
  const salt = Buffer.alloc(sodium.crypto_pwhash_SALTBYTES);
  sodium.randombytes_buf(salt);
  const k = await deriveKek(passphrase, salt, opslimit, memlimit);
  const nonce = Buffer.alloc(24);
  sodium.randombytes_buf(nonce);
  const wrapped = Buffer.alloc(master.length + 16);
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
    wrapped,
    master,
    Buffer.from(repositoryId),
    null,
    nonce,
    k,
  );
  sodium.sodium_memzero(k);
  const file: KeyFile = {
    version: 1,
    kdf: { algorithm: 'argon2id13', opslimit, memlimit, salt: salt.toString('base64') },
    nonce: nonce.toString('base64'),
    wrappedKey: wrapped.toString('base64'),
    createdAt: new Date().toISOString(),
  };
  if (options.managerPublicKey) {
    const sealed = Buffer.alloc(master.length + sodium.crypto_box_SEALBYTES);
    sodium.crypto_box_seal(sealed, master, options.managerPublicKey);
    file.managerSeal = {
      publicKey: options.managerPublicKey.toString('base64'),
      sealedKey: sealed.toString('base64'),
    };
  }
  return file;
}

/** Unwraps the master key with a passphrase; WrongPassphraseError when it does not fit. */
export async function unwrapMasterKey(
  file: KeyFile,
  passphrase: string,
  repositoryId: string,
  location: string,
): Promise<Buffer> {
  const salt = Buffer.from(file.kdf.salt, 'base64');
  const nonce = Buffer.from(file.nonce, 'base64');
  const wrapped = Buffer.from(file.wrappedKey, 'base64');
  if (salt.length !== sodium.crypto_pwhash_SALTBYTES || nonce.length !== 24 || wrapped.length !== 48) {
    throw new CorruptObjectError(
      'key',
      `${location}/keys/passphrase.json`,
      'salt, nonce or wrapped key has the wrong length',
    );
  }
  const k = await deriveKek(passphrase, salt, file.kdf.opslimit, file.kdf.memlimit);
  const master = sodium.sodium_malloc(32);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
      master,
      null,
      wrapped,
      Buffer.from(repositoryId),
      nonce,
      k,
    );
  } catch {
    throw new WrongPassphraseError(location);
  } finally {
    sodium.sodium_memzero(k);
  }
  return master;
}

/** Opens the manager seal with the manager's key pair (the manager's recovery path). */
export function openManagerSeal(
  file: KeyFile,
  publicKey: Buffer,
  secretKey: Buffer,
  location: string,
): Buffer {
  if (!file.managerSeal) throw new WrongPassphraseError(location);
  const master = sodium.sodium_malloc(32);
  const ok = sodium.crypto_box_seal_open(
    master,
    Buffer.from(file.managerSeal.sealedKey, 'base64'),
    publicKey,
    secretKey,
  );
  if (!ok) throw new WrongPassphraseError(location);
  return master;
}

/** Keyed BLAKE2b-256 MAC. */
export function mac(key: Buffer, ...parts: Buffer[]): Buffer {
  const out = Buffer.alloc(32);
  sodium.crypto_generichash(out, Buffer.concat(parts), key);
  return out;
}
