import Database from 'better-sqlite3';
// @ts-expect-error -- better-sqlite3's internal helpers have no type declarations.
import { cppdb } from 'better-sqlite3/lib/util.js';

// Why: under Node 24, a better-sqlite3 object (Database, Statement) that the garbage
// collector finalizes while no JavaScript context is entered (V8 runs some GC work as
// platform tasks) aborts the whole process: node::ObjectWrap's destructor calls
// RemoveEnvironmentCleanupHook, which asserts `(env) != nullptr`. Jest test files that use
// SQLite died that way now and then (exit code 134, no test output). Keeping every such
// object reachable until the process exits means none is ever finalized by the collector;
// Node's environment cleanup frees them at exit, inside a context. TypeORM prepares a
// statement per distinct query (and its statement cache drops old ones), so the retained
// set is small in a test run.
const retained: object[] = [];

/**
 * `better-sqlite3`'s Database, for TypeORM's `driver` option, whose connections and
 * prepared statements are never garbage-collected (see the comment above). Tests only.
 */
export class RetainingSqliteDatabase extends Database {
  constructor(...args: ConstructorParameters<typeof Database>) {
    super(...args);
    retained.push(this);
    const prepare = this.prepare.bind(this);
    this.prepare = ((source: string) => {
      const statement = prepare(source);
      retained.push(statement);
      return statement;
    }) as typeof this.prepare;
  }

  override pragma(source: string, options?: Database.PragmaOptions): unknown {
    // The same statement better-sqlite3's own pragma() prepares, kept reachable.
    const native = (this as unknown as Record<symbol, NativeDatabase>)[cppdb as symbol]!;
    const statement = native.prepare(`PRAGMA ${source}`, this, true);
    retained.push(statement);
    return options?.simple ? statement.pluck().get() : statement.all();
  }
}

interface NativeDatabase {
  prepare(source: string, database: unknown, pragmaMode: boolean): Database.Statement;
}
