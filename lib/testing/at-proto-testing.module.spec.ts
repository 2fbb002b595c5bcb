import { Controller, Get, type INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Agent } from '@atproto/api';
import type { OAuthSession } from '@atproto/oauth-client-node';
import { AtProtoDid, AtProtoScope, AtProtoSession, Public } from '../decorators/index.js';
import { AtProtoTestingModule } from './at-proto-testing.module.js';

@Controller()
class ProfileController {
  @Get('me')
  me(@AtProtoDid() did: string) {
    return { did };
  }

  @Get('profile')
  async profile(@AtProtoSession() session: OAuthSession) {
    const agent = new Agent(session);
    const res = await agent.com.atproto.repo.getRecord({
      repo: session.did,
      collection: 'app.bsky.actor.profile',
      rkey: 'self',
    });
    return res.data.value;
  }

  @AtProtoScope('repo:app.bsky.feed.post?action=create')
  @Get('post')
  post(@AtProtoDid() did: string) {
    return { did };
  }

  @Public()
  @Get('health')
  health(@AtProtoDid() did: string | undefined) {
    return { did: did ?? null };
  }
}

async function boot(options: Parameters<typeof AtProtoTestingModule.forRoot>[0]) {
  const moduleRef = await Test.createTestingModule({
    imports: [AtProtoTestingModule.forRoot(options)],
    controllers: [ProfileController],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  await app.listen(0, '127.0.0.1');
  return app;
}

async function get(app: INestApplication, path: string) {
  const res = await fetch(`${await app.getUrl()}${path}`);
  return { status: res.status, body: (await res.json()) as unknown };
}

describe('AtProtoTestingModule', () => {
  it('runs controllers as a signed-in DID with a fake OAuth session, no PDS needed', async () => {
    const calls: string[] = [];
    const app = await boot({
      did: 'did:plc:abcdefghijklmnopqrstuvwx',
      fetchHandler: async (pathname) => {
        calls.push(pathname);
        return Response.json({
          uri: 'at://did:plc:abcdefghijklmnopqrstuvwx/app.bsky.actor.profile/self',
          value: { $type: 'app.bsky.actor.profile', displayName: 'Alice' },
        });
      },
    });
    try {
      expect(await get(app, '/me')).toEqual({
        status: 200,
        body: { did: 'did:plc:abcdefghijklmnopqrstuvwx' },
      });
      const profile = await get(app, '/profile');
      expect(profile.body).toMatchObject({ displayName: 'Alice' });
      expect(calls[0]).toMatch(/^\/xrpc\/com\.atproto\.repo\.getRecord\?/);
    } finally {
      await app.close();
    }
  });

  it('answers 401 for an anonymous user and honours @Public()', async () => {
    const app = await boot({ did: null });
    try {
      expect((await get(app, '/me')).status).toBe(401);
      expect(await get(app, '/health')).toEqual({ status: 200, body: { did: null } });
    } finally {
      await app.close();
    }
  });

  it('checks @AtProtoScope() against the scope given, with the same 403', async () => {
    const generic = await boot({ did: 'did:plc:alice' });
    try {
      expect(await get(generic, '/post')).toEqual({ status: 200, body: { did: 'did:plc:alice' } });
    } finally {
      await generic.close();
    }
    const narrow = await boot({ did: 'did:plc:alice', scope: 'atproto' });
    try {
      const res = await get(narrow, '/post');
      expect(res.status).toBe(403);
      expect(res.body).toMatchObject({
        error: 'insufficient_scope',
        scope: 'repo:app.bsky.feed.post?action=create',
      });
      const url = new URL((res.body as { loginUrl: string }).loginUrl, 'http://x.invalid');
      expect(url.searchParams.get('scope')).toBe('atproto repo:app.bsky.feed.post?action=create');
    } finally {
      await narrow.close();
    }
  });
});
