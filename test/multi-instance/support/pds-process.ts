/**
 * The PDS of the multi-instance tests, in a process of its own: PLC + PDS (the e2e harness,
 * test/e2e/support/pds.ts), one account, and a small control API on another port. Token
 * requests are counted and delayed *inside this process*, in front of the PDS's own
 * listener: a proxy in front of the PDS would change the issuer URL and break the flow.
 *
 * Run by pds-client.ts as
 *   NODE_EXTRA_CA_CERTS=ca.crt node --import e2e-dns.mjs --import ts-hooks.mjs \
 *     --import exit-with-parent.mjs pds-process.ts
 * so that the PDS trusts the test CA and resolves `*.e2e.internal` (the app instances'
 * https origin, where it fetches the client metadata) to 127.0.0.1.
 *
 * Prints one line `MI-PDS-READY {json}` when ready. Control API (JSON, 127.0.0.1):
 * - `GET /requests`: every `POST /oauth/token` and `/oauth/revoke` so far (see
 *   `OAuthEndpointRequest`; tokens appear only as `refreshTokenHash`es);
 * - `POST /token-delay?ms=`, `POST /token-response-delay?ms=`, `POST /reset` (the log);
 * - `GET /grants?did=`: the PDS's OAuth grants (rows of its `token` table) of a DID, with
 *   the hashes of the current and of the used refresh tokens.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { refreshTokenHash, startTestPds } from '../../e2e/support/pds.js';

interface AccountDb {
  db: {
    selectFrom(table: string): {
      selectAll(): {
        where(column: string, op: string, value: unknown): { execute(): Promise<unknown[]> };
        execute(): Promise<unknown[]>;
      };
    };
  };
}

const pds = await startTestPds();
const account = await pds.createAccount('alice.test');
const accountDb = (pds.pds.ctx.accountManager as unknown as { db: AccountDb }).db;

async function grants(did: string): Promise<unknown[]> {
  const rows = (await accountDb.db
    .selectFrom('token')
    .selectAll()
    .where('did', '=', did)
    .execute()) as Array<Record<string, unknown>>;
  const used = (await accountDb.db.selectFrom('used_refresh_token').selectAll().execute()) as Array<
    Record<string, unknown>
  >;
  return rows.map((row) => ({
    id: row.id,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    expiresAt: row.expiresAt,
    currentRefreshToken:
      typeof row.currentRefreshToken === 'string'
        ? refreshTokenHash(row.currentRefreshToken)
        : null,
    usedRefreshTokens: used
      .filter((u) => u.tokenId === row.id)
      .map((u) => refreshTokenHash(String(u.refreshToken))),
  }));
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://control');
  const ms = Number(url.searchParams.get('ms') ?? 0);
  const route = `${req.method} ${url.pathname}`;
  if (route === 'GET /requests') {
    return send(res, 200, { token: pds.tokenRequests, revoke: pds.revokeRequests });
  }
  if (route === 'POST /token-delay') {
    pds.setTokenDelay(ms);
    return send(res, 200, { ok: true });
  }
  if (route === 'POST /token-response-delay') {
    pds.setTokenResponseDelay(ms);
    return send(res, 200, { ok: true });
  }
  if (route === 'POST /reset') {
    pds.resetRequestLog();
    return send(res, 200, { ok: true });
  }
  if (route === 'GET /grants') {
    return send(res, 200, await grants(url.searchParams.get('did') ?? ''));
  }
  return send(res, 404, { error: 'not found' });
}

const control = createServer((req, res) => {
  handle(req, res).catch((error: unknown) => send(res, 500, { error: String(error) }));
});
await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));

const stop = (): void => {
  control.close();
  pds.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

console.log(
  `MI-PDS-READY ${JSON.stringify({
    url: pds.url,
    plcUrl: pds.plcUrl,
    control: `http://127.0.0.1:${(control.address() as AddressInfo).port}`,
    account,
  })}`,
);
