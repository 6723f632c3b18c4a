"""The conversation viewer (reports/viewer.py): its graph connections, its data, and the page in headless Chromium.

The browser is driven over Chromium's DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
ending in NUL on file descriptors 3 and 4), so no driver package is needed. A page's script error fails
the test twice over: the page writes it into #errors (window.onerror), and Chromium reports it as
Runtime.exceptionThrown.
"""
import os

import numpy as np
import pandas as pd
import pytest

import dataloader
import predict
import utils
from core import config, synthetic
from helpers import LABELS, assert_png, in_process, needs_chromium, ok, run_script
from reports import viewer

MELD_FLAGS = {name: config.PAPER['MELD'][name] for name in viewer.GRAPH_FLAGS}


def edges(code, n):
    """A graph_connections string as {(src, dst): count}."""
    return {(src, dst): int(code[dst * n + src]) for dst in range(n) for src in range(n) if code[dst * n + src] != '0'}


# ----------------------------------------------------------------------------- graph connections and data

def test_graph_connections_follow_the_papers_window_rules():
    """The ECGNN and EIGNN window rules worked by hand for speakers 0 1 0 0 1 0: speaker 0 speaks at 0, 2, 3, 5,
    speaker 1 at 1, 4."""
    speakers = [0, 1, 0, 0, 1, 0]
    flags = dict(window_spk=1, window_spk_f=1, window_dir=1, window_dir_f=2, single_edge='')
    links = viewer.graph_connections(speakers, flags)
    # EIGNN: the speaker's j-th turn (j >= 1) sends to its turns j-1 and j+1; a speaker's first turn sends nothing
    assert edges(links['ei'], 6) == {(2, 0): 1, (2, 3): 1, (3, 2): 1, (3, 5): 1, (5, 3): 1, (4, 1): 1}
    # ECGNN, s < t at distance k: t->s [k<=1] + [k<=2], s->t [k<=1] + [k<=2]
    expected = {}
    for s in range(6):
        for t in range(s + 1, min(s + 3, 6)):
            expected[(t, s)] = expected[(s, t)] = 2 if t - s == 1 else 1
    assert edges(links['ec'], 6) == expected
    # single_edge inter: t->s [k<=window_dir] only, s->t [k<=window_dir_f] only
    inter = viewer.graph_connections(speakers, dict(flags, single_edge='inter'))
    assert edges(inter['ec'], 6) == {**{(s + 1, s): 1 for s in range(5)}, **{(s, t): 1 for s in range(6)
                                                                             for t in range(s + 1, min(s + 3, 6))}}
    unbounded = viewer.graph_connections(speakers, dict(flags, window_spk=-1, window_spk_f=0, window_dir=0,
                                                        window_dir_f=0))
    assert edges(unbounded['ei'], 6) == {(2, 0): 1, (3, 0): 1, (3, 2): 1, (5, 0): 1, (5, 2): 1, (5, 3): 1, (4, 1): 1}
    assert unbounded['ec'] == '0' * 36


def small_table():
    """predict.py's columns for two dialogues; a text that would end the page's script if not escaped."""
    return pd.DataFrame(dict(
        dialogue=['a', 'a', 'a', 'b', 'b'], turn=[0, 1, 2, 0, 1], speaker=['Ann', 'Bob', 'Ann', 'Cy', 'Cy'],
        text=['hi', '</script><script>bad()</script>', 'fine', 'ok', 'yo'],
        label=['joy', 'anger', 'joy', 'joy', 'anger'], predicted=['joy', 'joy', 'anger', 'joy', 'anger'],
        p_joy=[0.9, 0.6, 0.3, 0.8, 0.1], p_anger=[0.1, 0.4, 0.7, 0.2, 0.9]))


def test_page_data_has_scores_marks_and_the_escaped_texts(tmp_path):
    table = small_table()
    data = viewer.page_data(table, ['joy', 'anger'], MELD_FLAGS, 'small')
    summary = data['summary']
    assert summary['acc'] == pytest.approx(60.0) and summary['confusion'] == [[2, 1], [1, 1]]
    assert summary['f1'] == pytest.approx(utils.weighted_f1(table['label'], table['predicted']))
    # Ann: joy, joy -> first, inertia; Bob first; Cy: joy, anger -> first, shift
    assert [d['m'] for d in data['d']] == ['ffi', 'fs']
    assert [row[:2] for row in summary['inertia']] == [['first', 3], ['inertia', 1], ['shift', 1]]
    assert data['d'][0]['q'] == [90, 10, 60, 40, 30, 70] and data['d'][1]['y'] == [0, 1]
    page = viewer.page(data)
    assert '</script><script>bad()' not in page and page.count('</script>') == 2
    path = tmp_path / 'page.html'
    viewer.write_viewer(path, table.drop(columns=['label', 'text']), ['joy', 'anger'], MELD_FLAGS, 'no labels')
    blob = path.read_text()
    assert '"summary":null' in blob and '"y":' not in blob and '"t":' not in blob
    with pytest.raises(utils.UserError, match='p_anger'):
        viewer.page_data(table.drop(columns=['p_anger']), ['joy', 'anger'], MELD_FLAGS, 'broken')
    with pytest.raises(utils.UserError, match="row 2 has the predicted 'Joy'"):
        viewer.page_data(table.assign(predicted=['joy', 'Joy', 'joy', 'joy', 'joy']), ['joy', 'anger'], MELD_FLAGS, '')


