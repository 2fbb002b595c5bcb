/**
 * The documentation points only inside the repository, at files that exist: every relative
 * link (and its `#anchor`) in README.md, docs/*.md and sample/README.md, and every
 * repository path named in their prose (`test/e2e/support/pds.ts`, `bench/*.bench.ts`).
 * A moved or deleted file, or a reference to a document outside the repository, fails here.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

const DOCS = [
  'README.md',
  ...readdirSync(join(repoDir, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .map((name) => `docs/${name}`),
  'sample/README.md',
];

/**
 * The repository's files as a fresh clone has them: tracked, plus new files not ignored (so
 * that a file added in the same change counts before it is committed).
 */
const repoFiles = execFileSync(
  'git',
  ['ls-files', '--cached', '--others', '--exclude-standard', '-z'],
  { cwd: repoDir, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
)
  .split('\0')
  .filter((file) => file !== '');
const fileSet = new Set(repoFiles);
const topLevelDirs = new Set(
  repoFiles.filter((file) => file.includes('/')).map((file) => file.split('/')[0]),
);

/** A path inside the repository (no leading `./`, `/`-separated), or null outside it. */
function inRepo(fromDoc: string, target: string): string | null {
  const path = posix.normalize(posix.join(posix.dirname(fromDoc), target));
  return path.startsWith('../') || path === '..' || posix.isAbsolute(path) ? null : path;
}

/** Whether `path` is a file of the repository, a folder holding some, or a glob matching one. */
function exists(path: string): boolean {
  const clean = path.replace(/\/$/, '');
  if (clean === '' || clean === '.') return true;
  if (clean.includes('*')) {
    const pattern = new RegExp(
      `^${clean
        .split('*')
        .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('[^/]*')}(/|$)`,
    );
    return repoFiles.some((file) => pattern.test(file));
  }
  return fileSet.has(clean) || repoFiles.some((file) => file.startsWith(`${clean}/`));
}

/** GitHub's anchors: the heading lowercased, punctuation dropped, spaces as hyphens. */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const line of withoutCodeBlocks(markdown).split('\n')) {
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!heading?.[1]) continue;
    const base = heading[1]
      .replace(/`/g, '')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  }
  return anchors;
}

/** The text with fenced code blocks blanked out (their lines kept, so line numbers hold). */
function withoutCodeBlocks(markdown: string): string {
  let inFence = false;
  return markdown
    .split('\n')
    .map((line) => {
      if (/^\s*(```|~~~)/.test(line)) {
        inFence = !inFence;
        return '';
      }
      return inFence ? '' : line;
    })
    .join('\n');
}

interface Reference {
  doc: string;
  line: number;
  text: string;
  kind: 'link' | 'path';
}

function referencesOf(doc: string): Reference[] {
  const text = withoutCodeBlocks(readFileSync(join(repoDir, doc), 'utf8'));
  const refs: Reference[] = [];
  text.split('\n').forEach((line, index) => {
    // Inline links and images: [text](target "title"), <autolinks> are absolute anyway.
    for (const match of line.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      refs.push({ doc, line: index + 1, text: match[1] ?? '', kind: 'link' });
    }
    // Reference-style link definitions: [name]: target
    const definition = /^\s*\[[^\]]+\]:\s*(\S+)/.exec(line);
    if (definition?.[1]) refs.push({ doc, line: index + 1, text: definition[1], kind: 'link' });
    // Paths named in code spans: `test/e2e/support/pds.ts`, `/some/absolute/path`.
    for (const match of line.matchAll(/`([^`\s]+)`/g)) {
      refs.push({ doc, line: index + 1, text: match[1] ?? '', kind: 'path' });
    }
  });
  return refs;
}

/** Absolute paths of a machine (a home, a work or temp folder) are never the repository's. */
const MACHINE_PATH = /^(\/(work|tmp|root|home|Users|mnt|srv)\/|~\/|[A-Za-z]:\\)/;

describe.each(DOCS)('%s', (doc) => {
  const refs = referencesOf(doc);

  it('links only to files of the repository that exist, and to headings they have', () => {
    const broken: string[] = [];
    for (const ref of refs.filter((r) => r.kind === 'link')) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(ref.text)) continue; // https:, mailto: ...
      const [target = '', anchor] = ref.text.split('#', 2);
      const path = target === '' ? doc : inRepo(doc, decodeURI(target));
      const where = `${ref.doc}:${ref.line} ${ref.text}`;
      if (path === null) broken.push(`${where}: outside the repository`);
      else if (!exists(path)) broken.push(`${where}: no such file in the repository`);
      else if (anchor !== undefined && path.endsWith('.md')) {
        const anchors = anchorsOf(readFileSync(join(repoDir, path), 'utf8'));
        if (!anchors.has(anchor)) broken.push(`${where}: ${path} has no heading #${anchor}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('names only repository paths that exist, and no path of a machine', () => {
    const broken: string[] = [];
    for (const ref of refs.filter((r) => r.kind === 'path')) {
      const where = `${ref.doc}:${ref.line} \`${ref.text}\``;
      if (MACHINE_PATH.test(ref.text)) {
        broken.push(`${where}: a path outside the repository`);
        continue;
      }
      // Only what starts with a folder of the repository (`test/...`, `docs/...`, `.ci/run`)
      // is one of its paths, from its root; `src/app.module.ts` or `dist/index.js` are files
      // of the user's app or of a build.
      const path = ref.text.replace(/^\.\//, '').replace(/[.,;:]+$/, '');
      if (!path.includes('/') || !topLevelDirs.has(path.split('/')[0] ?? '')) continue;
      if (!exists(path)) broken.push(`${where}: no such file in the repository`);
    }
    expect(broken).toEqual([]);
  });
});

it('names no folder of a machine in any file of the repository', () => {
  // What a file of the repository refers to must be in the repository (or a system path
  // such as /usr/bin/chromium): a home or work folder exists on one machine only.
  const machineFolder = new RegExp(String.raw`(^|[^\w.])/(work|root|home|Users)/\S*`, 'm');
  const found: string[] = [];
  for (const file of repoFiles) {
    if (file === 'package-lock.json' || !existsSync(join(repoDir, file))) continue;
    const text = readFileSync(join(repoDir, file));
    if (text.includes(0)) continue; // binary
    text
      .toString('utf8')
      .split('\n')
      .forEach((line, index) => {
        const match = machineFolder.exec(line);
        if (match) found.push(`${file}:${index + 1} ${match[0].trim()}`);
      });
  }
  expect(found).toEqual([]);
});

it('checks every markdown document of the top level and docs/', () => {
  // A new document is checked too: this list is derived, the check cannot silently skip it.
  const top = readdirSync(repoDir).filter((name) => name.endsWith('.md'));
  expect(DOCS).toEqual(expect.arrayContaining(top));
});
