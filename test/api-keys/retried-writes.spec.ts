/**
 * API key writes retried after an ambiguous failure: the connection is lost after the
 * statement committed (the reply never reaches the driver), so the store runs again a write
 * that already happened. Creating a key must still succeed once (one row, the same key
 * working), a revocation still say "revoked", a last-use write still say "written". A TCP
 * proxy between the DataSource and the database forwards the statement, swallows the
 * server's reply and cuts the connection.
 */
import { randomBytes } from 'node:crypto';
import type { DataSource } from 'typeorm';
import {
  AtProtoStoreError,
  isTransientDatabaseError,
  type TransientRetryOptions,
} from 'nestjs-atproto-auth';
import { AtProtoApiKeyService } from '../../lib/api-keys/api-key.service.js';
import type { ResolvedAtProtoOptions } from '../../lib/options/resolved-options.js';
import { TypeOrmApiKeyStore } from '../../lib/storage/typeorm/typeorm-api-key.store.js';
import { lostReplyDatabase } from '../support/lost-reply-database.js';
import { p, q, randomDid } from '../support/raw-sql.js';
import type { CuttingProxy } from '../storage/fault-proxy.js';

const options = {
  appSession: { cacheTtlMs: 0 },
  apiKeys: { prefix: 'atp_', lastUsedIntervalMs: 300_000, revokedGraceMs: 86_400_000 },
} as unknown as ResolvedAtProtoOptions;

describe.each(['postgres', 'mariadb'] as const)(
  'API key writes retried after a lost reply on %s',
  (dialect) => {
    let proxy: CuttingProxy;
    let viaProxy: DataSource;
    let direct: DataSource;
    let retry: TransientRetryOptions;
    let retried: unknown[];
    let close: (() => Promise<void>) | undefined;
    const t = (name: string) => q(dialect, name);

    beforeAll(async () => {
      ({ direct, viaProxy, proxy, retry, retried, close } = await lostReplyDatabase(
        dialect,
        'api_key_retried',
      ));
    });
    afterAll(async () => {
      await close?.();
    });
    beforeEach(() => {
      retried.length = 0;
    });

    async function rowsFor(did: string): Promise<unknown[]> {
      return (await direct.query(
        `SELECT ${t('id')} FROM ${t('atproto_api_key')} WHERE ${t('did')} = ${p(dialect, 1)}`,
        [did],
      )) as unknown[];
    }

    it('create: the INSERT committed but its reply was lost; the retry finds our row and the key works', async () => {
      const service = new AtProtoApiKeyService(
        options,
        new TypeOrmApiKeyStore(viaProxy, { retry }),
      );
      const did = randomDid();
      const cut = proxy.cutNext(/INSERT INTO .atproto_api_key/, 'after-reply');
      const { key, info } = await service.create(did, { name: 'bot', scopes: ['a'] });
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect(retried.every(isTransientDatabaseError)).toBe(true);
      expect(await rowsFor(did)).toHaveLength(1);
      const direct_ = new AtProtoApiKeyService(options, new TypeOrmApiKeyStore(direct));
      expect(await direct_.validate(key)).toMatchObject({ id: info.id, did, scopes: ['a'] });
    });

    it('create: on a retry, a row with our id but another DID is not ours: still an error', async () => {
      const store = new TypeOrmApiKeyStore(viaProxy, { retry });
      const now = new Date();
      const r = {
        id: randomBytes(32).toString('hex'),
        did: randomDid(),
        name: 'bot',
        displayPrefix: 'atp_AbCd1234',
        scopes: null,
        createdAt: now,
        expiresAt: null,
        revokedAt: null,
        lastUsedAt: null,
      };
      const intruder = randomDid();
      const cut = proxy.cutNext(/INSERT INTO .atproto_api_key/, 'before-request', async () => {
        await new TypeOrmApiKeyStore(direct).create({ ...r, did: intruder });
      });
      const error = await store.create(r).then(
        () => undefined,
        (e: unknown) => e,
      );
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect(error).toBeInstanceOf(AtProtoStoreError);
      expect((error as Error).message).toMatch(/already exists/);
      expect(await rowsFor(r.did)).toHaveLength(0);
      expect(await rowsFor(intruder)).toHaveLength(1);
    });

    it('revoke: the UPDATE committed but its reply was lost; revoke still resolves true', async () => {
      const service = new AtProtoApiKeyService(
        options,
        new TypeOrmApiKeyStore(viaProxy, { retry }),
      );
      const did = randomDid();
      const { key, info } = await service.create(did, { name: 'bot' });
      const cut = proxy.cutNext(/UPDATE .atproto_api_key. SET .revoked_at/, 'after-reply');
      expect(await service.revoke(info.id, { did })).toBe(true);
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect(await service.validate(key)).toBeUndefined();
      expect(await service.revoke(info.id, { did })).toBe(false);
    });

    it('touch: the UPDATE committed but its reply was lost; touch still says it wrote', async () => {
      const store = new TypeOrmApiKeyStore(viaProxy, { retry });
      const service = new AtProtoApiKeyService(options, store);
      const { info } = await service.create(randomDid(), { name: 'bot' });
      const at = new Date();
      const cut = proxy.cutNext(/UPDATE .atproto_api_key. SET .last_used_at/, 'after-reply');
      expect(await store.touch(info.id, at, new Date(at.getTime() - 300_000))).toBe(true);
      await cut;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      expect((await store.get(info.id))?.lastUsedAt).toEqual(at);
    });
  },
);
