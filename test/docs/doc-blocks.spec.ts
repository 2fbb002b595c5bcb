/**
 * Every TypeScript block of the documentation says what it is: a whole file of the reader's
 * app (```` ```ts file=src/app.module.ts ````) or a fragment (```` ```ts fragment ````).
 * test/docs/doc-examples.e2e-spec.ts then compiles and boots them; an unmarked block would
 * escape that, so it fails here (fast, without installing anything).
 */
import { readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  fragmentHarness,
  importedPackages,
  markingProblems,
  readDocBlocks,
  readEnvNames,
  shellCommands,
  type DocBlock,
} from './support/doc-blocks.js';

const repoDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Documents whose blocks are not marked yet: the only ones this check skips. */
const NOT_YET_MARKED = new Set<string>();
const DOCS = [
  'README.md',
  ...readdirSync(join(repoDir, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .map((name) => `docs/${name}`),
].filter((doc) => !NOT_YET_MARKED.has(doc));

describe.each(DOCS)('%s', (doc) => {
  it('marks every TypeScript block as a file or a fragment', () => {
    expect(markingProblems(readDocBlocks(repoDir, doc))).toEqual([]);
  });
});

describe('the block reader', () => {
  const block = (code: string, info = 'ts fragment'): DocBlock => {
    const [lang = '', ...words] = info.split(' ');
    return {
      doc: 'x.md',
      line: 1,
      lang,
      attrs: Object.fromEntries(words.map((w) => [w.split('=')[0], w.split('=')[1] ?? ''])),
      code,
    };
  };

  it('reports unmarked and doubly marked TypeScript blocks, and bad or repeated paths', () => {
    const problems = markingProblems([
      block('const a = 1;', 'ts'),
      block('const a = 1;', 'typescript fragment file=src/a.ts'),
      block('const a = 1;', 'ts file=../a.ts'),
      block('const a = 1;', 'ts file=src/a.ts'),
      block('const a = 1;', 'ts file=src/a.ts'),
      block('echo hi', 'sh'),
    ]);
    expect(problems).toHaveLength(4);
    expect(problems[0]).toContain('must be marked either `ts file=<path>`');
    expect(problems[2]).toContain('must be a relative .ts path');
    expect(problems[3]).toContain('already given');
  });

  it('finds the packages a block imports', () => {
    const code = `import { A } from '@nestjs/common';\nimport type { B } from 'typeorm';\nimport './x.js';\nimport { C } from './y.js';\nimport { D } from '@scope/pkg/deep';\nimport('node:fs');`;
    expect(importedPackages(code).sort()).toEqual(['@nestjs/common', '@scope/pkg', 'typeorm']);
  });

  it('finds the environment variables a block reads', () => {
    const code = `process.env.A_1; process.env['B']; c.get('C'); c.getOrThrow<string>('D'); c.get('lower')`;
    expect(readEnvNames(code)).toEqual(['A_1', 'B', 'C', 'D']);
  });

  it('splits shell blocks into commands', () => {
    expect(
      shellCommands(
        "# comment\nnpm install a \\\n  b   # why\n\nnpm pkg set x='$y' z='#not a comment'\n",
      ),
    ).toEqual(['npm install a b', "npm pkg set x='$y' z='#not a comment'"]);
  });

  it('wraps a fragment with the imports it leaves out, and only those', () => {
    const code = [
      "import { reencrypt } from 'nestjs-atproto-auth';",
      'class Mine {}',
      'const result = await reencrypt(dataSource, {});',
      '// AtProtoModule is only named in a comment',
      'new Mine();',
    ].join('\n');
    const file = fragmentHarness(block(code), {
      imports: {
        reencrypt: 'nestjs-atproto-auth',
        Mine: 'elsewhere',
        DataSource: 'typeorm',
        Agent: '@atproto/api',
      },
      declarations: { dataSource: 'declare const dataSource: DataSource;' },
    });
    expect(file).toContain("import { DataSource } from 'typeorm';");
    expect(file).toContain('declare const dataSource: DataSource;');
    expect(file).not.toContain("from 'elsewhere'");
    expect(file).not.toContain("from '@atproto/api'");
    expect(file.match(/import \{ reencrypt \}/g)).toHaveLength(1);
    expect(file.endsWith(`${code}\n`) || file.endsWith(code)).toBe(true);
  });
});
