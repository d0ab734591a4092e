import sodium from 'sodium-native';

/**
 * Argon2id key-encryption keys for passphrases (the key file's KDF, docs/repository-format.md
 * section 2), derived on libuv's thread pool. One derivation can be started ahead, before the
 * code that needs it has even loaded (`deriveKekAhead`): a command-line run then pays for the
 * module loading and the derivation side by side instead of one after the other.
 */

interface Inputs {
  readonly passphrase: string;
  readonly salt: Buffer;
  readonly opslimit: number;
  readonly memlimit: number;
}

let ahead: { inputs: Inputs; kek: Promise<Buffer> } | undefined;

function derive({ passphrase, salt, opslimit, memlimit }: Inputs): Promise<Buffer> {
  const out = sodium.sodium_malloc(32);
  const pw = Buffer.from(passphrase, 'utf8');
  return sodium
    .crypto_pwhash_async(out, pw, salt, opslimit, memlimit, sodium.crypto_pwhash_ALG_ARGON2ID13)
    .then(() => out)
    .finally(() => sodium.sodium_memzero(pw));
}

function same(a: Inputs, b: Inputs): boolean {
  return (
    a.passphrase === b.passphrase &&
    a.salt.equals(b.salt) &&
    a.opslimit === b.opslimit &&
    a.memlimit === b.memlimit
  );
}

/** Starts deriving the key for these inputs now; the next `deriveKek` with the same inputs takes it. */
export function deriveKekAhead(passphrase: string, salt: Buffer, opslimit: number, memlimit: number): void {
  const inputs = { passphrase, salt, opslimit, memlimit };
  const kek = derive(inputs);
  kek.catch(() => undefined); // a failure surfaces when (and if) deriveKek takes it
  ahead = { inputs, kek };
}

/** The key for a passphrase under the key file's salt and limits (32 bytes, sodium_malloc'd). */
export function deriveKek(
  passphrase: string,
  salt: Buffer,
  opslimit: number,
  memlimit: number,
): Promise<Buffer> {
  const inputs = { passphrase, salt, opslimit, memlimit };
  const started = ahead;
  ahead = undefined;
  if (started && same(started.inputs, inputs)) return started.kek;
  if (started) void started.kek.then((k) => sodium.sodium_memzero(k)).catch(() => undefined);
  return derive(inputs);
}
