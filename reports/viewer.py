"""The conversation viewer: a model's predictions as one self-contained HTML page, for error analysis.

    viewer.write_viewer('conversations.html', table, label_names, flags, title)
    table = viewer.testing_table(utterances, log_prob, fs, data_dir)     # train.py --testing's rows, as below

table: one row per utterance, each dialogue's rows together and in turn order (predict.py's output):
    dialogue, speaker, [speaker_index], [text], [label], predicted, p_<label> for every class
label and predicted are label names; speaker_index is the model's speaker index (when absent: each
dialogue's speakers numbered in order of appearance); without text a turn shows its index.
flags: the run's window_spk, window_spk_f, window_dir, window_dir_f and single_edge (config.json's).

The page opens from disk and needs no network: inline CSS and JS, the data as one JSON blob, the DOM of
a dialogue built when it is opened. It shows accuracy, weighted F1, the confusion matrix and the inertia
breakdown; the dialogues (size, accuracy; sortable, searchable by text or speaker); a dialogue as a chat
(true and predicted chips, a probability bar per class, mistakes highlighted, turns keeping the speaker's
previous emotion (inertia) or changing it (shift) marked; by the true labels, by the predicted ones when
there are none); filters; and a selected turn's EIGNN and ECGNN connections, from graph.py.
Its state is in the URL fragment: #dialogue=KEY&filter=mistakes&true=LABEL&pred=LABEL&shifts=1&turn=I&q=TEXT.
"""
import html
import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd

import graph
import utils
from core import config, speaker_scheme

GRAPH_FLAGS = ('window_spk', 'window_spk_f', 'window_dir', 'window_dir_f', 'single_edge')


# ----------------------------------------------------------------------------- the graphs of one dialogue

def graph_connections(speakers, flags):
    """One dialogue's EIGNN and ECGNN edges between its utterances under the run's flags: graph.turn_edges, the
    model's own graphs (no second copy of the rules).

    speakers (n,): the model's speaker index of each utterance. Returns {'ei': str, 'ec': str}, each
    n*n digits: the digit at dst*n + src is the number of edges src -> dst (duplicates counted, at most 9).
    """
    cfg = SimpleNamespace(**{name: flags[name] for name in GRAPH_FLAGS}, directed_edge='',
                          causal=flags.get('causal', False))      # a --causal run's graphs: past edges only
    speakers = np.asarray(speakers, dtype=np.int64)
    return {name: ''.join(map(str, graph.turn_edges(stage, cfg, speakers).long().clamp(max=9).flatten().tolist()))
            for name, stage in (('ei', 'EIG'), ('ec', 'ECG'))}


# ----------------------------------------------------------------------------- the tables it reads

def testing_table(utterances, log_prob, fs, data_dir):
    """train.py --testing's rows (saved_outputs/utterances_<DS>.csv: dialogue_key, speaker, label, pred, ...)
    and log-probabilities (N, C) as the viewer's table; custom data gets its texts and speaker names from the
    feature folder's utterances.csv."""
    names = list(fs.label_names)
    table = pd.DataFrame(dict(dialogue=utterances['dialogue_key'].astype(str).to_numpy(),
                              speaker=speaker_names(fs.name, utterances['speaker']),
                              speaker_index=utterances['speaker'].to_numpy(),
                              label=[names[i] for i in utterances['label']],
                              predicted=[names[i] for i in utterances['pred']]))
    if fs.name == config.CUSTOM:
        rows = pd.read_csv(os.path.join(data_dir, 'utterances.csv'), dtype=str, keep_default_na=False)
        rows = rows.set_index(['dialogue_key', rows.groupby('dialogue_key').cumcount()])
        where = pd.MultiIndex.from_arrays([table['dialogue'], utterances['utterance_idx'].to_numpy()])
        table['speaker'] = rows['speaker'].reindex(where).to_numpy()
        table['text'] = rows['text'].reindex(where).to_numpy()
    probabilities = np.exp(np.asarray(log_prob, dtype=np.float64))
    return table.assign(**{f'p_{name}': probabilities[:, i] for i, name in enumerate(names)})


def speaker_names(dataset, index):
    """Display names of a paper dataset's speaker indices: IEMOCAP's M / F, 'speaker k' otherwise."""
    if dataset == 'IEMOCAP':
        return np.array(['M', 'F'])[np.asarray(index)]
    return [f'speaker {i}' for i in index]


