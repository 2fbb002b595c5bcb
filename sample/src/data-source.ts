/**
 * The sample's database for the TypeORM CLI, e.g. after `npm run build` and building the
 * sample: `npx typeorm migration:run -d sample/dist/data-source.js` (or `migration:show`).
 * Same `DATABASE_PATH` (default `.data/sample.sqlite`) or `DATABASE_URL` as the app.
 */
import 'reflect-metadata';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { atProtoEntities, atProtoMigrations } from 'nestjs-atproto-auth';
import { DataSource } from 'typeorm';
import { databasePath } from './config.js';

const url = process.env.DATABASE_URL;
const database = databasePath(process.env);
if (!url) mkdirSync(dirname(database), { recursive: true, mode: 0o700 });

export default new DataSource({
  ...(url
    ? { type: 'postgres' as const, url }
    : { type: 'better-sqlite3' as const, database, enableWAL: true }),
  entities: [...atProtoEntities],
  migrations: atProtoMigrations(),
});