def test_predict_html_is_checked_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for html, words in ((tmp_path, 'is a folder'), ('talks.csv', 'is also talks.csv'),
                        ('out.csv', 'is also out.csv')):
        with pytest.raises(SystemExit) as exit_info:
            utils.run_cli(predict.main, ['no-run', 'talks.csv', '--out', 'out.csv', '--html', str(html)])
        assert exit_info.value.code == 2 and words in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- the page in Chromium

TURNS = """[...document.querySelectorAll('#chat .turn')].map(t => [+t.dataset.i,
  t.querySelector('.speaker').textContent, t.dataset.true, t.dataset.pred, t.querySelector('.chip.true').textContent,
  t.querySelector('.chip.pred').textContent, t.classList.contains('wrong')])"""
LISTED = "[...document.querySelectorAll('#dialogues .dlg')].map(li => li.dataset.key)"


@pytest.mark.slow
@needs_chromium
def test_testing_writes_a_viewer_that_shows_the_csv(data_dir, tmp_path, browser):
    flags = ['--paper', '--Dataset', 'MELD', '--synthetic', '--synthetic-scale', 0.05, '--data-dir', data_dir,
             '--batch-size', 8]
    ok(run_script('train.py', *flags, '--epochs', 1, '--out-dir', tmp_path / 'run', cwd=tmp_path))
    assert not (tmp_path / 'run' / 'tensorboard').exists(), "no TensorBoard logs without --tensorboard"
    ok(run_script('train.py', *flags, '--testing', '--checkpoint', tmp_path / 'run' / 'best_model_MELD.pth',
                  '--out-dir', tmp_path / 'exports', cwd=tmp_path))
    outputs = tmp_path / 'exports' / 'saved_outputs'
    csv = pd.read_csv(outputs / 'utterances_MELD.csv')
    csv['key'] = csv['dialogue_key'].astype(str)
    names = dataloader.DATASETS['MELD'].label_names
    page = outputs / 'conversations_MELD.html'

    browser.open(page)
    assert browser.js("document.body.dataset.ready") == '1'
    assert sorted(browser.js(LISTED)) == sorted(csv['key'].unique())               # every dialogue listed
    assert browser.js("document.querySelector('#summary .score').textContent") == \
        f"accuracy {utils.accuracy(csv['label'], csv['pred']):.2f}"

    wrong = csv[csv['label'] != csv['pred']]
    browser.goto('#filter=mistakes')
    assert sorted(browser.js(LISTED)) == sorted(wrong['key'].unique())              # only dialogues with mistakes
    for key, rows in wrong.groupby('key'):
        browser.goto(f'#filter=mistakes&dialogue={key}')
        turns = browser.js(TURNS)
        assert [t[0] for t in turns] == list(rows['utterance_idx'])                  # only the mismatched turns
        assert all(t[2] != t[3] and t[6] for t in turns)

    key = csv.groupby('key').size().idxmax()                                        # the longest dialogue, all turns
    rows = csv[csv['key'] == key]
    browser.goto(f'#dialogue={key}')
    assert browser.js(TURNS) == [[i, f'speaker {s}', names[y], names[p], names[y], names[p], bool(y != p)]
                                 for i, s, y, p in rows[['utterance_idx', 'speaker', 'label', 'pred']].itertuples(
                                     index=False)]
    # a selected turn's connections: what graph.py gives for the dialogue's speakers and the run's flags
    turn = 2
    browser.js(f"document.querySelector('#chat .turn[data-i=\"{turn}\"]').click()")
    links = viewer.graph_connections(rows['speaker'].to_numpy(), MELD_FLAGS)
    n = len(rows)
    for name, code in links.items():
        got = browser.js(f"document.querySelector('#links .{name}').textContent")
        into = [f"#{src}" + (f"\u00d7{count}" if count > 1 else '') for (src, dst), count in
                sorted(edges(code, n).items()) if dst == turn]
        assert f"receives from {' '.join(into) or 'none'};" in got, got
    assert browser.js("location.hash") == f'#dialogue={key}&turn={turn}'
    browser.screenshot(tmp_path / 'viewer.png')
    assert_png(tmp_path / 'viewer.png')
    assert browser.script_errors() == []