def predictions_speakers(predictions, run):
    """predict.py's table with the model's speaker_index, under the run's recorded speaker scheme."""
    meta = run['features']
    keyed = predictions.assign(key=predictions['dialogue'].astype(str))
    return predictions.assign(speaker_index=speaker_scheme.speaker_indices(keyed, meta['speakers'],
                                                                           run['model_config']['n_speakers']))


# ----------------------------------------------------------------------------- the page's data

def summary(labels, preds, marks, n_classes):
    """Accuracy, weighted F1, confusion matrix (rows true) and the inertia breakdown; None without labels."""
    if labels is None:
        return None
    rows = []
    for name, mark in utils.TURN_KINDS.items():
        subset = marks == mark
        scores = [utils.accuracy(labels[subset], preds[subset]), utils.weighted_f1(labels[subset], preds[subset])] \
            if subset.any() else [None, None]
        rows.append([name, int(subset.sum()), *scores])
    return dict(acc=utils.accuracy(labels, preds), f1=utils.weighted_f1(labels, preds),
                confusion=utils.confusion(labels, preds, n_classes).tolist(), inertia=rows)


def check_table(table, label_names):
    """The columns the viewer reads: a UserError naming the missing ones."""
    missing = [c for c in ('dialogue', 'speaker', 'predicted', *(f'p_{name}' for name in label_names))
               if c not in table.columns]
    if missing:
        raise utils.UserError(f"the predictions table lacks the column(s) {', '.join(missing)}, which the "
                              "conversation viewer reads (predict.py's output has them).")
    for column in ('label', 'predicted'):
        if column not in table.columns or (column == 'label' and table[column].isna().all()):
            continue
        unknown = ~table[column].isin(label_names)
        if unknown.any():
            row = int(np.flatnonzero(unknown.to_numpy())[0])
            raise utils.UserError(f"the predictions table's row {row + 1} has the {column} {table[column].iat[row]!r}, "
                                  f"which is none of the labels {', '.join(label_names)}.")


def page_data(table, label_names, flags, title):
    """Everything the page shows, as one JSON-able dict."""
    check_table(table, label_names)
    index = {name: i for i, name in enumerate(label_names)}
    has_labels = 'label' in table.columns and table['label'].notna().all()
    dialogue = table['dialogue'].astype(str).to_numpy()
    if 'speaker_index' in table.columns:
        spk_index = table['speaker_index'].to_numpy()
    else:
        spk_index = speaker_scheme.parties(dialogue, table['speaker'])
    preds = table['predicted'].map(index).to_numpy()
    labels = table['label'].map(index).to_numpy() if has_labels else None
    marks = utils.turn_kinds(labels if has_labels else preds, spk_index, dialogue)
    speakers, speaker_ids = np.unique(table['speaker'].astype(str).to_numpy(), return_inverse=True)
    probs = np.rint(table[[f'p_{name}' for name in label_names]].to_numpy(np.float64) * 100).astype(int)
    texts = table['text'].astype(str).to_numpy() if 'text' in table.columns else None
    dialogues = []
    for key, rows in pd.Series(np.arange(len(table))).groupby(dialogue, sort=False):
        rows = rows.to_numpy()
        d = dict(k=key, s=speaker_ids[rows].tolist(), p=preds[rows].tolist(), q=probs[rows].ravel().tolist(),
                 m=''.join(marks[rows]), **graph_connections(spk_index[rows], flags))
        if has_labels:
            d['y'] = labels[rows].tolist()
        if texts is not None:
            d['t'] = texts[rows].tolist()
        dialogues.append(d)
    return dict(title=title, labels=list(label_names), speakers=speakers.tolist(),
                flags={name: flags[name] for name in GRAPH_FLAGS},
                summary=summary(labels, preds, marks, len(label_names)), d=dialogues)


def page(data):
    """The HTML page of page_data's dict."""
    blob = json.dumps(data, separators=(',', ':'), ensure_ascii=False).replace('<', '\\u003c')  # no tag in a text
    return TEMPLATE.replace('__TITLE__', html.escape(data['title'])).replace('__DATA__', blob)


