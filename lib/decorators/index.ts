export { AtProtoDid } from './at-proto-did.decorator.js';
export { AtProtoSession } from './at-proto-session.decorator.js';
export { Public } from './public.decorator.js';
export { AtProtoCredentials } from './at-proto-credentials.decorator.js';
export { AtProtoScope } from './at-proto-scope.decorator.js';
