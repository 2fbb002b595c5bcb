import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { config, filter, map, Observable, Subject, tap } from 'rxjs';
import { type AtProtoEvent, AtProtoEvents } from 'nestjs-atproto-auth';

const did = 'did:plc:abcdefghijklmnopqrstuvwx';
const login = (n: number): AtProtoEvent => ({ type: 'login', did, appSessionId: `s${n}` });

/** Lets RxJS's unhandled-error timer (a setTimeout of 0) run, if anything scheduled one. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 50));

describe('AtProtoEvents', () => {
  // RxJS reports an error thrown by a subscriber by rethrowing it from a timer, which
  // crashes a Node process. Its hook sees every such report: none must reach it.
  let unhandled: unknown[];
  let logged: string[];
  beforeEach(() => {
    unhandled = [];
    config.onUnhandledError = (error) => unhandled.push(error);
    logged = [];
    jest.spyOn(Logger.prototype, 'error').mockImplementation((message: unknown) => {
      logged.push(String(message));
    });
  });
  afterEach(() => {
    config.onUnhandledError = null;
    jest.restoreAllMocks();
  });

  it('a throwing subscriber neither crashes nor stops the others, and keeps receiving', async () => {
    const events = new AtProtoEvents();
    const seenByThrower: string[] = [];
    const seenByOther: string[] = [];
    events.events$.subscribe((e) => {
      seenByThrower.push(e.type);
      throw new Error('subscriber bug\nforged line');
    });
    events.events$.subscribe((e) => seenByOther.push((e as { appSessionId: string }).appSessionId));
    events.emit(login(1));
    events.emit(login(2));
    await settle();
    expect(unhandled).toEqual([]);
    expect(seenByOther).toEqual(['s1', 's2']);
    expect(seenByThrower).toEqual(['login', 'login']);
    expect(logged).toHaveLength(2);
    expect(logged[0]).toContain('"login" event');
    expect(logged[0]).toContain('Error: subscriber bug\\u000aforged line');
  });

  it('an async subscriber that rejects is logged, never an unhandled rejection', async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      const events = new AtProtoEvents();
      events.events$.subscribe(async () => {
        await new Promise((r) => setTimeout(r, 5));
        throw new Error('async subscriber bug');
      });
      events.emit(login(1));
      await settle();
      expect(rejections).toEqual([]);
      expect(logged).toHaveLength(1);
      expect(logged[0]).toContain('async subscriber bug');
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });

  it('isolates subscribers of piped streams and partial observers too', async () => {
    const events = new AtProtoEvents();
    const seen: number[] = [];
    const fromObserver: string[] = [];
    events.events$
      .pipe(
        filter((e) => e.type === 'login'),
        map(() => {
          throw new Error('bug in an operator');
        }),
      )
      .subscribe(() => undefined);
    events.events$.pipe(map((e) => e.type)).subscribe({
      next(type) {
        fromObserver.push(type);
        throw new Error('bug in an observer');
      },
    });
    events.events$.subscribe(() => seen.push(seen.length));
    events.emit(login(1));
    events.emit(login(2));
    await settle();
    expect(unhandled).toEqual([]);
    expect(seen).toEqual([0, 1]);
    expect(fromObserver).toEqual(['login', 'login']);
    // The operator's error ends its subscription (RxJS semantics), logged once.
    expect(logged.filter((l) => l.includes('bug in an operator'))).toHaveLength(1);
    expect(logged.filter((l) => l.includes('bug in an observer'))).toHaveLength(2);
  });

  it("hands an operator's error to the subscriber's own error handler when it has one", async () => {
    const events = new AtProtoEvents();
    const errors: unknown[] = [];
    events.events$
      .pipe(
        map(() => {
          throw new Error('handled here');
        }),
      )
      .subscribe({ error: (e) => errors.push(e) });
    events.emit(login(1));
    await settle();
    expect(errors).toHaveLength(1);
    expect(logged).toEqual([]);
    expect(unhandled).toEqual([]);
  });

  it('stays an Observable that unsubscribes cleanly, piped or not', () => {
    const events = new AtProtoEvents();
    expect(events.events$).toBeInstanceOf(Observable);
    let direct = 0;
    let piped = 0;
    const a = events.events$.subscribe(() => direct++);
    const b = events.events$.pipe(tap(() => piped++)).subscribe();
    events.emit(login(1));
    a.unsubscribe();
    b.unsubscribe();
    events.emit(login(2));
    expect([direct, piped]).toEqual([1, 1]);
    // Nothing is left subscribed to the stream's Subject (no leak per piped subscription).
    const subject = (events.events$ as unknown as { source: Subject<AtProtoEvent> }).source;
    expect(subject).toBeInstanceOf(Subject);
    expect(subject.observed).toBe(false);
  });

  it('escapes control characters in an event message', () => {
    const events = new AtProtoEvents();
    const messages: Array<string | undefined> = [];
    events.events$.subscribe((e) => {
      if (e.type === 'oauth-session-deleted') messages.push(e.message);
    });
    events.emit({
      type: 'oauth-session-deleted',
      did,
      reason: 'error',
      message: 'OAuth "invalid_grant" error: refused\n\x1b[31mforged\u2028line',
    });
    events.emit({ type: 'oauth-session-deleted', did, reason: 'revoked' });
    expect(messages).toEqual([
      'OAuth "invalid_grant" error: refused\\u000a\\u001b[31mforged\\u2028line',
      undefined,
    ]);
  });
});
