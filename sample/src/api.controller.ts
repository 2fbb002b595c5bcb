import {
  Controller,
  Get,
  HttpCode,
  Logger,
  Post,
  ServiceUnavailableException,
  UnauthorizedException,
} from '@nestjs/common';
import {
  AtProtoAuthService,
  AtProtoCredentials,
  AtProtoDid,
  AtProtoSession,
  AtProtoSessionUnavailableError,
  AtProtoUpstreamError,
  isSessionEndedError,
  type OAuthSession,
} from 'nestjs-atproto-auth';

/** What the JSON routes answer: who the user's PDS says they are. */
export interface ApiSessionInfo {
  did: string;
  handle: string;
}

/**
 * JSON routes for API clients (signed in only, through the module's global guard; a POST
 * from another site is refused by it).
 */
@Controller('api')
export class ApiController {
  constructor(private readonly auth: AtProtoAuthService) {}

  /**
   * Calls the user's PDS as the user (`com.atproto.server.getSession`) through the restored
   * OAuth session, refreshed first if its access token is (about to be) expired.
   */
  @Get('session')
  // Browsers, command-line apps (sample/cli.mjs) and bots with an API key alike.
  @AtProtoCredentials({ allow: ['cookie', 'bearer', 'api-key'] })
  async session(@AtProtoSession() session: OAuthSession): Promise<ApiSessionInfo> {
    return whoAmI(session);
  }

  /**
   * Refreshes the user's tokens now (`restore(did, true)`, under the session lock), then
   * calls the PDS with the new access token. 401 when the session has ended, 503 when the
   * refresh cannot be done right now (the session is kept).
   */
  @Post('refresh')
  @HttpCode(200)
  async refresh(@AtProtoDid() did: string): Promise<ApiSessionInfo> {
    let session: OAuthSession;
    try {
      session = await this.auth.restore(did, true);
    } catch (error) {
      if (error instanceof AtProtoSessionUnavailableError) {
        throw new UnauthorizedException(error.message);
      }
      if (error instanceof AtProtoUpstreamError) {
        throw new ServiceUnavailableException(error.message);
      }
      throw error;
    }
    return whoAmI(session);
  }
}

async function whoAmI(session: OAuthSession): Promise<ApiSessionInfo> {
  let res: Response;
  try {
    res = await session.fetchHandler('/xrpc/com.atproto.server.getSession');
  } catch (error) {
    // The session can end between the restore and this call (revoked at the PDS, or by
    // another request): the OAuth client's retry then cannot refresh it.
    if (isSessionEndedError(error)) {
      throw new UnauthorizedException('The AT Protocol session has ended. Log in again.');
    }
    if (error instanceof AtProtoUpstreamError) {
      throw new ServiceUnavailableException(error.message);
    }
    new Logger('Api').warn(
      `Calling the PDS failed: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`,
    );
    throw new ServiceUnavailableException('The PDS could not be reached.');
  }
  if (res.status === 401) throw new UnauthorizedException('The PDS refused the session.');
  if (!res.ok) throw new ServiceUnavailableException(`The PDS answered ${res.status}.`);
  const body = (await res.json()) as { did: string; handle: string };
  return { did: body.did, handle: body.handle };
}
