/**
 * An error's class and message, for log lines. Never the error's other properties (a driver
 * error may carry query parameters, a fetch error a request): messages of the errors logged
 * here name what failed, not the values involved.
 * @internal
 */
export function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
