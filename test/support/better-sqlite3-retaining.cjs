/* global require, module */
/* eslint-disable @typescript-eslint/no-require-imports -- CommonJS by necessity: CJS importers require() it. */
'use strict';
// Jest maps `better-sqlite3` here (jest.config.js), for every importer: TypeORM, the
// in-process PDS (kysely), tests. It is the real module, except that no better-sqlite3 object
// is ever garbage-collected.
//
// Why: better-sqlite3 12 wraps its native objects with node::ObjectWrap. Since Node 24.19
// the ObjectWrap destructor calls RemoveEnvironmentCleanupHook, which asserts that a
// JavaScript context is entered. V8 also collects garbage from platform tasks (scavenge,
// memory-reducer and incremental-marking tasks), where none is, so finalizing an unreachable
// Database, Statement or StatementIterator there aborts the whole process ("Assertion failed:
// (env) != nullptr", exit 134). Jest runs show it the most: the PDS prepares a statement per
// query, and each finished test file leaves its objects behind. better-sqlite3 13 (Node-API)
// does not have the problem; until the project moves to it, every such object is kept
// reachable from a root outside Jest's per-file sandboxes until the process exits, when
// Node's own environment cleanup frees them (inside a context).
const { dirname, join } = require('node:path');
// A Node core module object is shared by all of Jest's sandboxes: the root lives there.
const util = require('node:util');

const real = require(
  join(dirname(require.resolve('better-sqlite3/package.json')), 'lib', 'index.js'),
);
const ROOT = Symbol.for('nestjs-atproto-auth.tests.retained-better-sqlite3');
const retained = (util[ROOT] ??= []);

// Each sandbox loads its own copy of the addon's classes: patch this copy's prototypes once,
// through a probe database.
const probe = new real(':memory:');
retained.push(probe);
const nativeDb = Object.getOwnPropertySymbols(probe)
  .map((symbol) => probe[symbol])
  .find((value) => value && typeof value === 'object' && typeof value.prepare === 'function');
const nativeDbProto = Object.getPrototypeOf(nativeDb);
const prepare = nativeDbProto.prepare;
nativeDbProto.prepare = function retainingPrepare(...args) {
  const statement = prepare.apply(this, args);
  retained.push(statement);
  return statement;
};
const probeStatement = probe.prepare('SELECT 1');
const statementProto = Object.getPrototypeOf(probeStatement);
const iterate = statementProto.iterate;
statementProto.iterate = function retainingIterate(...args) {
  const iterator = iterate.apply(this, args);
  retained.push(iterator);
  return iterator;
};

/** `new Database(...)` and `Database(...)`, as the real one; subclasses keep working. */
function Database(...args) {
  const db = Reflect.construct(real, args, new.target ?? Database);
  retained.push(db);
  return db;
}
Database.prototype = real.prototype;
Object.setPrototypeOf(Database, real); // statics such as SqliteError

module.exports = Database;
