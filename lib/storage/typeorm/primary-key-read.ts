import type { DataSource, EntityMetadata, EntityTarget, ObjectLiteral } from 'typeorm';
import { onPrimary } from './primary.js';

type ColumnMetadata = EntityMetadata['columns'][number];

/**
 * The read of one row by its primary key, on the primary (see `onPrimary`), without
 * TypeORM's entity path.
 *
 * Why: these reads sit on the request path (an app session or an API key on a cache miss,
 * the OAuth session on every restore), and `findOne` (a query builder built per call, its
 * SQL generated and its property names rewritten again, the result run through the entity
 * transformer) costs several times the query itself (docs/benchmarks.md, "Cache miss and
 * session restore"). Here the statement is built once, by the same query builder (table
 * path, quoting and parameter syntax of the driver, every column under its property name),
 * run through a query runner (the primary's pool, TypeORM's logger and subscribers), and
 * each value hydrated by the driver's own `prepareHydratedValue`, the step `findOne` uses:
 * the driver's conversions (`json` columns) and the column's transformers (instants,
 * encryption) apply exactly as before, nulls included.
 *
 * A parametrised statement, not a named (server-side prepared) one: those fail behind a
 * transaction-mode pooler such as PgBouncer, and after a migration changes a column's type.
 * @internal
 */
export class PrimaryKeyRead<E extends ObjectLiteral> {
  readonly #dataSource: DataSource;
  readonly #entity: EntityTarget<E>;
  #statement: { sql: string; columns: readonly ColumnMetadata[] } | undefined;

  constructor(dataSource: DataSource, entity: EntityTarget<E>) {
    this.#dataSource = dataSource;
    this.#entity = entity;
  }

  /** The row whose (single-column) primary key is `key`, hydrated; `undefined` if none. */
  async get(key: string): Promise<E | undefined> {
    const { sql, columns } = (this.#statement ??= this.#build());
    const rows = await onPrimary(this.#dataSource, (m) =>
      m.query<Array<Record<string, unknown>>>(sql, [key]),
    );
    const row = rows[0];
    if (row === undefined) return undefined;
    const driver = this.#dataSource.driver;
    const entity: Record<string, unknown> = {};
    for (const column of columns) {
      entity[column.propertyName] = driver.prepareHydratedValue(row[column.propertyName], column);
    }
    return entity as E;
  }

  /** Built on first use: the DataSource must be initialized to have its metadata. */
  #build(): { sql: string; columns: readonly ColumnMetadata[] } {
    const metadata = this.#dataSource.getMetadata(this.#entity);
    const [primary, ...more] = metadata.primaryColumns;
    if (!primary || more.length > 0) {
      throw new TypeError(`PrimaryKeyRead needs a single primary column (${metadata.name}).`);
    }
    const q = (name: string) => this.#dataSource.driver.escape(name);
    const alias = 't';
    const column = (c: ColumnMetadata) => `${q(alias)}.${q(c.databaseName)}`;
    const [first, ...rest] = metadata.columns;
    const qb = this.#dataSource
      .createQueryBuilder()
      .from(metadata.target, alias)
      .select(column(first!), first!.propertyName);
    for (const c of rest) qb.addSelect(column(c), c.propertyName);
    const [sql] = qb.where(`${column(primary)} = :key`, { key: '' }).getQueryAndParameters();
    return { sql, columns: metadata.columns };
  }
}
