import {
  createCatalogDatabase,
  DEFAULT_PG_ADMIN_URL,
  type CatalogDatabase,
} from '../../src/lab/environment.js';

const ADMIN_URL = process.env.VBPROXY_TEST_PG_URL ?? DEFAULT_PG_ADMIN_URL;

/** A fresh database `vbproxy_test_<random>` with the catalog migrated; drop() removes it. */
export type TestDatabase = CatalogDatabase;

export function createTestDatabase(options: { migrate?: boolean } = {}): Promise<TestDatabase> {
  return createCatalogDatabase({ adminUrl: ADMIN_URL, namePrefix: 'vbproxy_test', migrate: options.migrate });
}
