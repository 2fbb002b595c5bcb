/**
 * `optionalScopes` and `@AtProtoScope()` at boot: the client metadata declares every scope a
 * login may ask for, a plain login asks only for `scope`, and a route requiring a scope no
 * login can obtain fails the boot, naming the route and what to add.
 */
import { Controller, Get, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  AtProtoConfigError,
  AtProtoModule,
  type AtProtoModuleOptions,
  AtProtoScope,
  resolveAtProtoOptions,
} from 'nestjs-atproto-auth';
import { randomKey } from '../support/key-ring.js';

const POST = 'repo:app.bsky.feed.post?action=create';
const base: AtProtoModuleOptions = {
  publicUrl: 'http://127.0.0.1:4321',
  encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
  storage: 'memory',
};

@Controller('posts')
class PostsController {
  @AtProtoScope(POST)
  @Get()
  create() {
    return { ok: true };
  }
}

@AtProtoScope('transition:chat.bsky')
@Controller('chat')
class ChatController {
  @Get()
  list() {
    return { ok: true };
  }
}

async function boot(options: AtProtoModuleOptions, controllers: unknown[]) {
  @Module({ imports: [AtProtoModule.forRoot(options)], controllers: controllers as never[] })
  class AppModule {}
  return NestFactory.create(AppModule, { logger: false, abortOnError: false }).then(async (app) => {
    await app.init();
    return app;
  });
}

describe('optionalScopes', () => {
  it('are declared in the client metadata, once, after scope', async () => {
    const resolved = await resolveAtProtoOptions({
      ...base,
      scope: 'atproto transition:generic',
      optionalScopes: [POST, 'transition:generic', 'include:app.example.authBasic'],
    });
    expect(resolved.clientMetadata.scope).toBe(
      `atproto transition:generic ${POST} include:app.example.authBasic`,
    );
    expect(resolved.scope).toBe('atproto transition:generic');
  });

  it('refuses what is not an AT Protocol OAuth scope, naming it', async () => {
    const error = await resolveAtProtoOptions({
      ...base,
      optionalScopes: ['repo:app.bsky.feed.post', 'email profile'],
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AtProtoConfigError);
    expect((error as AtProtoConfigError).problems.join('\n')).toMatch(
      /optionalScopes: "email profile" is not an AT Protocol OAuth scope/,
    );
  });
});

describe('@AtProtoScope() at boot', () => {
  it('boots when every required scope is declared or covered by scope', async () => {
    const app = await boot(
      { ...base, scope: 'atproto', optionalScopes: [POST, 'transition:chat.bsky'] },
      [PostsController, ChatController],
    );
    await app.close();
    // transition:generic covers a repo scope: nothing more to declare for it.
    const generic = await boot({ ...base, scope: 'atproto transition:generic' }, [PostsController]);
    await generic.close();
  });

  it('fails the boot for a scope no login can obtain, naming the route and the fix', async () => {
    const error = await boot({ ...base, scope: 'atproto transition:generic' }, [
      PostsController,
      ChatController,
    ]).then(
      async (app) => {
        await app.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AtProtoConfigError);
    const problems = (error as AtProtoConfigError).problems;
    expect(problems).toEqual([
      "@AtProtoScope('transition:chat.bsky') on ChatController.list: add 'transition:chat.bsky' to optionalScopes (every scope a login may ask for must be declared in the client metadata)",
    ]);
  });
});
