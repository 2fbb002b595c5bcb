import { AtProtoError } from '../errors/at-proto.error.js';

/**
 * Loads an optional peer dependency (ioredis, redlock, bullmq...) only when the feature that
 * needs it is configured, with an error that names the package to install.
 * @internal
 */
export async function loadOptional<T>(
  pkg: string,
  feature: string,
  /** What to install, when the bare name gets the wrong version (e.g. `redlock@5.0.0-beta.2`). */
  installSpec = pkg,
): Promise<T> {
  try {
    return (await import(pkg)) as T;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new AtProtoError(
        'ERR_AT_PROTO_OPTIONAL_DEPENDENCY',
        `${feature} needs the package "${pkg}", which is not installed: npm install ${installSpec}`,
        { cause: error },
      );
    }
    throw error;
  }
}
