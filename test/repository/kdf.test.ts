import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deriveKek, deriveKekAhead } from '../../src/repository/kdf.js';
import { TEST_KDF } from './helpers.js';

const SALT = Buffer.alloc(16, 7);
const { opslimit, memlimit } = TEST_KDF;

test('a key derivation started ahead is taken only by the same passphrase, salt and limits', async () => {
  const fresh = Buffer.from(await deriveKek('right', SALT, opslimit, memlimit));

  deriveKekAhead('right', SALT, opslimit, memlimit);
  assert.deepEqual(Buffer.from(await deriveKek('right', SALT, opslimit, memlimit)), fresh);

  // Started ahead for other inputs (another passphrase, salt or limit): the caller gets its own.
  for (const [p, s, o] of [
    ['wrong', SALT, opslimit],
    ['right', Buffer.alloc(16, 8), opslimit],
    ['right', SALT, opslimit + 1],
  ] as const) {
    deriveKekAhead(p, s, o, memlimit);
    assert.deepEqual(Buffer.from(await deriveKek('right', SALT, opslimit, memlimit)), fresh);
  }

  // An ahead derivation is used once: the next call derives again (same result).
  deriveKekAhead('right', SALT, opslimit, memlimit);
  await deriveKek('right', SALT, opslimit, memlimit);
  assert.deepEqual(Buffer.from(await deriveKek('right', SALT, opslimit, memlimit)), fresh);
});
