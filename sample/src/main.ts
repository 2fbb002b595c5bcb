import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { createSampleApp, sampleConfigOf } from './app.js';

const app = await createSampleApp(process.env);
// Closes the database cleanly on Ctrl+C / SIGTERM.
app.enableShutdownHooks();
const config = sampleConfigOf(app);
if (config.host) await app.listen(config.port, config.host);
else await app.listen(config.port);
new Logger('Sample').log(`Listening: open ${config.publicUrl}/ in a browser`);
