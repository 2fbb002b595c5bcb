import { AtProtoStoreError } from '../../errors/at-proto-store.error.js';
import { type TransientRetryOptions, withTransientRetry } from '../transient-retry.js';
import { isUniqueViolation } from './upsert.js';

// Writes retried after transient failures give the same answer whether or not their first
// attempt landed: a lost connection leaves that unknown, and the retry then finds the row as
// the first attempt left it. These two shapes carry that rule for the TypeORM stores.

/**
 * An INSERT retried after transient failures. A duplicate key on a retry may be our own row,
 * committed by a first attempt whose reply was lost: success if `isOurs` (it reads the row on
 * the primary and compares what only this write could have put there). Any other duplicate
 * key is an {@link AtProtoStoreError} with the message `duplicate`.
 * @internal
 */
export async function insertOnce(
  what: string,
  insert: () => Promise<unknown>,
  isOurs: () => Promise<boolean>,
  duplicate: string,
  retry: TransientRetryOptions | undefined,
): Promise<void> {
  let attempt = 0;
  await withTransientRetry(
    what,
    async () => {
      attempt++;
      try {
        await insert();
      } catch (error) {
        if (!isUniqueViolation(error)) throw error;
        if (attempt > 1 && (await isOurs())) return;
        throw new AtProtoStoreError(duplicate, { cause: error });
      }
    },
    retry,
  );
}

/**
 * A conditional UPDATE retried after transient failures; resolves whether it applied. One
 * that matched rows applied. One that matched nothing on its first attempt did not (the
 * condition was false). One that matched nothing on a retry may have applied on a first
 * attempt whose reply was lost, which left the condition false: it did if `isOurs` (it reads
 * the row on the primary and recognizes the values this write put there, such as its instant
 * or a fresh random value).
 * @internal
 */
export async function updateOnce(
  what: string,
  update: () => Promise<{ affected?: number | null }>,
  isOurs: () => Promise<boolean>,
  retry: TransientRetryOptions | undefined,
): Promise<boolean> {
  let attempt = 0;
  return withTransientRetry(
    what,
    async () => {
      attempt++;
      const result = await update();
      if ((result.affected ?? 0) > 0) return true;
      if (attempt === 1) return false;
      return isOurs();
    },
    retry,
  );
}
