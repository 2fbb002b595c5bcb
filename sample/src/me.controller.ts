import { Controller, Get, Header, Inject, Req } from '@nestjs/common';
import { Agent, XRPCError } from '@atproto/api';
import {
  AppSessionService,
  AT_PROTO_OPTIONS,
  AtProtoDid,
  AtProtoSession,
  type OAuthSession,
  type ResolvedAtProtoOptions,
} from 'nestjs-atproto-auth';
import { html, page, type SafeHtml } from './html.js';
import { readCookie, type SampleRequest } from './http.js';

@Controller('me')
export class MeController {
  constructor(
    private readonly appSessions: AppSessionService,
    @Inject(AT_PROTO_OPTIONS) private readonly options: ResolvedAtProtoOptions,
  ) {}

  /**
   * Signed in only (the module's global guard). `@AtProtoSession()` restores the user's
   * OAuth session (refreshing it if needed) so the handler can call their PDS as them.
   */
  @Get()
  @Header('Content-Type', 'text/html; charset=utf-8')
  async me(
    @AtProtoDid() did: string,
    @AtProtoSession() session: OAuthSession,
    @Req() req: SampleRequest,
  ): Promise<string> {
    const agent = new Agent(session);
    const [handle, profile, devices] = await Promise.all([
      this.handle(agent),
      this.profile(agent, did),
      this.devices(did, req),
    ]);
    return page(
      'Your account',
      html`<dl>
          <dt>DID</dt>
          <dd><code id="did">${did}</code></dd>
          <dt>Handle</dt>
          <dd id="handle">${handle}</dd>
          <dt>PDS</dt>
          <dd><code>${session.serverMetadata.issuer}</code></dd>
        </dl>
        <h2>Profile</h2>
        ${profile}
        <h2>Signed-in devices</h2>
        ${devices}
        <div>
          <form method="post" action="/oauth/logout" class="inline">
            <button type="submit">Log out</button>
          </form>
          <form method="post" action="/oauth/logout?everywhere=1" class="inline">
            <button type="submit">Log out everywhere</button>
          </form>
        </div>`,
    );
  }

  private async handle(agent: Agent): Promise<SafeHtml | string> {
    try {
      return (await agent.com.atproto.server.getSession()).data.handle;
    } catch (error) {
      return html`<span class="muted">unknown (${describe(error)})</span>`;
    }
  }

  /** The user's `app.bsky.actor.profile/self` record, read from their PDS. */
  private async profile(agent: Agent, did: string): Promise<SafeHtml> {
    try {
      const { data } = await agent.com.atproto.repo.getRecord({
        repo: did,
        collection: 'app.bsky.actor.profile',
        rkey: 'self',
      });
      const value = data.value as { displayName?: unknown; description?: unknown };
      const name = typeof value.displayName === 'string' ? value.displayName : '';
      const description = typeof value.description === 'string' ? value.description : '';
      return html`<dl>
          <dt>Display name</dt>
          <dd id="display-name">${name}</dd>
          <dt>Description</dt>
          <dd>${description}</dd>
        </dl>
        <details>
          <summary>Raw record</summary>
          <pre>${JSON.stringify(data.value, null, 2)}</pre>
        </details>`;
    } catch (error) {
      if (
        error instanceof XRPCError &&
        (error.error === 'RecordNotFound' || error.status === 404)
      ) {
        return html`<p id="no-profile">no profile record yet</p>`;
      }
      return html`<p class="muted">The profile could not be loaded (${describe(error)}).</p>`;
    }
  }

  /** Active app sessions of the user (one per signed-in browser). */
  private async devices(did: string, req: SampleRequest): Promise<SafeHtml> {
    const token = readCookie(req, this.options.cookie.sessionName);
    const currentId = token ? AppSessionService.idOf(token) : undefined;
    const sessions = await this.appSessions.list(did);
    return html`<table>
      <tr>
        <th>Browser</th>
        <th>Signed in</th>
        <th>Last seen</th>
      </tr>
      ${sessions.map(
        (s) =>
          html`<tr class="device">
            <td>
              ${s.userAgent ?? 'unknown'}${s.id === currentId && html` <strong>(this device)</strong>`}
            </td>
            <td>${s.createdAt.toISOString()}</td>
            <td>${s.lastSeenAt.toISOString()}</td>
          </tr>`,
      )}
    </table>`;
  }
}

function describe(error: unknown): string {
  if (error instanceof XRPCError) return `${error.status} ${error.error}`;
  return error instanceof Error ? error.message : String(error);
}
