import { AtProtoApiKeyEntity } from './api-key.entity.js';
import { AtProtoBotSessionEntity } from './bot-session.entity.js';
import { AtProtoAppSessionEntity } from './app-session.entity.js';
import { AtProtoOAuthSessionEntity } from './oauth-session.entity.js';
import { AtProtoOAuthStateEntity } from './oauth-state.entity.js';
import { AtProtoNativeCodeEntity } from './native-code.entity.js';
import { AtProtoNativeRefreshFamilyEntity } from './native-refresh-family.entity.js';

export { AtProtoAppSessionEntity, AtProtoOAuthSessionEntity, AtProtoOAuthStateEntity };

/**
 * Every entity of this library: spread it into your DataSource's `entities`.
 * @example TypeOrmModule.forRoot({ ..., entities: [...atProtoEntities], migrations: [...atProtoMigrations()] })
 * @publicApi
 */
export const atProtoEntities = [
  AtProtoOAuthStateEntity,
  AtProtoOAuthSessionEntity,
  AtProtoAppSessionEntity,
  AtProtoApiKeyEntity,
  AtProtoNativeCodeEntity,
  AtProtoNativeRefreshFamilyEntity,
  AtProtoBotSessionEntity,
] as const;
