/**
 * Reads the fenced code blocks of a markdown document and what their info strings say, for
 * the documentation tests. The first word of the info string is the language (what a
 * renderer uses for highlighting); the words after it tell the tests what the block is:
 *
 * - ```` ```ts file=src/app.module.ts ````: a whole file of the reader's app, at that path;
 * - ```` ```ts fragment ````: part of a file, type-checked inside a harness that adds the
 *   imports it leaves out (see `fragmentHarness`);
 * - ```` ```sh install ````: the commands that install the packages (run in a fresh app, the
 *   package itself replaced by the packed tarball);
 * - ```` ```sh env=NAME ````: prints the value of the environment variable NAME (a key);
 * - ```` ```sh run ````: commands run in the app once it is built, before it boots.
 *
 * A TypeScript block must say `file=` or `fragment`; anything else is reported.
 * @internal
 */
import { readFileSync } from 'node:fs';

export interface DocBlock {
  /** Path of the document, from the repository root. */
  doc: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** First word of the info string, lowercased (`ts`, `sh`, `json`, ...). */
  lang: string;
  /** The other words: `file=src/x.ts` as `{ file: 'src/x.ts' }`, `fragment` as `{ fragment: '' }`. */
  attrs: Record<string, string>;
  /** The block's text, without the fences (and without the indentation of an indented fence). */
  code: string;
}

const TS_LANGS = new Set(['ts', 'typescript', 'tsx']);

/** Whether a block is TypeScript. */
export function isTypeScript(block: DocBlock): boolean {
  return TS_LANGS.has(block.lang);
}

/** The fenced code blocks of `doc` (a path from `repoDir`), in order. */
export function readDocBlocks(repoDir: string, doc: string): DocBlock[] {
  const lines = readFileSync(`${repoDir}/${doc}`, 'utf8').split('\n');
  const blocks: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*(.*)$/.exec(lines[i] ?? '');
    if (!open) continue;
    const [, indent = '', fence = '', info = ''] = open;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const line = lines[j] ?? '';
      if (line.trimStart().startsWith(fence) && line.trim().replace(/[`~]/g, '') === '') break;
      body.push(line.startsWith(indent) ? line.slice(indent.length) : line.trimStart());
    }
    const [lang = '', ...words] = info.trim().split(/\s+/);
    const attrs: Record<string, string> = {};
    for (const word of words) {
      const eq = word.indexOf('=');
      if (eq < 0) attrs[word] = '';
      else attrs[word.slice(0, eq)] = word.slice(eq + 1);
    }
    blocks.push({
      doc,
      line: i + 1,
      lang: lang.toLowerCase(),
      attrs,
      code: `${body.join('\n')}\n`,
    });
    i = j;
  }
  return blocks;
}

/** Problems with how the TypeScript blocks of a document are marked (empty when all are). */
export function markingProblems(blocks: DocBlock[]): string[] {
  const problems: string[] = [];
  const files = new Map<string, number>();
  for (const block of blocks.filter(isTypeScript)) {
    const where = `${block.doc}:${block.line}`;
    const hasFile = 'file' in block.attrs;
    const hasFragment = 'fragment' in block.attrs;
    if (hasFile === hasFragment) {
      problems.push(
        `${where}: a TypeScript block must be marked either \`ts file=<path>\` (a whole file ` +
          'of the app) or `ts fragment` (checked inside a harness), not ' +
          `\`${block.lang}${Object.keys(block.attrs).length ? ` ${Object.keys(block.attrs).join(' ')}` : ''}\``,
      );
      continue;
    }
    if (hasFile) {
      const file = block.attrs['file'] ?? '';
      if (!/^[\w.-]+(\/[\w.-]+)*\.ts$/.test(file) || file.split('/').includes('..')) {
        problems.push(`${where}: file=${file} must be a relative .ts path inside the app`);
      }
      const previous = files.get(file);
      if (previous !== undefined) {
        problems.push(`${where}: file=${file} is already given at line ${previous}`);
      }
      files.set(file, block.line);
    }
  }
  return problems;
}