TEXTS = """[...document.querySelectorAll('#chat .turn')].map(t => [t.querySelector('.speaker').textContent,
  t.querySelector('.text').textContent, t.dataset.pred])"""


@pytest.mark.slow
@needs_chromium
def test_custom_pages_show_the_texts(workspace, tmp_path, browser, monkeypatch, capsys):
    """train.py --testing on custom data (the feature folder's texts) and predict.py --html show each turn's
    speaker and text."""
    test = pd.read_csv(workspace / 'test.csv', dtype=str)
    stdout = in_process(predict.main, ['run', 'test.csv', '--out', tmp_path / 'predictions.csv', '--html',
                                       tmp_path / 'predicted.html'], workspace, monkeypatch, capsys)
    assert 'conversation viewer' in stdout
    predictions = pd.read_csv(tmp_path / 'predictions.csv', dtype=str)
    testing = pd.read_csv(workspace / 'testing' / 'saved_outputs' / 'utterances_custom.csv')
    for page, key in ((tmp_path / 'predicted.html', 'd1'),
                      (workspace / 'testing' / 'saved_outputs' / 'conversations_custom.html', 'test.csv:d1')):
        browser.open(page, f'#dialogue={key}')
        rows = test[test['dialogue'] == 'd1']
        shown = browser.js(TEXTS)
        assert [s[:2] for s in shown] == rows[['speaker', 'text']].values.tolist()
        if 'predicted' in page.name:
            assert [s[2] for s in shown] == list(predictions.loc[predictions['dialogue'] == 'd1', 'predicted'])
        else:
            assert [s[2] for s in shown] == [LABELS[p] for p in testing.loc[testing['dialogue_key'] == key, 'pred']]
        prefix = 'test.csv:' * (key != 'd1')
        assert sorted(browser.js(LISTED)) == sorted(prefix + d for d in test['dialogue'].unique())
        assert browser.script_errors() == []


def meld_sized_page(data_dir, tmp_path, dataset='MELD'):
    """The viewer of a synthetic dataset's whole test split (MELD: 280 dialogues, about 2,700 turns), with
    made-up predictions (right about half the time); the path."""
    fs = dataloader.load_features(dataset, synthetic.ensure_synthetic(dataset, data_dir))
    rng = np.random.default_rng(0)
    rows = [(key, i, s, y) for key in fs.test_keys
            for i, (s, y) in enumerate(zip(fs.dialogues[key].speakers, fs.dialogues[key].labels))]
    utterances = pd.DataFrame(rows, columns=['dialogue_key', 'utterance_idx', 'speaker', 'label'])
    logits = rng.normal(size=(len(utterances), fs.n_classes))
    logits[np.arange(len(utterances)), utterances['label']] += 1.5
    log_prob = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    utterances['pred'] = log_prob.argmax(1)
    path = tmp_path / f'conversations_{dataset}.html'
    flags = {name: config.PAPER[dataset][name] for name in viewer.GRAPH_FLAGS}
    viewer.write_viewer(path, viewer.testing_table(utterances, log_prob, fs, None), fs.label_names, flags, dataset)
    return path, len(fs.test_keys), len(utterances)


# ms from the start of navigation to the first contentful paint
FIRST_PAINT = """new Promise(done => { setTimeout(() => done(null), 10000);
  new PerformanceObserver(list => list.getEntries().forEach(
    e => e.name === 'first-contentful-paint' && done(e.startTime))).observe({type: 'paint', buffered: true}); })"""


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize('dataset', ['MELD', 'IEMOCAP'])
def test_a_full_test_set_page_opens_and_its_size_and_first_paint_are_measured(data_dir, tmp_path, browser,
                                                                              dataset):
    """A test-set-sized page lists every dialogue without a script error; its size and first contentful paint
    are printed (measured, not asserted: timings depend on the machine's load)."""
    path, n_dialogues, n_turns = meld_sized_page(data_dir, tmp_path, dataset)
    size = path.stat().st_size
    load = browser.open(path)
    paint = browser.js(FIRST_PAINT)
    assert paint is not None, "no first contentful paint within 10 s"
    print(f"{dataset}-sized synthetic test set ({n_dialogues} dialogues, {n_turns} turns): page {size / 1e6:.2f} MB, "
          f"first contentful paint {paint:.0f} ms, load event after {load * 1000:.0f} ms")
    assert len(browser.js(LISTED)) == n_dialogues
    browser.screenshot(tmp_path / 'page.png')
    assert_png(tmp_path / 'page.png')
    assert browser.script_errors() == []
