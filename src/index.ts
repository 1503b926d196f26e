/**
 * nb_model in JupyterLab and Notebook 7.
 *
 * - `%%generate` cells get the prompt language (options line + prose, wrapped lines).
 * - Outputs carrying `application/vnd.nb-model.generation+json` get the generation renderer.
 * - `nb-model:insert-cell` adds a cell below; the renderer's button and the kernel (comm target
 *   `nb_model`, used by the panel's "To cell") both go through it.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { EditorExtensionRegistry, IEditorExtensionRegistry, IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Cell } from '@jupyterlab/cells';
import { Kernel } from '@jupyterlab/services';

import { PROMPT_MIME, isPromptSource, lineMagics, promptSupport } from './language';
import { GENERATION_MIME, GenerationRenderer, IAnswer, answerFromOutputs } from './renderer';

export const INSERT_CELL = 'nb-model:insert-cell';
export const COMM_TARGET = 'nb_model';

type CellType = 'markdown' | 'code';

function cellTypeFor(format: string): CellType {
  return format === 'code' || format === 'json' ? 'code' : 'markdown';
}

/** The notebook panel and cell index holding a DOM node (e.g. a rendered output). */
function locate(tracker: INotebookTracker, node: Node): { panel: NotebookPanel; index: number } | null {
  let found: { panel: NotebookPanel; index: number } | null = null;
  tracker.forEach(panel => {
    if (!found) {
      const index = panel.content.widgets.findIndex(cell => cell.node.contains(node));
      if (index >= 0) {
        found = { panel, index };
      }
    }
  });
  return found;
}

function insertBelow(panel: NotebookPanel, index: number, text: string, cellType: CellType): number {
  const notebook = panel.content;
  const model = notebook.model;
  if (!model) {
    throw new Error('the notebook has no model yet');
  }
  const at = Math.min(Math.max(index + 1, 0), model.cells.length);
  model.sharedModel.insertCell(at, { cell_type: cellType, source: text, metadata: {} });
  notebook.activeCellIndex = at;
  return at;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nb_model:plugin',
  description: 'Prompt cells, the generation renderer and the insert-cell command of nb_model.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry, IEditorLanguageRegistry, IEditorExtensionRegistry],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    languages: IEditorLanguageRegistry,
    extensions: IEditorExtensionRegistry
  ) => {
    extensions.addExtension({
      name: 'nb_model:line-magics',
      factory: () => EditorExtensionRegistry.createImmutableExtension(lineMagics)
    });
    const support = promptSupport();
    languages.addLanguage({
      name: 'nb-model-prompt',
      displayName: 'nb_model prompt',
      mime: PROMPT_MIME,
      support,
      load: async () => support
    });

    app.commands.addCommand(INSERT_CELL, {
      label: 'Insert the answer as a cell below',
      describedBy: {
        args: {
          type: 'object',
          properties: {
            text: { type: 'string' },
            cellType: { type: 'string', enum: ['markdown', 'code'] },
            index: { type: 'number' },
            notebook: { type: 'string' }
          }
        }
      },
      execute: args => {
        const id = args.notebook as string | undefined;
        const panel = id ? tracker.find(p => p.id === id) : tracker.currentWidget;
        if (!panel) {
          throw new Error('no notebook to insert into');
        }
        const index = typeof args.index === 'number' ? args.index : panel.content.activeCellIndex;
        const cellType: CellType = args.cellType === 'code' ? 'code' : 'markdown';
        return insertBelow(panel, index, String(args.text ?? ''), cellType);
      }
    });

    const context = {
      rendermime,
      answerFor: (node: Node): IAnswer | null => {
        const where = locate(tracker, node);
        if (!where) {
          return null;
        }
        const cell = where.panel.content.widgets[where.index];
        return cell.model.type === 'code' ? answerFromOutputs((cell.model as any).outputs) : null;
      },
      insert: (node: Node, answer: IAnswer) => {
        const where = locate(tracker, node);
        if (!where) {
          return;
        }
        void app.commands.execute(INSERT_CELL, {
          text: answer.text,
          cellType: cellTypeFor(answer.format),
          index: where.index,
          notebook: where.panel.id
        });
      }
    };
    rendermime.addFactory(
      {
        safe: true,
        mimeTypes: [GENERATION_MIME],
        defaultRank: 5,
        createRenderer: options => new GenerationRenderer(options, context)
      },
      5
    );

    // the kernel asks for a cell (the panel's "To cell"): insert it and say so
    const registered = new WeakSet<Kernel.IKernelConnection>();
    const listen = (panel: NotebookPanel, kernel: Kernel.IKernelConnection | null | undefined) => {
      if (!kernel || registered.has(kernel)) {
        return;
      }
      registered.add(kernel);
      kernel.registerCommTarget(COMM_TARGET, (comm, msg) => {
        const data = msg.content.data as { action?: string; text?: string; cell_type?: string };
        if (data.action !== 'insert-cell') {
          comm.close({ error: `unknown action ${data.action}` });
          return;
        }
        const index = insertBelow(panel, panel.content.activeCellIndex, data.text ?? '',
          data.cell_type === 'markdown' ? 'markdown' : 'code');
        comm.send({ inserted: true, index });
        comm.close();
      });
    };

    // prompt cells: our language, wrapped prose, and a class the styles hang on
    const marked = new WeakSet<Cell>();
    const mark = (panel: NotebookPanel, cell: Cell) => {
      if (marked.has(cell) || cell.model.type !== 'code') {
        return;
      }
      marked.add(cell);
      const update = () => {
        if (cell.isDisposed) {
          return;
        }
        const prompt = isPromptSource(cell.model.sharedModel.getSource());
        cell.toggleClass('nbm-prompt-cell', prompt);
        if (prompt && cell.model.mimeType !== PROMPT_MIME) {
          cell.model.mimeType = PROMPT_MIME;
        } else if (!prompt && cell.model.mimeType === PROMPT_MIME) {
          cell.model.mimeType = panel.content.codeMimetype;
        }
      };
      cell.model.contentChanged.connect(update);
      cell.model.mimeTypeChanged.connect(update);
      update();
    };
    const scan = (panel: NotebookPanel) => panel.content.widgets.forEach(cell => mark(panel, cell));

    tracker.widgetAdded.connect((_, panel) => {
      panel.sessionContext.kernelChanged.connect((_, change) => listen(panel, change.newValue));
      void panel.sessionContext.ready.then(() => listen(panel, panel.sessionContext.session?.kernel));
      void panel.context.ready.then(() => {
        scan(panel);
        panel.content.model?.cells.changed.connect(() => requestAnimationFrame(() => scan(panel)));
      });
    });
  }
};

export default plugin;
