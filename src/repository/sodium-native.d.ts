/** The subset of sodium-native (libsodium bindings) that the repository uses. */
declare module 'sodium-native' {
  export const crypto_generichash_BYTES: number;
  export const crypto_generichash_KEYBYTES: number;
  export const crypto_kdf_KEYBYTES: number;
  export const crypto_kdf_CONTEXTBYTES: number;
  export const crypto_aead_xchacha20poly1305_ietf_KEYBYTES: number;
  export const crypto_aead_xchacha20poly1305_ietf_NPUBBYTES: number;
  export const crypto_aead_xchacha20poly1305_ietf_ABYTES: number;
  export const crypto_pwhash_SALTBYTES: number;
  export const crypto_pwhash_ALG_ARGON2ID13: number;
  export const crypto_pwhash_OPSLIMIT_INTERACTIVE: number;
  export const crypto_pwhash_MEMLIMIT_INTERACTIVE: number;
  export const crypto_box_PUBLICKEYBYTES: number;
  export const crypto_box_SECRETKEYBYTES: number;
  export const crypto_box_SEALBYTES: number;
  export function randombytes_buf(buf: Uint8Array): void;
  export function sodium_malloc(size: number): Buffer;
  export function sodium_memzero(buf: Uint8Array): void;
  export function crypto_generichash(output: Uint8Array, input: Uint8Array, key?: Uint8Array | null): void;
  export function crypto_kdf_derive_from_key(
    subkey: Uint8Array,
    subkeyId: number,
    ctx: Uint8Array,
    key: Uint8Array,
  ): void;
  export function crypto_aead_xchacha20poly1305_ietf_encrypt(
    ciphertext: Uint8Array,
    message: Uint8Array,
    ad: Uint8Array | null,
    nsec: null,
    npub: Uint8Array,
    key: Uint8Array,
  ): number;
  export function crypto_aead_xchacha20poly1305_ietf_decrypt(
    message: Uint8Array,
    nsec: null,
    ciphertext: Uint8Array,
    ad: Uint8Array | null,
    npub: Uint8Array,
    key: Uint8Array,
  ): number;
  export function crypto_pwhash_async(
    output: Uint8Array,
    password: Uint8Array,
    salt: Uint8Array,
    opslimit: number,
    memlimit: number,
    algorithm: number,
  ): Promise<void>;
  export function crypto_box_keypair(pk: Uint8Array, sk: Uint8Array): void;
  export function crypto_box_seal(ciphertext: Uint8Array, message: Uint8Array, pk: Uint8Array): void;
  export function crypto_box_seal_open(
    message: Uint8Array,
    ciphertext: Uint8Array,
    pk: Uint8Array,
    sk: Uint8Array,
  ): boolean;
}
