/**
 * The verified-token cache of inbound service auth (docs/benchmarks.md, "Inbound service
 * auth"): what `AtProtoServiceJwtVerifier.verify` costs per request with
 * `serviceAuth.verifiedCacheMaxEntries` at its default (10,000) against the same verifier
 * with the cache off (0), side by side in one process:
 *
 * - **reused**: one token sent again and again, as callers do (a PDS's token lives 60 s;
 *   `AtProtoServiceAuthService` and other clients reuse it): with the cache, every request
 *   after the first skips the signature check and the issuer key lookup;
 * - **fresh**: a new token on every request, the cache's miss path (a SHA-256 of the token,
 *   a lookup that finds nothing, an insertion, least recently used entries pushed out once
 *   10,000 are held), against the same tokens with no cache.
 *
 * Two issuers, each a did:web served on loopback by this process: one whose `#atproto` key
 * is secp256k1 (ES256K, what PDSes sign with) and one P-256 (ES256). Their DID documents are
 * fetched once by each verifier, then served from its in-memory cache, as in production.
 *
 * Within one run the variants alternate in rounds (the order rotates each round), on the
 * same sequence of tokens; per round, p50 and p99 latency of each variant and their ratio to
 * the baseline (cache off) of the same round; the table gives the median over the rounds
 * and the range of the ratios.
 *
 *   node --import ./bench/support/swc-hooks.mjs bench/service-auth/main.ts            full run
 *   node --import ./bench/support/swc-hooks.mjs bench/service-auth/main.ts --smoke    checks only
 * Options: --rounds N (7), --ops N (1000 requests per variant, round and concurrency),
 *          --concurrency 1,10, --json FILE.
 * @internal
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { type DynamicModule, Logger, Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { P256Keypair, Secp256k1Keypair, type Keypair } from '@atproto/crypto';
import {
  AtProtoModule,
  AtProtoServiceJwtError,
  AtProtoServiceJwtVerifier,
  type AtProtoServiceCaller,
  type AtProtoServiceAuthRouteOptions,
} from 'nestjs-atproto-auth';
import {
  type VerifiedClaims,
  VerifiedTokenCache,
} from '../../lib/service-auth/verified-token-cache.js';
import { signToken } from '../../test/e2e/support/service-jwt.js';
import {
  measure,
  ratioTable,
  type Results,
  type RoundResult,
  type Variant,
} from '../support/measure.js';
import { fmt, median } from '../support/report.js';

/** One key for both apps of the run: the key ring is process-wide (crypto/key-ring.registry.ts). */
const ENCRYPTION_KEY = randomBytes(32).toString('base64');
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SERVICE = 'did:web:feed.bench.internal';
const LXM = 'app.bsky.feed.getFeedSkeleton';
const ROUTE: AtProtoServiceAuthRouteOptions = { lxm: LXM };
/** Tokens of the run stay valid for all of it (at most `serviceAuth.maxAge`, 1 h). */
const TOKEN_LIFETIME_S = 3000;

const { values: args } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '7' },
    ops: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '1,10' },
    json: { type: 'string' },
  },
});
const SMOKE = args.smoke;
const ROUNDS = SMOKE ? 1 : Number(args.rounds);
const OPS = SMOKE ? 50 : Number(args.ops);
const CONCURRENCY = args.concurrency.split(',').map(Number);

// --- the issuers and the verifiers -----------------------------------------------------------

interface Issuer {
  alg: 'ES256K' | 'ES256';
  did: string;
  host: string;
  key: Keypair;
  server: Server;
}

/** A did:web on loopback whose `#atproto` key is `key`. */
async function serveIssuer(alg: Issuer['alg'], key: Keypair): Promise<Issuer> {
  const issuer = { alg, key } as Issuer;
  issuer.server = createServer((req, res) => {
    if (req.url !== '/.well-known/did.json') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        '@context': ['https://www.w3.org/ns/did/v1'],
        id: issuer.did,
        verificationMethod: [
          {
            id: `${issuer.did}#atproto`,
            type: 'Multikey',
            controller: issuer.did,
            publicKeyMultibase: key.did().slice('did:key:'.length),
          },
        ],
        service: [],
      }),
    );
  });
  issuer.server.listen(0, 'localhost');
  await once(issuer.server, 'listening');
  const { port } = issuer.server.address() as AddressInfo;
  issuer.host = `localhost:${port}`;
  issuer.did = `did:web:localhost%3A${port}`;
  return issuer;
}

