/**
 * The lock the OAuth client takes around every session restore and refresh, one name per
 * DID. Swap it (provide this abstract class) to coordinate several app instances.
 * @publicApi
 */
export abstract class AtProtoRequestLock {
  /** Runs `fn` while holding the lock `name`; waits for the lock first. */
  abstract run<T>(name: string, fn: () => T | PromiseLike<T>): Promise<T>;
}

/**
 * An in-process lock: serializes work per name within this Node.js process only. Correct
 * for a single app instance (the embedded default); several instances need a distributed
 * lock, or two of them may refresh the same session and log its user out.
 * @publicApi
 */
export class LocalRequestLock extends AtProtoRequestLock {
  readonly #tails = new Map<string, Promise<unknown>>();

  async run<T>(name: string, fn: () => T | PromiseLike<T>): Promise<T> {
    const previous = this.#tails.get(name) ?? Promise.resolve();
    let release!: () => void;
    const current = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => current);
    this.#tails.set(name, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      // Forget the name once nobody queues behind us, so the map does not grow per DID.
      if (this.#tails.get(name) === tail) this.#tails.delete(name);
    }
  }
}
