import { AtProtoError } from './at-proto.error.js';

/**
 * Thrown at boot when the module's options (or a key ring given to it) are invalid.
 * `problems` lists every issue found, not only the first, each with how to fix it.
 * @publicApi
 */
export class AtProtoConfigError extends AtProtoError {
  /** Every problem found, one line each. */
  readonly problems: readonly string[];

  constructor(problems: readonly string[], subject = 'AtProtoModule options') {
    super(
      'ERR_AT_PROTO_CONFIG',
      `Invalid ${subject} (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n` +
        problems.map((p) => `  - ${p}`).join('\n'),
    );
    this.problems = problems;
  }
}