/** The module in an application context, inbound service auth only, and its verifier. */
async function bootVerifier(
  verifiedCacheMaxEntries: number,
  issuers: Issuer[],
): Promise<{ context: INestApplicationContext; verifier: AtProtoServiceJwtVerifier }> {
  @Module({
    imports: [
      AtProtoModule.forRoot({
        publicUrl: 'http://127.0.0.1:3000',
        encryption: { activeKeyId: 'k', keys: { k: ENCRYPTION_KEY } },
        storage: 'memory',
        serviceAuth: { serviceDid: SERVICE, verifiedCacheMaxEntries },
        // The issuers' did:web hosts on loopback, through the guarded fetch's allow-list.
        allowHttpServers: true,
        dangerouslyAllowPrivateHosts: issuers.map((i) => i.host),
        cleanup: { enabled: false },
      }) as DynamicModule,
    ],
  })
  class BenchServiceAuthModule {}
  const context = await NestFactory.createApplicationContext(BenchServiceAuthModule, {
    logger: ['error'],
    abortOnError: false,
  });
  return { context, verifier: context.get(AtProtoServiceJwtVerifier) };
}

const sign = (issuer: Issuer) =>
  signToken(issuer.key, {
    iss: issuer.did,
    aud: SERVICE,
    lxm: LXM,
    exp: Math.floor(Date.now() / 1000) + TOKEN_LIFETIME_S,
  });

// --- measuring -------------------------------------------------------------------------------

interface Comparison {
  label: string;
  baseline: Variant;
  subject: Variant;
  /** The tokens of one round (new ones each call for `fresh`). */
  tokens(): Promise<string[]>;
}

/** Per comparison, per concurrency, per variant id: one result per round. */

/** Warm-up (JIT, the DID documents, the reused tokens into the cache), unmeasured. */
async function warmUp(comparisons: Comparison[]): Promise<void> {
  for (const c of comparisons) {
    const warm = (await c.tokens()).slice(0, SMOKE ? 10 : 300);
    for (const v of [c.baseline, c.subject]) await measure(v, warm, 10);
  }
}

async function compare(comparisons: Comparison[]): Promise<Results> {
  const results: Results = {};
  for (const c of comparisons) {
    results[c.label] = {};
    for (const n of CONCURRENCY) {
      results[c.label]![n] = { [c.baseline.id]: [], [c.subject.id]: [] };
    }
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of comparisons) {
      for (const n of CONCURRENCY) {
        // The same tokens for both variants, in the same order; the order of the variants
        // alternates from round to round.
        const tokens = await c.tokens();
        const variants = r % 2 === 0 ? [c.baseline, c.subject] : [c.subject, c.baseline];
        const round: Record<string, RoundResult> = {};
        for (const v of variants) {
          round[v.id] = await measure(v, tokens, n);
          results[c.label]![n]![v.id]!.push(round[v.id]!);
        }
        const b = round[c.baseline.id]!;
        const x = round[c.subject.id]!;
        console.log(
          `round ${r + 1}/${ROUNDS} ${c.label} ×${n}: ${c.baseline.id} p50 ${fmt(b.p50)} µs p99 ${fmt(b.p99)} µs; ` +
            `${c.subject.id} p50 ${fmt(x.p50)} µs (${fmt(x.p50 / b.p50, 3)}×) p99 ${fmt(x.p99)} µs (${fmt(x.p99 / b.p99, 3)}×)`,
        );
      }
    }
  }
  return results;
}

/**
 * The cache's own work, on its own, in µs per token (median over the rounds): on a miss, the
 * SHA-256 of the token, a lookup that finds nothing and an insertion (the least recently
 * used pushed out once `maxEntries` are held); on a hit, the SHA-256 and a lookup.
 */
