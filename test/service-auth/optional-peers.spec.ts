/**
 * `@atproto/xrpc-server` and `@atproto/identity` are optional peers: an app that configures
 * inbound service auth without one of them fails at boot with an error naming the package
 * to install, not with a bare module-resolution error at the first request. Each case boots
 * the module in a child process where the package is hidden.
 */
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

async function boot(hide: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [
      '--import',
      join(root, 'test/service-auth/support/hide-packages.mjs'),
      '--import',
      join(root, 'bench/support/swc-hooks.mjs'),
      join(root, 'test/service-auth/support/boot-inbound.ts'),
    ],
    { cwd: root, env: { ...process.env, HIDE_PACKAGES: hide.join(',') }, timeout: 60_000 },
  );
  return JSON.parse(stdout.trim().split('\n').pop() as string) as Record<string, unknown>;
}

describe('inbound service auth without its optional peers', () => {
  it('boots when both are installed', async () => {
    expect(await boot([])).toEqual({ booted: true });
  }, 60_000);

  it.each(['@atproto/xrpc-server', '@atproto/identity'])(
    'fails at boot naming %s',
    async (pkg) => {
      const result = await boot([pkg]);
      expect(result.code).toBe('ERR_AT_PROTO_OPTIONAL_DEPENDENCY');
      expect(result.message).toContain(`npm install ${pkg}`);
      expect(result.message).toContain('@AtProtoServiceAuth');
    },
    60_000,
  );
});
