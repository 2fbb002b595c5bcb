/**
 * The public API is a checked-in list: test/package/public-api.txt (the main entry) and
 * test/package/public-api-testing.txt (`nestjs-atproto-auth/testing`), one exported name per
 * line, sorted, type-only exports written `type Name`. Adding, removing or renaming an export
 * is then a visible diff in review.
 *
 * After an intended change, regenerate both lists and commit them with the change:
 *
 *   UPDATE_PUBLIC_API=1 node --experimental-vm-modules node_modules/jest/bin/jest.js \
 *     --runInBand test/package/public-api.spec.ts
 *
 * The names come from the TypeScript compiler (values and types, as the published `.d.ts`
 * declare them); the runtime entries (imported by package name, mapped to lib/ by jest's
 * moduleNameMapper) must export exactly the value names of each list. A second check: every
 * declaration tagged `@publicApi` in lib/ is exported by one of the entries, since a
 * `@publicApi` that users cannot import is a broken promise.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import * as mainEntry from 'nestjs-atproto-auth';
import * as testingEntry from 'nestjs-atproto-auth/testing';

const here = dirname(fileURLToPath(import.meta.url));
const repoDir = resolve(here, '..', '..');
const UPDATE = process.env.UPDATE_PUBLIC_API === '1';
const HOW_TO_UPDATE =
  'If the change is intended, regenerate the list with\n' +
  '  UPDATE_PUBLIC_API=1 node --experimental-vm-modules node_modules/jest/bin/jest.js ' +
  '--runInBand test/package/public-api.spec.ts\n' +
  'and commit it with the change.';

interface Entry {
  label: string;
  source: string;
  listFile: string;
  runtime: Record<string, unknown>;
}

const ENTRIES: Entry[] = [
  {
    label: 'nestjs-atproto-auth',
    source: join(repoDir, 'lib/index.ts'),
    listFile: join(here, 'public-api.txt'),
    runtime: mainEntry,
  },
  {
    label: 'nestjs-atproto-auth/testing',
    source: join(repoDir, 'lib/testing/index.ts'),
    listFile: join(here, 'public-api-testing.txt'),
    runtime: testingEntry,
  },
];

/** One TypeScript program over both entries, with the repository's compiler options. */
function createProgram(): ts.Program {
  const configPath = join(repoDir, 'tsconfig.json');
  const config = ts.readConfigFile(configPath, (file) => ts.sys.readFile(file));
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, repoDir);
  return ts.createProgram(
    ENTRIES.map((e) => e.source),
    { ...parsed.options, noEmit: true },
  );
}

/** Every name an entry exports (values and types), as the compiler sees it. */
function exportedNames(program: ts.Program, file: string): string[] {
  const checker = program.getTypeChecker();
  const sourceFile = program.getSourceFile(file);
  const moduleSymbol = sourceFile && checker.getSymbolAtLocation(sourceFile);
  if (!moduleSymbol) throw new Error(`the compiler did not load ${file}`);
  return checker.getExportsOfModule(moduleSymbol).map((s) => s.getName());
}

/** The list file's content: values as `Name`, type-only exports as `type Name`, by name. */
function renderList(names: string[], runtime: Record<string, unknown>): string {
  const lines = [...new Set(names)]
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((name) => (name in runtime ? name : `type ${name}`));
  return `${lines.join('\n')}\n`;
}

function readList(file: string): string[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    // A missing list reads as empty: the comparison below then shows every name as added.
  }
  return text.split('\n').filter((line) => line.trim() !== '');
}

/** Names of the top-level declarations of a file that carry `tag` in their TSDoc. */
function taggedDeclarations(file: string, tag: string): string[] {
  const sourceFile = ts.createSourceFile(
    file,
    readFileSync(file, 'utf8'),
    ts.ScriptTarget.Latest,
    true,
  );
  const hasTag = (node: ts.Node): boolean =>
    ts.getJSDocTags(node).some((t) => t.tagName.text === tag);
  const names: string[] = [];
  const bindingNames = (name: ts.BindingName): string[] =>
    ts.isIdentifier(name)
      ? [name.text]
      : name.elements.flatMap((el) => (ts.isOmittedExpression(el) ? [] : bindingNames(el.name)));
  for (const statement of sourceFile.statements) {
    if (ts.isVariableStatement(statement)) {
      const tagged = hasTag(statement);
      for (const declaration of statement.declarationList.declarations) {
        if (tagged || hasTag(declaration)) names.push(...bindingNames(declaration.name));
      }
    } else if (
      (ts.isClassDeclaration(statement) ||
        ts.isFunctionDeclaration(statement) ||
        ts.isInterfaceDeclaration(statement) ||
        ts.isTypeAliasDeclaration(statement) ||
        ts.isEnumDeclaration(statement)) &&
      statement.name &&
      hasTag(statement)
    ) {
      names.push(statement.name.text);
    }
  }
  return names;
}

function libSources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return libSources(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.spec.ts') ? [path] : [];
  });
}

const program = createProgram();
const compiled = new Map(ENTRIES.map((e) => [e.label, exportedNames(program, e.source)]));

describe.each(ENTRIES)('the public API of $label', (entry) => {
  const names = compiled.get(entry.label) ?? [];

  it('is the checked-in list', () => {
    const expected = renderList(names, entry.runtime);
    if (UPDATE) writeFileSync(entry.listFile, expected);
    const listed = readList(entry.listFile);
    const actual = expected.trimEnd().split('\n');
    const added = actual.filter((line) => !listed.includes(line));
    const removed = listed.filter((line) => !actual.includes(line));
    if (added.length > 0 || removed.length > 0) {
      throw new Error(
        `The exports of ${entry.label} differ from ${relative(repoDir, entry.listFile)}:\n` +
          added.map((line) => `  + ${line}\n`).join('') +
          removed.map((line) => `  - ${line}\n`).join('') +
          HOW_TO_UPDATE,
      );
    }
    // Same lines, so only the order can differ: keep the file sorted.
    expect(listed).toEqual(actual);
  });

  it('exports at runtime exactly the values its typings declare', () => {
    const runtimeNames = Object.keys(entry.runtime).sort();
    const declared = new Set(names);
    // A runtime export the typings lack, or one the list marks as a type, would be an
    // export users cannot see (or can see but not use).
    expect(runtimeNames.filter((name) => !declared.has(name))).toEqual([]);
    for (const line of readList(entry.listFile)) {
      const isType = line.startsWith('type ');
      const name = isType ? line.slice('type '.length) : line;
      if (!declared.has(name)) continue; // reported by the list comparison
      expect({ name, atRuntime: name in entry.runtime }).toEqual({ name, atRuntime: !isType });
    }
  });
});

describe('@publicApi', () => {
  it('is on declarations the package exports', () => {
    const exported = new Set([...compiled.values()].flat());
    const broken: string[] = [];
    for (const file of libSources(join(repoDir, 'lib'))) {
      for (const name of taggedDeclarations(file, 'publicApi')) {
        if (!exported.has(name)) broken.push(`${name} (${relative(repoDir, file)})`);
      }
    }
    // Export each of these from lib/index.ts (or lib/testing/index.ts), or tag it @internal.
    expect(broken).toEqual([]);
  });
});
