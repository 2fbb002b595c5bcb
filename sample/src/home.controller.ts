import { Controller, Get, Header } from '@nestjs/common';
import { AtProtoDid, Public } from 'nestjs-atproto-auth';
import { html, page } from './html.js';

@Controller()
export class HomeController {
  /** Public: the login form, or who is signed in (`@AtProtoDid()` is `undefined` without a session). */
  @Public()
  @Get()
  @Header('Content-Type', 'text/html; charset=utf-8')
  home(@AtProtoDid() did: string | undefined): string {
    if (did) {
      return page(
        'nestjs-atproto-auth sample',
        html`<p>Signed in as <code>${did}</code> — go to <a href="/me">/me</a>.</p>
          <form method="post" action="/oauth/logout" class="inline">
            <button type="submit">Log out</button>
          </form>`,
      );
    }
    return page(
      'nestjs-atproto-auth sample',
      html`<p>Sign in with your AT Protocol (Bluesky) account.</p>
        <form method="post" action="/oauth/login">
          <label for="input">Handle</label>
          <input
            id="input"
            name="input"
            type="text"
            placeholder="alice.bsky.social"
            required
            autocomplete="username"
            autocapitalize="off"
            spellcheck="false"
          />
          <input type="hidden" name="returnTo" value="/me" />
          <button type="submit">Sign in</button>
        </form>
        <p class="muted">You can also enter a DID or the URL of your PDS.</p>`,
    );
  }
}