/** Names of the packages a piece of TypeScript imports (`@scope/name` or `name`, no relative paths, no `node:`). */
export function importedPackages(code: string): string[] {
  const names = new Set<string>();
  for (const match of code.matchAll(/(?:\bfrom\s+|\bimport\s*\(?\s*)['"]([^'"]+)['"]/g)) {
    const spec = match[1] ?? '';
    if (spec.startsWith('.') || spec.startsWith('node:') || spec.startsWith('/')) continue;
    const parts = spec.split('/');
    names.add(spec.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] ?? spec));
  }
  return [...names];
}

/** Environment variables the code reads: `process.env.NAME`, `config.get('NAME')`, `getOrThrow('NAME')`. */
export function readEnvNames(code: string): string[] {
  const names = new Set<string>();
  for (const match of code.matchAll(/process\.env\.([A-Z][A-Z0-9_]*)/g)) names.add(match[1] ?? '');
  for (const match of code.matchAll(/process\.env\[['"]([A-Z][A-Z0-9_]*)['"]\]/g))
    names.add(match[1] ?? '');
  for (const match of code.matchAll(
    /\.(?:get|getOrThrow)(?:<[^>]*>)?\(\s*['"]([A-Z][A-Z0-9_]*)['"]/g,
  ))
    names.add(match[1] ?? '');
  names.delete('');
  return [...names].sort();
}

/**
 * The commands of a `sh` block, one per entry: continuation lines joined, comments (a `#`
 * after whitespace, outside quotes) and blank lines dropped.
 */
export function shellCommands(code: string): string[] {
  const commands: string[] = [];
  let current = '';
  for (const raw of code.split('\n')) {
    const line = stripComment(raw).trim();
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1).trim()} `;
      continue;
    }
    current += line;
    if (current.trim()) commands.push(current.trim());
    current = '';
  }
  if (current.trim()) commands.push(current.trim());
  return commands;
}

function stripComment(line: string): string {
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = undefined;
    } else if (c === "'" || c === '"') {
      quote = c;
    } else if (c === '#' && (i === 0 || /\s/.test(line[i - 1] ?? ''))) {
      return line.slice(0, i);
    }
  }
  return line;
}

/** Where the harness finds a name a fragment uses without importing or declaring it. */
export interface FragmentScope {
  /** Name -> module to import it from. */
  imports: Record<string, string>;
  /** Name -> a declaration standing for the reader's own value (e.g. their DataSource). */
  declarations: Record<string, string>;
}

/**
 * A fragment as a file: the imports it leaves out (only of names it uses and does not
 * import or declare itself), the declarations of the reader's own values it uses, then the
 * fragment, unchanged. A comment names the document line, so a compiler error points there.
 */
export function fragmentHarness(block: DocBlock, scope: FragmentScope): string {
  const code = block.code;
  const uses = (name: string): boolean =>
    new RegExp(`(?<![\\w$.])${escape(name)}(?![\\w$])`).test(code);
  const ownImport = (name: string): boolean =>
    new RegExp(`import[^;]*[{,\\s]${escape(name)}[\\s,}][^;]*from`).test(code) ||
    new RegExp(`import\\s+(type\\s+)?${escape(name)}\\s+from`).test(code);
  const ownDeclaration = (name: string): boolean =>
    new RegExp(
      `\\b(class|const|let|var|function|interface|type|enum)\\s+${escape(name)}(?![\\w$])`,
    ).test(code);
  const free = (name: string): boolean => uses(name) && !ownImport(name) && !ownDeclaration(name);

  const declarations = Object.entries(scope.declarations).filter(([name]) => free(name));
  // A declaration may itself need an import (e.g. `DataSource` for the reader's dataSource).
  const needed = (name: string): boolean =>
    free(name) ||
    declarations.some(([, text]) => new RegExp(`(?<![\\w$.])${escape(name)}(?![\\w$])`).test(text));
  const byModule = new Map<string, string[]>();
  for (const [name, from] of Object.entries(scope.imports)) {
    if (!needed(name) || ownImport(name)) continue;
    byModule.set(from, [...(byModule.get(from) ?? []), name]);
  }
  const header = [...byModule.entries()].map(
    ([from, names]) => `import { ${names.sort().join(', ')} } from '${from}';`,
  );
  // The fragment's own imports must come first in an ES module only by convention; the
  // compiler accepts imports anywhere at the top level, so the harness prepends its own.
  return [
    `// ${block.doc}:${block.line} (fragment, with the imports it leaves out)`,
    ...header,
    ...declarations.map(([, text]) => text),
    code,
  ].join('\n');
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
