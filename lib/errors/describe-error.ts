/** Longest text {@link sanitizeLogText} returns, ellipsis included. */
const MAX_LOG_TEXT = 500;

/**
 * Whether a code point must not reach a log line as is: C0 and C1 controls and DEL (line
 * breaks forge log entries, ESC starts terminal escape sequences), U+2028 and U+2029 (line
 * breaks for JavaScript and JSON-lines readers), bidirectional controls and marks (they
 * reorder what a reader sees: U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), and
 * lone surrogates (not encodable in UTF-8; a log pipeline would mangle or reject the line).
 */
function mustEscape(cp: number): boolean {
  return (
    cp <= 0x1f ||
    (cp >= 0x7f && cp <= 0x9f) ||
    cp === 0x061c ||
    cp === 0x200e ||
    cp === 0x200f ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    (cp >= 0x202a && cp <= 0x202e) ||
    (cp >= 0x2066 && cp <= 0x2069) ||
    (cp >= 0xd800 && cp <= 0xdfff)
  );
}

/**
 * Text made safe for one log line or an event field: the characters listed in `mustEscape`
 * become `\uXXXX`, and the result is cut to 500 characters (ending in `…` when cut, never
 * inside an escape or a surrogate pair). Meant for text that may come from a remote server,
 * such as an authorization server's `error_description`.
 *
 * Hand-written rather than a dependency: the rule is this short list of code points plus a
 * length cap, and general escapers (JSON, shell, ANSI strippers) each miss part of it.
 * @internal
 */
export function sanitizeLogText(text: string): string {
  const pieces: string[] = [];
  let length = 0;
  // How many leading pieces fit in MAX_LOG_TEXT - 1, leaving room for the ellipsis.
  let fitting = 0;
  // Iterating a string yields whole code points (a surrogate pair is one step, a lone
  // surrogate is a step of its own), so a pair is never split.
  for (const ch of text) {
    const cp = ch.codePointAt(0) as number;
    const piece = mustEscape(cp) ? `\\u${cp.toString(16).padStart(4, '0')}` : ch;
    pieces.push(piece);
    length += piece.length;
    if (length <= MAX_LOG_TEXT - 1) fitting = pieces.length;
    // Stop reading as soon as the cap is exceeded: the message may be megabytes long.
    if (length > MAX_LOG_TEXT) return `${pieces.slice(0, fitting).join('')}…`;
  }
  return pieces.join('');
}

/**
 * An error's class and message, for log lines, through {@link sanitizeLogText}: a message may
 * carry a remote server's text (an OAuth error's `error_description`), which must not forge
 * log lines or terminal output. Never the error's other properties (a driver error may carry
 * query parameters, a fetch error a request): messages of the errors logged here name what
 * failed, not the values involved.
 * @internal
 */
export function describeError(error: unknown): string {
  let text: string;
  try {
    text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  } catch {
    // A hostile or broken toString must not turn the logging of a failure into another one.
    text = '[a value that cannot be printed]';
  }
  return sanitizeLogText(text);
}
