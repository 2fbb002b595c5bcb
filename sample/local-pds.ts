/**
 * A local AT Protocol network for trying the sample offline: an in-memory PLC directory and a
 * real PDS (with its OAuth authorization server and sign-in UI) on localhost, plus one
 * account, `alice.test`. Everything lives in memory / a temp directory and is gone on exit.
 *
 * Run with `npm run sample:pds` (Node's type stripping, with test/support/ts-hooks.mjs); `PDS_PORT` (2583), `PLC_PORT`
 * (2582) and `ALICE_PASSWORD` (random) can be set. Reuses the e2e tests' harness.
 */
import { startTestPds } from '../test/e2e/support/pds.js';

function port(name: string, fallback: number): number {
  const value = Number(process.env[name] || fallback);
  if (!Number.isInteger(value) || value < 1 || value > 65535)
    throw new Error(`${name} must be a port number`);
  return value;
}

const pds = await startTestPds({ port: port('PDS_PORT', 2583), plcPort: port('PLC_PORT', 2582) });
let stopping = false;
const stop = (signal: NodeJS.Signals): void => {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: stopping the PDS and PLC (their data is deleted)…`);
  pds.stop().then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

try {
  const alice = await pds.createAccount('alice.test', process.env.ALICE_PASSWORD || undefined);
  const samplePort = process.env.PORT || '3000';
  console.log(`Local AT Protocol network is running (in memory; erased when this process stops).
  PDS + OAuth server: ${pds.url}
  PLC directory:      ${pds.plcUrl}
  Account:            ${alice.handle}   password: ${alice.password}   (${alice.did})

Start the sample against it in another terminal:
  ATPROTO_HANDLE_RESOLVER=${pds.url} ATPROTO_PLC_URL=${pds.plcUrl} ATPROTO_ALLOW_HTTP=1 \\
    ATPROTO_PRIVATE_HOSTS=${new URL(pds.url).host},${new URL(pds.plcUrl).host} npm run sample

then open http://127.0.0.1:${samplePort}/ and sign in as ${alice.handle}. Ctrl+C stops this.`);
} catch (error) {
  await pds.stop();
  throw error;
}
