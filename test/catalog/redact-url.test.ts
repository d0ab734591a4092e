import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redactUrl } from '../../src/catalog/db.js';

test('database URLs in messages keep their address and lose their password, socket URLs included', () => {
  assert.equal(
    redactUrl('postgres://backup:s3cret@db.example:5432/vbproxy'),
    'postgres://backup:***@db.example:5432/vbproxy',
  );
  assert.equal(
    redactUrl('postgresql://vbproxy@/vbproxy?host=/run/postgresql'),
    'postgresql://vbproxy@/vbproxy?host=/run/postgresql',
  );
  assert.equal(
    redactUrl('postgresql://vbproxy:s3cret@/vbproxy?host=/run/postgresql'),
    'postgresql://vbproxy:***@/vbproxy?host=/run/postgresql',
  );
});
