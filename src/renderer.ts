/**
 * The generation renderer: `application/vnd.nb-model.generation+json` outputs.
 *
 * The custom part of a bundle is small (what kind of output, its format and state, the footer's
 * fields); an answer's text travels once, in the bundle's standard fallback (`text/markdown`,
 * `text/plain`, `text/html`, `application/json`), which frontends without this renderer show.
 *
 * Kinds: `waiting` (a "generating…" line until the first token), `answer` (a piece of the answer,
 * streaming or done), `footer` (model, tokens, timings, cost, warnings; copy and insert buttons),
 * `compare` (variants side by side, growing as their answers arrive).
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

export const GENERATION_MIME = 'application/vnd.nb-model.generation+json';

export interface IAnswer {
  text: string;
  format: string;
}

export interface IRendererContext {
  rendermime: IRenderMimeRegistry;
  answerFor(node: Node): IAnswer | null;
  insert(node: Node, answer: IAnswer): void;
}

interface IFooter {
  model?: string;
  prompt_tokens?: number;
  completion_tokens?: number;
  ttft_s?: number | null;
  latency_s?: number | null;
  finish_reason?: string | null;
  cost_usd?: number | null;
  cached?: boolean;
  tokens?: string; // the kernel's own wording, e.g. `~12 → ~40 tokens` when the counts are estimates
  note?: string | null; // e.g. what is left of today's budget on a JupyterHub relay service
  warnings?: string[];
}

interface IColumn {
  label: string;
  text: string;
  state?: string;
  stats?: string;
  error?: string;
}

interface IPayload extends IFooter {
  kind: 'waiting' | 'answer' | 'footer' | 'compare';
  format?: string;
  state?: string;
  columns?: IColumn[];
}

const FENCE = /```[\w+-]*\n([\s\S]*?)\n?```/;

/** The answer a cell's outputs hold: its stdout stream, or its final rendered answer. */
export function answerFromOutputs(outputs: { length: number; get(i: number): { toJSON(): any } }): IAnswer | null {
  let stream = '';
  let rendered: IAnswer | null = null;
  let format = 'text';
  for (let i = 0; i < outputs.length; i++) {
    const out = outputs.get(i).toJSON();
    if (out.output_type === 'stream' && out.name === 'stdout') {
      stream += Array.isArray(out.text) ? out.text.join('') : out.text;
    }
    const payload = out.data?.[GENERATION_MIME] as IPayload | undefined;
    if (payload?.kind === 'answer' && payload.state === 'done') {
      const fmt = payload.format ?? 'text';
      let text = String(out.data['text/markdown'] ?? out.data['text/html'] ?? out.data['text/plain'] ?? '');
      if (fmt === 'code') {
        const fence = FENCE.exec(text);
        text = fence ? fence[1] : text;
      }
      rendered = { text, format: fmt };
    }
    if (payload?.kind === 'footer' && payload.format) {
      format = payload.format;
    }
  }
  if (rendered) {
    return rendered;
  }
  return stream ? { text: stream.replace(/\n$/, ''), format } : null;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = cls;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export class GenerationRenderer extends Widget implements IRenderMime.IRenderer {
  private _inner: IRenderMime.IRenderer | null = null;
  private _innerType = '';

  constructor(
    private readonly _options: IRenderMime.IRendererOptions,
    private readonly _context: IRendererContext
  ) {
    super();
    this.addClass('nbm-generation');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const payload = (model.data[this._options.mimeType] ?? {}) as unknown as IPayload;
    this.node.dataset.kind = payload.kind;
    this.node.dataset.state = payload.state ?? '';
    switch (payload.kind) {
      case 'waiting':
        this._clear();
        this.node.appendChild(el('div', 'nbm-waiting', String(model.data['text/plain'] ?? 'generating…')));
        return;
      case 'footer':
        this._clear();
        this._footer(payload);
        return;
      case 'compare':
        this._clear();
        this._compare(payload);
        return;
      default:
        return this._answer(model, payload);
    }
  }

  private _clear(): void {
    if (this._inner) {
      this._inner.dispose();
      this._inner = null;
      this._innerType = '';
    }
    this.node.textContent = '';
  }

  /** Markdown, code, JSON and HTML go through the notebook's own renderers (so math, links and
   * sanitizing work as usual); plain text is wrapped at word boundaries. */
  private async _answer(model: IRenderMime.IMimeModel, payload: IPayload): Promise<void> {
    const data = model.data;
    const type = ['text/markdown', 'application/json', 'text/html'].find(t => data[t] !== undefined);
    const streaming = payload.state === 'streaming';
    if (type) {
      if (this._innerType !== type) {
        this._clear();
        this._inner = this._context.rendermime.createRenderer(type);
        this._innerType = type;
        this.node.appendChild(this._inner.node);
      }
      await this._inner!.renderModel(new MimeModel({ data: { [type]: data[type] }, trusted: model.trusted }));
    } else {
      this._clear();
      this.node.appendChild(el('div', 'nbm-text', String(data['text/plain'] ?? '')));
    }
    this.node.querySelector(':scope > .nbm-cursor')?.remove();
    if (streaming) {
      this.node.appendChild(el('span', 'nbm-cursor'));
    }
  }

  private _footer(p: IFooter & { format?: string }): void {
    const footer = el('div', 'nbm-footer');
    const line = el('div', 'nbm-footer-line');
    const part = (cls: string, text: string) => line.appendChild(el('span', `nbm-footer-part ${cls}`, text));
    part('nbm-footer-model', p.model || 'model');
    part('nbm-footer-tokens', p.tokens ?? `${p.prompt_tokens ?? 0} → ${p.completion_tokens ?? 0} tokens`);
    if (p.ttft_s !== null && p.ttft_s !== undefined) {
      part('nbm-footer-ttft', `first token ${p.ttft_s.toFixed(2)} s`);
    }
    if (p.latency_s !== null && p.latency_s !== undefined) {
      part('nbm-footer-total', `total ${p.latency_s.toFixed(2)} s`);
    }
    part('nbm-footer-finish', `finish: ${p.finish_reason || '?'}`);
    if (p.cost_usd) {
      part('nbm-footer-cost', p.cached ? `$0 (saved $${p.cost_usd.toFixed(4)})` : `$${p.cost_usd.toFixed(4)}`);
    }
    if (p.cached) {
      part('nbm-footer-cached', 'cached');
    }
    if (p.note) {
      part('nbm-footer-note', p.note);
    }
    footer.appendChild(line);
    for (const w of p.warnings ?? []) {
      footer.appendChild(el('div', 'nbm-footer-warning', `⚠ ${w}`));
    }
    const actions = el('div', 'nbm-actions');
    const copy = el('button', 'jp-Button nbm-copy', 'Copy');
    copy.title = 'copy the answer';
    copy.onclick = () => {
      const answer = this._context.answerFor(this.node);
      if (answer) {
        void navigator.clipboard?.writeText(answer.text).then(() => (copy.textContent = 'Copied'));
      }
    };
    const insert = el('button', 'jp-Button nbm-insert', 'Insert as cell');
    insert.title = 'add a cell below with the answer (markdown answers: markdown cell; code: code cell)';
    insert.onclick = () => {
      const answer = this._context.answerFor(this.node);
      if (answer) {
        this._context.insert(this.node, answer);
      }
    };
    actions.append(copy, insert);
    line.appendChild(actions);
    this.node.appendChild(footer);
  }

  private _compare(p: IPayload): void {
    const row = el('div', 'nbm-compare');
    for (const col of p.columns ?? []) {
      const box = el('div', 'nbm-compare-column');
      box.dataset.state = col.state ?? '';
      box.appendChild(el('div', 'nbm-compare-label', col.label));
      const text = box.appendChild(el('div', 'nbm-text', col.text));
      if (col.state === 'streaming') {
        text.appendChild(el('span', 'nbm-cursor'));
      }
      if (col.error) {
        box.appendChild(el('div', 'nbm-error', `⚠ ${col.error}`));
      }
      if (col.stats) {
        box.appendChild(el('div', 'nbm-footer-line', col.stats));
      }
      row.appendChild(box);
    }
    this.node.appendChild(row);
  }
}