def write_viewer(path, table, label_names, flags, title):
    """Write the conversation viewer of a predictions table (see the module docstring) to path, atomically."""
    utils.save_text(path, page(page_data(table, list(label_names), flags, title)))


def write_predictions(path, predictions, run, title):
    """predict.py --html: the viewer of owndata.prediction.predict()'s table, with the run's (config.json's) labels,
    speaker scheme and graph flags."""
    write_viewer(path, predictions_speakers(predictions, run), run['features']['label_names'], run['model_config'],
                 title)


def check_page_path(path, flag, others=()):
    """A UserError, before any work, unless path can be written and is none of the others (input, other output)."""
    if os.path.isdir(path):
        raise utils.UserError(f"{flag} {path} is a folder; give the page's file name, e.g. "
                              f"{os.path.join(path, 'conversations.html')}.")
    same = [other for other in others if os.path.abspath(other) == os.path.abspath(path)]
    if same:
        raise utils.UserError(f"{flag} {path} is also {same[0]}, which the command reads or writes; give another "
                              "file name.")
    utils.check_output_folder(path, flag, folder=False)


# ----------------------------------------------------------------------------- the page

TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f6f6f4;display:flex;flex-direction:column;
height:100vh}
header{padding:8px 16px;background:#2f3b4c;color:#fff}h1{font-size:17px;margin:0}
#flags{font-size:12px;opacity:.85}#errors{color:#b00;background:#fee;white-space:pre-wrap}#errors:empty{display:none}
#summary{display:flex;gap:24px;flex-wrap:wrap;padding:8px 16px;background:#fff;border-bottom:1px solid #ddd}
#summary table{border-collapse:collapse;font-size:12px}#summary td,#summary th{border:1px solid #ddd;padding:2px 5px;
text-align:right}#summary .score{font-size:20px;font-weight:600}td.cell{cursor:pointer}td.diag{font-weight:700}
main{display:flex;flex:1;min-height:300px}.note{font-size:11px;color:#666;max-width:260px}
nav{width:300px;display:flex;flex-direction:column;border-right:1px solid #ddd;background:#fff}
nav input,nav select{margin:4px 8px}#count{font-size:12px;color:#666;margin:0 8px}
#dialogues{list-style:none;margin:0;padding:0;overflow-y:auto;flex:1}
.dlg{display:flex;gap:6px;padding:3px 8px;cursor:pointer;border-bottom:1px solid #eee;font-size:13px}
.dlg .key{flex:1;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}.dlg .size{color:#777}
.dlg.sel{background:#dde8f7}.dlg:hover{background:#eef}
#pane{flex:1;display:flex;flex-direction:column;min-width:0}
#filters{padding:6px 12px;background:#fff;border-bottom:1px solid #ddd;display:flex;gap:14px;flex-wrap:wrap}
#dhead{font-weight:600;padding:4px 12px}#links{padding:0 12px;font-size:12px;color:#333;white-space:pre-wrap}
#chat{list-style:none;margin:0;padding:6px 12px;overflow-y:auto;flex:1}
.turn{max-width:70%;margin:4px 0;padding:5px 9px;border-radius:9px;background:#fff;border:2px solid #e2e2e2;
cursor:pointer}
.turn.right{margin-left:auto;background:#f4f8ff}.turn.wrong{border-color:#d33;background:#fff3f2}
.turn.selected{outline:3px solid #2f6fd6}.turn.linked{box-shadow:0 0 0 3px #f2c14e}
.who{font-size:12px;color:#555;display:flex;gap:8px}.mark{font-weight:600}.inertia .mark{color:#2a7}
.shift .mark{color:#c60}
.body{display:flex;gap:10px;align-items:flex-end}.text{flex:1}
.chips{display:flex;gap:4px;align-items:flex-end;font-size:11px;margin-top:2px}.lab{color:#777}
.chip{color:#fff;border-radius:8px;padding:0 6px}.bars{display:inline-flex;gap:1px;align-items:flex-end;height:26px;
margin-left:8px}.bars i{width:7px;display:inline-block}
.badge{font-size:11px;background:#f2c14e;border-radius:6px;padding:0 4px}
</style></head><body>
<header><h1 id="title"></h1><div id="flags"></div></header><div id="errors"></div>
<section id="summary"></section>
<main><nav><input id="search" type="search" placeholder="search text or speaker">
<select id="sort"><option value="worst">worst first</option><option value="order">file order</option>
<option value="size">longest first</option></select><div id="count"></div><ol id="dialogues"></ol></nav>
<section id="pane"><div id="filters"><label><input type="checkbox" id="mistakes"> mistakes only</label>
<label>true <select id="true"></select></label><label>predicted <select id="pred"></select></label>
<label><input type="checkbox" id="shifts"> shifts only</label></div>
<div id="dhead"></div><div id="links"></div><ol id="chat"></ol></section></main>
<script id="data" type="application/json">__DATA__</script>
<script>
'use strict';
var ERR = document.getElementById('errors');
window.onerror = function (msg, src, line) { ERR.textContent += 'script error: ' + msg + ' (line ' + line + ')\n'; };
var D = JSON.parse(document.getElementById('data').textContent), L = D.labels, C = L.length;
var DEFAULT = {dialogue: '', filter: '', true: '', pred: '', shifts: '', turn: '', q: '', sort: 'worst'}, S = {};
var clicked = false, MARK = {f: '', i: '= inertia', s: '\u21af shift'}, KIND = {f: 'first', i: 'inertia', s: 'shift'};
function $(id) { return document.getElementById(id); }
function el(tag, cls, text) {
  var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e;
}
function colour(i) { return 'hsl(' + Math.round(i * 330 / C) + ',62%,' + (i % 2 ? 40 : 50) + '%)'; }
function chip(i, kind) { var c = el('span', 'chip ' + kind, L[i]); c.style.background = colour(i); return c; }
function num(x) { return x == null ? '\u2013' : x.toFixed(2); }
D.d.forEach(function (d, j) {
  d.j = j; d.n = d.p.length; d.ok = 0; d.first = d.s[0];
  if (d.y) for (var i = 0; i < d.n; i++) d.ok += d.y[i] === d.p[i] ? 1 : 0;
  d.acc = d.y ? 100 * d.ok / d.n : null;
  d.hay = (d.k + '\n' + d.s.map(function (s) { return D.speakers[s]; }).join('\n') + '\n' +
           (d.t || []).join('\n')).toLowerCase();
});
function readHash() {
  var h = new URLSearchParams(location.hash.slice(1));
  Object.keys(DEFAULT).forEach(function (k) { S[k] = h.has(k) ? h.get(k) : DEFAULT[k]; });
}
function writeHash() {
  var h = new URLSearchParams();
  Object.keys(DEFAULT).forEach(function (k) { if (S[k] !== DEFAULT[k]) h.set(k, S[k]); });
  history.replaceState(null, '', '#' + h.toString());
}
function filtering() { return S.filter || S.true || S.pred || S.shifts; }
function keep(d, i) {
  if (S.filter === 'mistakes' && !(d.y && d.y[i] !== d.p[i])) return false;
  if (S.true && !(d.y && L[d.y[i]] === S.true)) return false;
  if (S.pred && L[d.p[i]] !== S.pred) return false;
  return !(S.shifts && d.m[i] !== 's');
}
var ORDER = {
  worst: function (a, b) { return (a.acc - b.acc) || (b.n - a.n) || (a.j - b.j); },
  size: function (a, b) { return (b.n - a.n) || (a.j - b.j); }, order: function (a, b) { return a.j - b.j; }
};
function shownDialogues() {
  var q = S.q.toLowerCase();
  return D.d.filter(function (d) {
    d.hits = 0; for (var i = 0; i < d.n; i++) d.hits += keep(d, i) ? 1 : 0;
    return d.hits > 0 && d.hay.indexOf(q) >= 0;
  }).sort(ORDER[S.sort] || ORDER.worst);
}
function renderList(shown) {
  var ol = $('dialogues'), frag = document.createDocumentFragment();
  shown.forEach(function (d) {
    var li = el('li', 'dlg' + (d.k === S.dialogue ? ' sel' : ''));
    li.dataset.key = d.k;
    li.append(el('span', 'key', d.k), el('span', 'size', (filtering() ? d.hits + '/' : '') + d.n),
              el('span', 'acc', d.acc == null ? '' : d.acc.toFixed(0) + '%'));
    li.onclick = function () { S.dialogue = d.k; S.turn = ''; update(); };
    frag.append(li);
  });
  ol.textContent = ''; ol.append(frag);
  $('count').textContent = shown.length + ' of ' + D.d.length + ' dialogues (key, turns, accuracy)';
}
function bars(d, i) {
  var b = el('span', 'bars');
  for (var c = 0; c < C; c++) {
    var v = d.q[i * C + c], bar = el('i');
    bar.style.height = Math.max(1, v * 0.26) + 'px'; bar.style.background = colour(c); bar.title = L[c] + ' ' + v + '%';
    b.append(bar);
  }
  return b;
}
function edges(code, n, dst, src) { return +code[dst * n + src]; }
function linkText(d, t, code) {
  var into = [], out = [];
  for (var i = 0; i < d.n; i++) {
    var a = edges(code, d.n, t, i), b = edges(code, d.n, i, t);
    if (a) into.push('#' + i + (a > 1 ? '\u00d7' + a : ''));
    if (b) out.push('#' + i + (b > 1 ? '\u00d7' + b : ''));
  }
  return 'receives from ' + (into.join(' ') || 'none') + '; sends to ' + (out.join(' ') || 'none');
}
function renderLinks(d, t) {
  var box = $('links'); box.textContent = '';
  if (t < 0 || t >= d.n) return;
  var f = D.flags;
  box.append(el('div', 'ei', 'EIGNN of turn #' + t + ' (same speaker, window_spk=' + f.window_spk + ', window_spk_f=' +
                f.window_spk_f + '): ' + linkText(d, t, d.ei)),
             el('div', 'ec', 'ECGNN of turn #' + t + ' (anyone, window_dir=' + f.window_dir + ', window_dir_f=' +
                f.window_dir_f + '): ' + linkText(d, t, d.ec)));
}
function badge(d, t, i, code, name) {
  var a = edges(code, d.n, t, i), b = edges(code, d.n, i, t);
  if (!a && !b) return null;
  var e = el('span', 'badge', name + (a ? '\u2192' : '') + (b ? '\u2190' : ''));
  e.title = (name === 'EI' ? 'EIGNN' : 'ECGNN') + ': ' + [a ? 'sends to the selected turn' : '',
    b ? 'receives from the selected turn' : ''].filter(Boolean).join(', ');
  return e;
}
function renderChat(d) {
  var chat = $('chat'), frag = document.createDocumentFragment(), t = S.turn === '' ? -1 : +S.turn;
  chat.textContent = '';
  if (!d) { $('dhead').textContent = 'no dialogue matches'; $('links').textContent = ''; return; }
  $('dhead').textContent = 'dialogue ' + d.k + ': ' + d.n + ' turns' +
    (d.acc == null ? '' : ', accuracy ' + d.acc.toFixed(1) + '%') + (filtering() ? ', ' + d.hits + ' shown' : '');
  for (var i = 0; i < d.n; i++) {
    if (!keep(d, i)) continue;
    var li = el('li', 'turn ' + KIND[d.m[i]] + (d.s[i] === d.first ? '' : ' right'));
    if (d.y && d.y[i] !== d.p[i]) li.classList.add('wrong');
    if (i === t) li.classList.add('selected');
    li.dataset.i = i; li.dataset.pred = L[d.p[i]]; if (d.y) li.dataset.true = L[d.y[i]];
    var who = el('div', 'who');
    who.append(el('b', 'speaker', D.speakers[d.s[i]]), el('span', 'idx', '#' + i), el('span', 'mark', MARK[d.m[i]]));
    if (t >= 0 && i !== t) {
      [badge(d, t, i, d.ei, 'EI'), badge(d, t, i, d.ec, 'EC')].forEach(function (b) {
        if (b) { who.append(b); li.classList.add('linked'); }
      });
    }
    var chips = el('div', 'chips');
    if (d.y) chips.append(el('span', 'lab', 'true'), chip(d.y[i], 'true'));
    chips.append(el('span', 'lab', 'predicted'), chip(d.p[i], 'pred'), bars(d, i));
    var body = el('div', 'body');
    body.append(el('div', 'text', d.t ? d.t[i] : 'utterance ' + i), chips);
    li.append(who, body);
    li.onclick = (function (i) { return function () { S.turn = String(i); clicked = true; update(); }; })(i);
    frag.append(li);
  }
  chat.append(frag); renderLinks(d, t);
  var selected = chat.querySelector('.selected');
  if (selected) selected.scrollIntoView({block: clicked ? 'nearest' : 'center'});
  clicked = false;
}
function renderSummary() {
  $('title').textContent = D.title;
  var f = D.flags;
  $('flags').textContent = 'EIGNN window_spk=' + f.window_spk + ' window_spk_f=' + f.window_spk_f +
    '; ECGNN window_dir=' + f.window_dir + ' window_dir_f=' + f.window_dir_f +
    (f.single_edge ? '; single_edge=' + f.single_edge : '');
  var box = $('summary'), s = D.summary, n = 0;
  D.d.forEach(function (d) { n += d.n; });
  var head = el('div'); head.append(el('div', null, n + ' utterances, ' + D.d.length + ' dialogues'));
  box.append(head);
  if (!s) { head.append(el('div', null, 'no labels: no scores; marks follow the predictions')); return; }
  head.append(el('div', 'score', 'accuracy ' + num(s.acc)), el('div', 'score', 'weighted F1 ' + num(s.f1)));
  var cm = el('table', 'confusion'), tr = el('tr');
  tr.append(el('th', null, 'true \\ pred'));
  L.forEach(function (name) { tr.append(el('th', null, name)); });
  cm.append(tr);
  s.confusion.forEach(function (row, r) {
    var total = row.reduce(function (a, b) { return a + b; }, 0), line = el('tr');
    line.append(el('th', null, L[r]));
    row.forEach(function (v, c) {
      var td = el('td', 'cell' + (r === c ? ' diag' : ''), String(v));
      var share = total ? v / total : 0;
      td.style.background = 'rgba(' + (r === c ? '40,140,80,' : '210,50,50,') + share.toFixed(2) + ')';
      td.title = 'true ' + L[r] + ', predicted ' + L[c] + ': show these turns';
      td.onclick = function () { S.true = L[r]; S.pred = L[c]; S.filter = ''; S.shifts = ''; S.turn = ''; update(); };
      line.append(td);
    });
    cm.append(line);
  });
  var it = el('table', 'inertia'), top = el('tr');
  ['turns', 'n', 'accuracy', 'weighted F1'].forEach(function (h) { top.append(el('th', null, h)); });
  it.append(top);
  s.inertia.forEach(function (r) {
    var line = el('tr');
    line.append(el('th', null, r[0]), el('td', null, String(r[1])), el('td', null, num(r[2])),
                el('td', null, num(r[3])));
    it.append(line);
  });
  var cap = el('div', 'note', 'inertia: the same true label as the speaker\'s previous turn; shift: another one; ' +
            'first: the speaker\'s first turn');
  var right = el('div'); right.append(it, cap);
  box.append(cm, right);
}
function syncControls() {
  $('search').value = S.q; $('sort').value = S.sort; $('mistakes').checked = S.filter === 'mistakes';
  $('true').value = S.true; $('pred').value = S.pred; $('shifts').checked = !!S.shifts;
}
function update() {
  var shown = shownDialogues(), d = null;
  D.d.forEach(function (x) { if (x.k === S.dialogue && x.hits > 0) d = x; });
  if (!d && shown.length) { if (S.dialogue) S.turn = ''; d = shown[0]; S.dialogue = d.k; }
  writeHash(); renderList(shown); renderChat(d); syncControls();
}
function setup() {
  ['true', 'pred'].forEach(function (id) {
    var sel = $(id); sel.append(el('option', null, 'any')); sel.options[0].value = '';
    L.forEach(function (name) { sel.append(el('option', null, name)); });
    sel.onchange = function () { S[id] = sel.value; S.turn = ''; update(); };
  });
  if (!D.summary) { $('mistakes').disabled = true; $('true').disabled = true; }
  $('mistakes').onchange = function () { S.filter = this.checked ? 'mistakes' : ''; S.turn = ''; update(); };
  $('shifts').onchange = function () { S.shifts = this.checked ? '1' : ''; S.turn = ''; update(); };
  $('sort').onchange = function () { S.sort = this.value; update(); };
  $('search').oninput = function () { S.q = this.value; update(); };
  window.addEventListener('hashchange', function () { readHash(); update(); });
  renderSummary(); readHash(); update();
  document.body.dataset.ready = '1';
}
setup();
</script></body></html>
"""