function cacheWork(tokens: string[], claims: VerifiedClaims): { miss: number; hit: number } {
  const miss: number[] = [];
  const hit: number[] = [];
  const passes = SMOKE ? 1 : 20;
  for (let r = 0; r < ROUNDS; r++) {
    // Less room than tokens, so that insertions push entries out as a full cache does.
    const cache = new VerifiedTokenCache(Math.max(1, tokens.length >> 1));
    let t0 = performance.now();
    for (let p = 0; p < passes; p++) {
      for (const token of tokens) {
        const key = VerifiedTokenCache.keyOf(`${token}${p}`);
        if (cache.get(key) === undefined) cache.set(key, claims);
      }
    }
    miss.push(((performance.now() - t0) * 1000) / (passes * tokens.length));
    const held = tokens.slice(0, tokens.length >> 1);
    for (const token of held) cache.set(VerifiedTokenCache.keyOf(token), claims);
    t0 = performance.now();
    for (let p = 0; p < passes; p++) {
      for (const token of held) {
        if (cache.get(VerifiedTokenCache.keyOf(token)) === undefined) throw new Error('not held');
      }
    }
    hit.push(((performance.now() - t0) * 1000) / (passes * held.length));
  }
  return { miss: median(miss), hit: median(hit) };
}

// --- checks ----------------------------------------------------------------------------------

async function refusal(
  verifier: AtProtoServiceJwtVerifier,
  token: string,
  route = ROUTE,
): Promise<string> {
  try {
    await verifier.verify(`Bearer ${token}`, route);
    return 'accepted';
  } catch (error) {
    if (error instanceof AtProtoServiceJwtError) return error.error;
    throw error;
  }
}

/**
 * Both verifiers give the same answers: the same caller for a valid token (sent twice, the
 * second time from the cache on one side), the same refusal for a forged one (twice: a
 * refusal is not remembered) and for a token of another method; the cache answers hits, and
 * the verifier without it holds nothing.
 */
async function checks(
  on: AtProtoServiceJwtVerifier,
  off: AtProtoServiceJwtVerifier,
  issuer: Issuer,
): Promise<void> {
  const token = await sign(issuer);
  const expected: AtProtoServiceCaller = { did: issuer.did, aud: SERVICE, lxm: LXM };
  const hits = on.stats().hits;
  for (let i = 0; i < 2; i++) {
    for (const v of [on, off]) {
      const caller = await v.verify(`Bearer ${token}`, ROUTE);
      if (!isDeepStrictEqual(caller, expected)) {
        throw new Error(`${issuer.alg}: unexpected caller ${JSON.stringify(caller)}`);
      }
    }
  }
  if (on.stats().hits !== hits + 1) throw new Error(`${issuer.alg}: the token was not a hit`);
  const other = await (issuer.alg === 'ES256K' ? Secp256k1Keypair : P256Keypair).create();
  const forged = await signToken(other, { iss: issuer.did, aud: SERVICE, lxm: LXM });
  for (let i = 0; i < 2; i++) {
    for (const v of [on, off]) {
      const error = await refusal(v, forged);
      if (error !== 'BadJwtSignature') throw new Error(`${issuer.alg}: forged token ${error}`);
    }
  }
  // The token found verified is still checked against the route (here, another method).
  for (const v of [on, off]) {
    const error = await refusal(v, token, { lxm: 'com.example.other' });
    if (error !== 'BadJwtLexiconMethod') throw new Error(`${issuer.alg}: another method ${error}`);
  }
  if (off.stats().entries !== 0 || off.stats().hits !== 0) {
    throw new Error('the verifier with verifiedCacheMaxEntries 0 holds tokens');
  }
}

// --- the run ---------------------------------------------------------------------------------

function version(pkg: string): string {
  return (
    JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as {
      version: string;
    }
  ).version;
}

