import type { DataSource } from 'typeorm';

/**
 * Registers, in the calling `describe` block, a `beforeAll` that opens a DataSource with
 * `open` and an `afterAll` that calls the `close` it handed back. Returns a function that
 * gives that DataSource, for the block's tests and the hooks that run after that `beforeAll`.
 *
 * @internal
 */
export function useDataSource(
  open: () => Promise<{ dataSource: DataSource; close: () => Promise<void> }>,
): () => DataSource {
  let opened: { dataSource: DataSource; close: () => Promise<void> } | undefined;
  beforeAll(async () => {
    opened = await open();
  });
  afterAll(async () => {
    await opened?.close();
  });
  return () => {
    if (!opened) {
      throw new Error(
        'The DataSource is opened in beforeAll: use it in tests and in hooks that run after it.',
      );
    }
    return opened.dataSource;
  };
}

/**
 * Initializes `dataSource` on a test database that `drop` removes, and returns it with a `close`
 * that destroys it and then drops the database. When initializing fails, the database is dropped
 * at once (nobody else holds a handle that could) and the error is thrown.
 *
 * @internal
 */
export async function openOnTestDatabase(
  dataSource: DataSource,
  drop: () => Promise<void>,
): Promise<{ dataSource: DataSource; close: () => Promise<void> }> {
  try {
    await dataSource.initialize();
  } catch (error) {
    await drop();
    throw error;
  }
  return {
    dataSource,
    close: async () => {
      await dataSource.destroy();
      await drop();
    },
  };
}
