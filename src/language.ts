/**
 * The prompt-cell language: a `%%generate` cell is an options line followed by prose.
 *
 * The options line shows the magic, its flags, their values and quoted strings; the body is prose
 * (no keywords, no string colouring from an apostrophe) with `{name}` interpolations marked and
 * `{{` / `}}` shown as the literal braces they stand for. Lines wrap.
 */
import { LanguageSupport, StreamLanguage, StringStream, syntaxHighlighting } from '@codemirror/language';
import { Prec } from '@codemirror/state';
import { Decoration, DecorationSet, EditorView, MatchDecorator, ViewPlugin, ViewUpdate } from '@codemirror/view';
import { Tag, tagHighlighter, tags } from '@lezer/highlight';

export const PROMPT_MIME = 'text/x-nb-model-prompt';

/** Tags of our own, each also a standard tag so a theme's highlight style colours it too. */
export const promptTags = {
  magic: Tag.define(tags.keyword),
  flag: Tag.define(tags.attributeName),
  value: Tag.define(tags.attributeValue),
  quoted: Tag.define(tags.string),
  interpolation: Tag.define(tags.variableName),
  escape: Tag.define(tags.escape)
};

interface IState {
  line: number; // 0 on the options line
}

function token(stream: StringStream, state: IState): string | null {
  if (state.line === 0) {
    if (stream.eatSpace()) {
      return null;
    }
    if (stream.match(/^%%?generate\b/)) {
      return 'magic';
    }
    if (stream.match(/^--?[\w-]+/)) {
      return 'flag';
    }
    if (stream.match(/^=/)) {
      return null;
    }
    if (stream.match(/^"(?:[^"\\]|\\.)*"?/) || stream.match(/^'(?:[^'\\]|\\.)*'?/)) {
      return 'quoted';
    }
    stream.match(/^[^\s=]+/);
    return 'value';
  }
  if (stream.match('{{') || stream.match('}}')) {
    return 'escape';
  }
  if (stream.match(/^\{[A-Za-z_][\w.]*(?:\[[^\]\n]*\])?(?:![rsa])?(?::[^{}\n]*)?\}/)) {
    return 'interpolation';
  }
  stream.next();
  stream.eatWhile(/[^{}]/);
  return null;
}

export const promptLanguage = StreamLanguage.define<IState>({
  name: 'nb-model-prompt',
  startState: () => ({ line: 0 }),
  copyState: s => ({ ...s }),
  token: (stream, state) => {
    const style = token(stream, state);
    if (stream.eol()) {
      state.line += 1;
    }
    return style;
  },
  blankLine: state => {
    state.line += 1;
  },
  tokenTable: promptTags
});

/** Our class names on our tokens: the editor's own theme still colours them through the parent tags. */
const promptClasses = tagHighlighter([
  { tag: promptTags.magic, class: 'nbm-tok-magic' },
  { tag: promptTags.flag, class: 'nbm-tok-flag' },
  { tag: promptTags.value, class: 'nbm-tok-value' },
  { tag: promptTags.quoted, class: 'nbm-tok-quoted' },
  { tag: promptTags.interpolation, class: 'nbm-tok-interpolation' },
  { tag: promptTags.escape, class: 'nbm-tok-escape' }
]);

export function promptSupport(): LanguageSupport {
  return new LanguageSupport(promptLanguage, [syntaxHighlighting(promptClasses), EditorView.lineWrapping]);
}

/** Does a code cell's source make it a prompt cell? */
export function isPromptSource(source: string): boolean {
  return /^\s*%%generate\b/.test(source);
}

/** `%generate …` line magics inside Python cells: the magic and its flags marked, the rest of the
 * line plain (no Python colours on words that are not Python). */
const LINE_MAGIC = /^([ \t]*)(%generate)\b([^\n]*)$/gm;
const FLAG = /(^|\s)(--?[A-Za-z][\w-]*)/g;

const lineMagicMarks = new MatchDecorator({
  regexp: LINE_MAGIC,
  decorate: (add, from, _to, match) => {
    const start = from + match[1].length;
    add(start, start + match[2].length, Decoration.mark({ class: 'nbm-tok-magic' }));
    const restFrom = start + match[2].length;
    if (match[3].length > 0) {
      add(restFrom, restFrom + match[3].length, Decoration.mark({ class: 'nbm-line-magic' }));
    }
    for (const flag of match[3].matchAll(FLAG)) {
      const at = restFrom + (flag.index ?? 0) + flag[1].length;
      add(at, at + flag[2].length, Decoration.mark({ class: 'nbm-tok-flag' }));
    }
  }
});

export const lineMagics = Prec.high(
  ViewPlugin.fromClass(
    class {
      decorations: DecorationSet;
      constructor(view: EditorView) {
        this.decorations = lineMagicMarks.createDeco(view);
      }
      update(update: ViewUpdate) {
        this.decorations = lineMagicMarks.updateDeco(update, this.decorations);
      }
    },
    { decorations: v => v.decorations }
  )
);