async function main(): Promise<void> {
  Logger.overrideLogger(['error']);
  const started = Date.now();
  const issuers = [
    await serveIssuer('ES256K', await Secp256k1Keypair.create()),
    await serveIssuer('ES256', await P256Keypair.create()),
  ];
  const contexts: INestApplicationContext[] = [];
  try {
    console.log(
      `cpu: ${cpus()[0]?.model ?? '?'} × ${availableParallelism()}, load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}\nnode ${process.versions.node}, @atproto/xrpc-server ${version(
        '@atproto/xrpc-server',
      )}, @atproto/crypto ${version('@atproto/crypto')}, @atproto/identity ${version(
        '@atproto/identity',
      )}`,
    );
    const on = await bootVerifier(10_000, issuers);
    contexts.push(on.context);
    const off = await bootVerifier(0, issuers);
    contexts.push(off.context);
    for (const issuer of issuers) await checks(on.verifier, off.verifier, issuer);

    const verify = (v: AtProtoServiceJwtVerifier) => (token: string) =>
      v.verify(`Bearer ${token}`, ROUTE);
    const comparisons: Comparison[] = [];
    for (const issuer of issuers) {
      const reused = await sign(issuer);
      comparisons.push({
        label: `reused ${issuer.alg}`,
        baseline: { id: 'cache off', run: verify(off.verifier) },
        subject: { id: 'cache on', run: verify(on.verifier) },
        tokens: async () => Array.from({ length: OPS }, () => reused),
      });
      comparisons.push({
        label: `fresh ${issuer.alg}`,
        baseline: { id: 'cache off', run: verify(off.verifier) },
        subject: { id: 'cache on, miss', run: verify(on.verifier) },
        tokens: async () => {
          const tokens: string[] = [];
          for (let i = 0; i < OPS; i++) tokens.push(await sign(issuer));
          return tokens;
        },
      });
    }
    await warmUp(comparisons);
    const before = on.verifier.stats();
    const results = await compare(comparisons);
    const after = on.verifier.stats();
    // Every reused request after the warm-up is a hit, every fresh one a miss.
    const perVariant = ROUNDS * OPS * CONCURRENCY.length * issuers.length;
    if (after.hits - before.hits !== perVariant || after.misses - before.misses !== perVariant) {
      throw new Error(
        `expected ${perVariant} hits and misses, got ${after.hits - before.hits} and ${after.misses - before.misses}`,
      );
    }
    console.log(
      `\nbench/service-auth: ${SMOKE ? 'smoke (one short round: the figures mean nothing)' : `${ROUNDS} rounds`} of ` +
        `${fmt(OPS)} verifications per variant and concurrency; p50/p99: median over the rounds; ` +
        `ratio: cache on / cache off within each round, median (least–most). Cache on: ${fmt(
          after.entries,
        )} tokens held at the end (at most 10,000).\n`,
    );
    console.log(
      ratioTable(
        results,
        comparisons.map((c) => ({ ...c, subjects: [c.subject] })),
        CONCURRENCY,
        { ratioDigits: 3, latencyDigits: 1 },
      ),
    );
    const sample = await sign(issuers[0]!);
    const payload = JSON.parse(
      Buffer.from(sample.split('.')[1]!, 'base64url').toString('utf8'),
    ) as { iss: string; aud: string; lxm: string; exp: number; iat: number; jti: string };
    const work = cacheWork((await comparisons[1]!.tokens()).slice(0, SMOKE ? 50 : 1000), {
      ...payload,
      did: payload.iss,
      serviceId: undefined,
    });
    const verification = median(
      results[comparisons[0]!.label]![CONCURRENCY[0]!]!['cache off']!.map((x) => x.p50),
    );
    console.log(
      `\nThe cache's own work per request (${sample.length}-character tokens, median over the rounds): ` +
        `a miss (SHA-256, lookup, insertion) ${fmt(work.miss, 2)} µs, a hit (SHA-256, lookup) ` +
        `${fmt(work.hit, 2)} µs; a verification without the cache (${comparisons[0]!.label}, ` +
        `${CONCURRENCY[0]} caller, p50) ${fmt(verification)} µs: a miss adds ${fmt(
          (100 * work.miss) / verification,
          3,
        )} % to it.`,
    );
    if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 2));
    if (SMOKE) {
      console.log(
        `\nbench/service-auth --smoke: passed in ${fmt((Date.now() - started) / 1000, 1)} s`,
      );
    }
  } finally {
    for (const context of contexts) await context.close().catch((e: unknown) => console.error(e));
    for (const issuer of issuers) {
      issuer.server.close();
      issuer.server.closeAllConnections();
    }
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('bench/service-auth failed:', error);
    process.exit(1);
  },
);
