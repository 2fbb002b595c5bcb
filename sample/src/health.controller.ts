import { Controller, Get } from '@nestjs/common';
import { Public } from 'nestjs-atproto-auth';

@Controller('health')
export class HealthController {
  @Public()
  @Get()
  health(): { ok: true } {
    return { ok: true };
  }
}
