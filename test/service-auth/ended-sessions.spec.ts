/**
 * Service-auth tokens minted through a session that has ended are dropped: the service
 * listens for the end of OAuth sessions and bot sessions and invalidates the DID's tokens.
 */
import { jest } from '@jest/globals';
import { type INestApplicationContext, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AtProtoEvents, AtProtoModule, AtProtoServiceAuthService } from 'nestjs-atproto-auth';
import { randomKey } from '../support/key-ring.js';

describe('AtProtoServiceAuthService and ended sessions', () => {
  let app: INestApplicationContext;
  beforeAll(async () => {
    @Module({
      imports: [
        AtProtoModule.forRoot({
          publicUrl: 'http://127.0.0.1:4321',
          encryption: { activeKeyId: 'k', keys: { k: randomKey() } },
          storage: 'memory',
        }),
      ],
    })
    class M {}
    app = await NestFactory.createApplicationContext(M, { logger: false });
  });
  afterAll(async () => {
    await app?.close();
  });

  it("drops a DID's tokens when its OAuth session is deleted or its bot session ends", () => {
    const service = app.get(AtProtoServiceAuthService);
    const invalidate = jest.spyOn(service, 'invalidate').mockResolvedValue(undefined);
    const events = app.get(AtProtoEvents);
    events.emit({
      type: 'oauth-session-deleted',
      did: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa',
      reason: 'revoked',
    } as never);
    events.emit({
      type: 'bot-session-ended',
      did: 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb',
      reason: 'logout',
    });
    events.emit({ type: 'oauth-session-refreshed', did: 'did:plc:cccccccccccccccccccccccc' });
    expect(invalidate.mock.calls).toEqual([
      ['did:plc:aaaaaaaaaaaaaaaaaaaaaaaa'],
      ['did:plc:bbbbbbbbbbbbbbbbbbbbbbbb'],
    ]);
  });
});
