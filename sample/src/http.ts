/** The few parts of Express's request and response the sample touches. */
export interface SampleRequest {
  method: string;
  headers: Record<string, string | string[] | undefined>;
}

export interface SampleResponse {
  status(code: number): SampleResponse;
  json(body: unknown): void;
  send(body: string): void;
  type(contentType: string): SampleResponse;
  redirect(status: number, url: string): void;
  setHeader(name: string, value: string): void;
}

function header(req: SampleRequest, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** Whether the client asked for a page (a browser navigation or form post) rather than JSON. */
export function wantsHtml(req: SampleRequest): boolean {
  return (header(req, 'accept') ?? '').includes('text/html');
}

/** One cookie from the request, or `undefined`. */
export function readCookie(req: SampleRequest, name: string): string | undefined {
  for (const part of (header(req, 'cookie') ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}
