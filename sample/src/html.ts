/**
 * A tiny HTML template helper: every interpolated value is escaped unless it is itself the
 * result of `html` (or `raw`). Arrays are joined. `null`, `undefined` and `false` render
 * nothing, so `${cond && html`...`}` works.
 */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Escapes text for use in HTML content and in quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

function render(value: unknown): string {
  if (value === null || value === undefined || value === false) return '';
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map(render).join('');
  return escapeHtml(String(value));
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): SafeHtml {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    out += render(value) + (strings[i + 1] ?? '');
  });
  return new SafeHtml(out);
}

/** Marks trusted markup as safe. Never pass user input. */
export function raw(markup: string): SafeHtml {
  return new SafeHtml(markup);
}

/** A whole page with a minimal stylesheet. */
export function page(title: string, body: SafeHtml): string {
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${title}</title>
        <style>
          body {
            font:
              16px/1.5 system-ui,
              sans-serif;
            max-width: 42rem;
            margin: 2rem auto;
            padding: 0 1rem;
          }
          input,
          button {
            font: inherit;
            padding: 0.3rem 0.6rem;
          }
          form.inline {
            display: inline;
          }
          pre {
            background: #f4f4f4;
            padding: 0.6rem;
            overflow-x: auto;
          }
          table {
            border-collapse: collapse;
          }
          td,
          th {
            padding: 0.2rem 0.6rem;
            border-bottom: 1px solid #ddd;
            text-align: left;
          }
          .muted {
            color: #666;
          }
        </style>
      </head>
      <body>
        <h1>${title}</h1>
        ${body}
      </body>
    </html> `.value;
}
