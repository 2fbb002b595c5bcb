import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException } from '@nestjs/common';
import { html, page } from './html.js';
import { type SampleRequest, type SampleResponse, wantsHtml } from './http.js';

/**
 * Browsers get pages, API clients get Nest's usual JSON: a browser that is not signed in
 * (401) is sent to the login page, other HTTP errors are shown as a short page.
 */
@Catch(HttpException)
export class HtmlErrorFilter implements ExceptionFilter {
  catch(exception: HttpException, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const req = http.getRequest<SampleRequest>();
    const res = http.getResponse<SampleResponse>();
    const status = exception.getStatus();
    const body = exception.getResponse();

    if (!wantsHtml(req)) {
      res
        .status(status)
        .json(typeof body === 'string' ? { statusCode: status, message: body } : body);
      return;
    }
    if (status === 401) {
      res.redirect(req.method === 'GET' || req.method === 'HEAD' ? 302 : 303, '/');
      return;
    }
    const message =
      typeof body === 'object' && body !== null && 'message' in body
        ? (body as { message: unknown }).message
        : exception.message;
    res
      .status(status)
      .type('text/html; charset=utf-8')
      .send(
        page(
          `Error ${status}`,
          html`<p>${Array.isArray(message) ? message.join(', ') : String(message)}</p>
            <p><a href="/">Back to the start page</a></p>`,
        ),
      );
  }
}
