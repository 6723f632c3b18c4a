"""serve.py: the app in-process (FastAPI's test client) against predict.py's numbers, batch invariance, sessions,
every bad request; then (slow) one real uvicorn process on a free local port: smoke, a bounded load test, the
live page in headless Chromium; and two Ray Serve replicas.

Two tiny runs are trained here on a tiny random BERT's features: the full model and a --causal one.
"""
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
import transformers
from fastapi.testclient import TestClient

import extract_features
import serve
import train
from helpers import REPO, WORDS, assert_png, conversation_rows, needs_chromium, write_csv
from owndata import prediction, text_encoder
from serving import api, checks, service
from utils import run_cli

os.environ.setdefault('TQDM_DISABLE', '1')


def train_run(root, name, *flags):
    run_cli(train.main, ['--Dataset', 'custom', '--data-dir', str(root / 'feats'), '--epochs', '1', '--valid', 'dev',
                         '--out-dir', str(root / name), '--quiet', '--seed', '3', *flags])
    return root / name


@pytest.fixture(scope='module')
def runs(tmp_path_factory, encoder_dir):
    """{'full': run folder, 'test': the test CSV, 'root': their folder}: one epoch on tiny dialogues."""
    root = tmp_path_factory.mktemp('serve')
    csvs = [write_csv(root / f'{split}.csv', conversation_rows(n, seed))
            for seed, (split, n) in enumerate({'train': 6, 'dev': 2, 'test': 3}.items())]
    extract_features.main([*map(str, csvs), '--out', str(root / 'feats'), '--text-model', str(encoder_dir),
                           '--device', 'cpu'])
    return {'test': csvs[-1], 'root': root, 'full': train_run(root, 'full')}


@pytest.fixture(scope='module')
def causal_run(runs):
    """A --causal run on the same features."""
    return train_run(runs['root'], 'causal', '--causal')


def app_of(loaded, **limits):
    limits = service.Limits(**limits)
    return api.create_app(lambda: service.Service.in_process(loaded, limits), limits)


def client_of(run_dir, **limits):
    return TestClient(app_of(prediction.load(run_dir, progress=False), **limits))


@pytest.fixture(scope='module')
def client(runs):
    with client_of(runs['full']) as c:
        yield c


def dialogues_of(csv):
    """The CSV's dialogues as request dialogues, and predict.py's table of them."""
    table = prediction.predict(csv.parent / 'full', csv)
    return [[{'speaker': s, 'text': t} for s, t in zip(d['speaker'], d['text'])]
            for _, d in table.groupby('dialogue', sort=False)], table


def probabilities(turns, labels):
    return np.array([[t['probabilities'][name] for name in labels] for t in turns])


# ----------------------------------------------------------------------------- POST /predict

def test_predict_gives_predict_pys_numbers_alone_and_batched(runs, client):
    dialogues, table = dialogues_of(runs['test'])
    labels = client.get('/info').json()['labels']
    expected = table[[f'p_{name}' for name in labels]].to_numpy()
    together = client.post('/predict', json={'dialogues': [{'turns': d} for d in dialogues]})
    assert together.status_code == 200, together.text
    batched = np.concatenate([probabilities(d['turns'], labels) for d in together.json()['dialogues']])
    alone = np.concatenate([probabilities(client.post('/predict', json={'turns': d}).json()['turns'], labels)
                            for d in dialogues])
    np.testing.assert_allclose(batched, expected, atol=1e-5)
    np.testing.assert_allclose(alone, expected, atol=1e-5)
    assert [t['predicted'] for d in together.json()['dialogues'] for t in d['turns']] == list(table['predicted'])
    # the same dialogue next to other, longer neighbours (more padding in the batch): the same numbers
    first, *_ = dialogues
    long = [{'speaker': 'Ann', 'text': ' '.join(WORDS[:k % 7 + 1])} for k in range(40)]
    crowd = client.post('/predict', json={'dialogues': [{'turns': long}, {'turns': first}, {'turns': long[:17]}]})
    np.testing.assert_allclose(probabilities(crowd.json()['dialogues'][1]['turns'], labels),
                               expected[:len(first)], atol=1e-5)


def test_info_health_docs_and_page(runs, client):
    info = client.get('/info').json()
    run = json.loads((runs['full'] / 'config.json').read_text())
    assert info['labels'] == run['features']['label_names'] and info['modalities'] == ['text']
    assert info['causal'] is False and info['model']['window_dir'] == run['model_config']['window_dir']
    assert info['encoder']['sha256'] == run['features']['recipe']['modalities']['text']['encoder_sha256']
    assert info['limits']['turns'] == service.Limits().turns
    assert client.get('/health').json()['status'] == 'ok'
    assert '/predict' in client.get('/openapi.json').json()['paths'] and client.get('/docs').status_code == 200
    page = client.get('/')
    assert page.status_code == 200 and '<script>' in page.text and 'http' not in page.text.split('<script>')[1]


# ----------------------------------------------------------------------------- bad requests

TURN = {'speaker': 'Ann', 'text': 'hi'}
LIMITS = service.Limits()
BAD = {  # name -> (method, path, body (bytes: raw), status, words of the error)
    'malformed JSON': ('post', '/predict', b'{"turns": [', 422, 'JSON'),
    'not an object': ('post', '/predict', [TURN], 422, 'body'),
    'neither turns nor dialogues': ('post', '/predict', {}, 422, 'either turns'),
    'both': ('post', '/predict', {'turns': [TURN], 'dialogues': [{'turns': [TURN]}]}, 422, 'not both'),
    'missing text': ('post', '/predict', {'turns': [{'speaker': 'Ann'}]}, 422, 'turns.0.text: Field required'),
    'empty text': ('post', '/predict', {'turns': [TURN, {'speaker': 'Bob', 'text': ''}]}, 422,
                   'turns.1.text: is empty'),
    'blank text': ('post', '/predict', {'turns': [{'speaker': 'Bob', 'text': ' \t'}]}, 422, 'only white space'),
    'zero-width text': ('post', '/predict', {'turns': [{'speaker': 'Bob', 'text': '\u200b'}]}, 422,
                        'turns.0.text: is empty'),
    'blank speaker in a dialogue': ('post', '/predict', {'dialogues': [{'turns': [TURN]}, {'turns': [
        TURN, {'speaker': '\ufeff ', 'text': 'hi'}]}]}, 422, 'dialogues.1.turns.1.speaker: is empty'),
    'text not a string': ('post', '/predict', {'turns': [{'speaker': 'Bob', 'text': 3}]}, 422, 'turns.0.text'),
    'unknown field': ('post', '/predict', {'turns': [dict(TURN, mood='x')]}, 422, 'turns.0.mood'),
    'no turns': ('post', '/predict', {'turns': []}, 422, 'turns'),
    'text over the limit': ('post', '/predict', {'turns': [dict(TURN, text='a' * (LIMITS.text_chars + 1))]}, 422,
                            f'turns.0.text: has {LIMITS.text_chars + 1} characters, at most {LIMITS.text_chars}'),
    'conversation over the limit': ('post', '/predict', {'turns': [TURN] * (LIMITS.turns + 1)}, 422,
                                    f'turns: a conversation has 1 to {LIMITS.turns} turns'),
    'too many dialogues': ('post', '/predict', {'dialogues': [{'turns': [TURN]}] * (LIMITS.dialogues + 1)}, 422,
                           f'dialogues: a request holds 1 to {LIMITS.dialogues} dialogues'),
    'body over the limit': ('post', '/predict', b'{"turns": [' + b' ' * LIMITS.body_bytes + b']}', 413,
                            f'over {LIMITS.body_bytes} bytes'),
    'unknown session': ('get', '/sessions/nope', None, 404, "no session 'nope'"),
    'append to an unknown session': ('post', '/sessions/nope/turns', TURN, 404, "no session 'nope'"),
    'append a turn without speaker': ('post', '/sessions/{id}/turns', {'text': 'hi'}, 422, 'speaker: Field required'),
    'wrong method': ('get', '/predict', None, 405, 'Method Not Allowed'),
    'unknown path': ('get', '/nowhere', None, 404, 'Not Found: see GET /docs'),
    'a form, not JSON': ('post', '/predict', b'turns=hi', 422, 'JSON'),
    'an empty turn in a session': ('post', '/sessions/{id}/turns', {'speaker': 'Ann', 'text': '\u200b'}, 422,
                                   'text: is empty'),
    'a recording for a text-only run': ('post', '/predict', {'turns': [TURN, dict(TURN, audio='AAAA')]}, 422,
                                        'turns.1.audio: is not read by this run, whose model reads text only'),
}


@pytest.mark.parametrize('name', list(BAD))
def test_a_bad_request_is_a_4xx_naming_the_field_and_the_server_goes_on(client, name):
    method, path, body, status, words = BAD[name]
    path = path.replace('{id}', client.post('/sessions').json()['id'])
    kwargs = ({'content': body, 'headers': {'content-type': 'application/json'}} if isinstance(body, bytes) else
              {} if body is None else {'json': body})
    answer = client.request(method.upper(), path, **kwargs)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {'error'}, answer.text                 # the one shape of every error
    message = answer.json()['error']
    assert words in message and 'Traceback' not in answer.text and 'line' not in message, message
    assert client.post('/predict', json={'turns': [TURN]}).status_code == 200


def test_a_request_is_not_held_to_a_csvs_rules(client):
    """A speaker that a CSV would read as a Python list is a name like any other in a request."""
    answer = client.post('/predict', json={'turns': [{'speaker': '[Ann]', 'text': 'hi'}]})
    assert answer.status_code == 200 and answer.json()['turns'][0]['speaker'] == '[Ann]', answer.text


def test_a_failing_job_fails_alone_and_its_batch_mates_are_answered():
    """run_jobs: a batch that fails is run again job by job, so only the job that caused it gets the error."""
    batches = []

    async def runner(dialogues):
        batches.append(len(dialogues))
        if any(turn.text == 'boom' for d in dialogues for turn in d):
            raise ValueError('boom')
        return [(['joy'] * len(d), np.ones((len(d), 1))) for d in dialogues]

    async def scenario():
        svc = service.Service(None, service.Limits(batch_wait_ms=200), runner)
        good, bad = [checks.Turn('Ann', 'hi')], [checks.Turn('Bob', 'boom')]
        results = await asyncio.gather(svc.predict([good]), svc.predict([bad]), return_exceptions=True)
        await svc.stop()
        return results

    first, second = asyncio.run(scenario())
    assert first[0][0] == ['joy'] and isinstance(second, ValueError)
    assert batches == [2, 1, 1]                 # one batch of both, then each alone


# ----------------------------------------------------------------------------- sessions

def session_answers(c, turns):
    sid = c.post('/sessions').json()['id']
    return sid, [c.post(f'/sessions/{sid}/turns', json=t).json()['turns'] for t in turns]


@pytest.mark.slow
def test_a_causal_sessions_earlier_predictions_never_change(runs, causal_run):
    turns = [{'speaker': s, 'text': ' '.join(WORDS[k % 8:k % 8 + 3])} for k, s in enumerate('ABABBAAB')]
    with client_of(causal_run) as c:
        labels = c.get('/info').json()['labels']
        assert c.get('/info').json()['causal'] is True
        sid, answers = session_answers(c, turns)
        last = answers[-1]
        for answer in answers:
            assert all(t['final'] and not t['revised'] for t in answer)
            np.testing.assert_allclose(probabilities(answer, labels), probabilities(last[:len(answer)], labels),
                                       atol=1e-6)
        whole = c.post('/predict', json={'turns': turns}).json()['turns']
        np.testing.assert_allclose(probabilities(whole, labels), probabilities(last, labels), atol=1e-5)
        assert c.get(f'/sessions/{sid}').json()['turns'] == [dict(t, revised=False, previous=None) for t in last]
    with client_of(runs['full']) as c:     # the full model reads later turns: nothing is final, numbers move
        labels = c.get('/info').json()['labels']
        _, answers = session_answers(c, turns)
        assert not any(t['final'] for t in answers[-1])
        assert np.abs(probabilities(answers[1][:1], labels) - probabilities(answers[-1][:1], labels)).max() > 1e-6
        for before, after in zip(answers, answers[1:]):
            for b, a in zip(before, after):
                assert a['revised'] == (a['predicted'] != b['predicted'])
                assert a['previous'] == (b['predicted'] if a['revised'] else None)


def test_a_sessions_append_encodes_only_its_new_turn(runs, monkeypatch):
    """With the features of turns read before kept (the default), each append runs the encoder on the new turn
    alone, a turn sent again in /predict on none, and the answers are those of a server that keeps nothing."""
    turns = [{'speaker': s, 'text': ' '.join(WORDS[k % 8:k % 8 + 3]) + f' {k}'} for k, s in enumerate('ABABBA')]
    answers, encoded, read = {}, {}, text_encoder.pooled_rows
    for kept in (0, LIMITS.cached_turns):
        loaded = prediction.load(runs['full'])
        rows = []                                           # the encoder's inputs, packed or padded
        monkeypatch.setattr(text_encoder, 'pooled_rows', lambda encoder, batch, *args: rows.append(len(batch))
                            or read(encoder, batch, *args))
        with TestClient(app_of(loaded, cached_turns=kept)) as c:
            labels = c.get('/info').json()['labels']
            answers[kept] = probabilities(session_answers(c, turns)[1][-1], labels)
            whole = c.post('/predict', json={'turns': turns}).json()['turns']
            np.testing.assert_allclose(probabilities(whole, labels), answers[kept], atol=1e-5)
        encoded[kept] = sum(rows)
    assert encoded == {0: sum(range(1, 7)) + 6, LIMITS.cached_turns: 6}
    np.testing.assert_allclose(answers[LIMITS.cached_turns], answers[0], atol=1e-5)


def test_sessions_are_bounded_in_number_turns_and_idle_time(runs):
    with client_of(runs['full'], sessions=2, turns=2, session_idle_s=0.5) as c:
        first = c.post('/sessions').json()['id']
        c.post('/sessions')
        refused = c.post('/sessions')
        assert refused.status_code == 429 and 'sessions' in refused.json()['error']
        assert c.delete(f'/sessions/{first}').status_code == 204
        sid = c.post('/sessions').json()['id']
        for _ in range(2):
            assert c.post(f'/sessions/{sid}/turns', json=TURN).status_code == 200
        full = c.post(f'/sessions/{sid}/turns', json=TURN)
        assert full.status_code == 409 and '2 turns, the limit' in full.json()['error']
        time.sleep(0.6)
        gone = c.get(f'/sessions/{sid}')
        assert gone.status_code == 404 and 'idle longer than 0.5 s' in gone.json()['error']
        assert c.post('/sessions').status_code == 201      # expired sessions free their places


# ----------------------------------------------------------------------------- refusing to start

def test_a_run_that_is_not_custom_or_has_another_encoder_exits_2(runs, tmp_path, capsys, encoder_dir):
    paper = tmp_path / 'paper'
    shutil.copytree(runs['full'], paper)
    run = json.loads((paper / 'config.json').read_text())
    run['flags']['Dataset'] = 'IEMOCAP'
    (paper / 'config.json').write_text(json.dumps(run))
    other = tmp_path / 'other-encoder'                  # the same tiny BERT with one weight changed
    shutil.copytree(encoder_dir, other)
    bert = transformers.BertModel.from_pretrained(other)
    with torch.no_grad():
        bert.pooler.dense.bias[0] += 1
    bert.save_pretrained(other)
    for argv, words in (([paper], 'needs a run of train.py --Dataset custom'),
                        ([runs['full'], '--text-model', other], 'is not the one the run'),
                        ([tmp_path], 'is not a training run folder')):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(serve.main, list(map(str, argv)))
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and words in err and 'Traceback' not in err, err


# ----------------------------------------------------------------------------- a real server (slow)

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_server(run_dir, *flags, timeout=120):
    """serve.py RUN_DIR on a free 127.0.0.1 port, answering /health: (process, base URL)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / 'serve.py'), str(run_dir), '--port', str(port), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1'), start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f'{url}/health', timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    stop(proc)
    raise AssertionError(f'serve.py did not answer within {timeout} s')


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope='module')
def server(runs):
    proc, url = start_server(runs['full'])
    yield url
    stop(proc)


@pytest.mark.slow
def test_a_real_server_answers_as_predict_py_and_survives_a_bounded_load(runs, server, tmp_path):
    dialogues, table = dialogues_of(runs['test'])
    answer = httpx.post(f'{server}/predict', json={'dialogues': [{'turns': d} for d in dialogues]}, timeout=30)
    labels = httpx.get(f'{server}/info').json()['labels']
    got = np.concatenate([probabilities(d['turns'], labels) for d in answer.json()['dialogues']])
    np.testing.assert_allclose(got, table[[f'p_{n}' for n in labels]].to_numpy(), atol=1e-5)
    report = tmp_path / 'load.json'
    proc = subprocess.run([sys.executable, str(REPO / 'loadtest.py'), server, str(runs['test']), '--clients', '4',
                           '--turns', '3', '--seconds', '3', '--json', str(report)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    load = json.loads(report.read_text())
    assert load['requests'] > 0 and load['failed'] == 0 and load['turns_per_s'] > 0, load
    assert load['server_cached_turns'] == httpx.get(f'{server}/info').json()['limits']['cached_turns'] > 0
    assert httpx.post(f'{server}/predict', content=b'{', timeout=10).status_code == 422
    assert httpx.get(f'{server}/health').json()['status'] == 'ok'


@pytest.mark.slow
@needs_chromium
def test_the_live_page_shows_a_conversation_turn_by_turn(server, browser, tmp_path):
    browser.open_url(f'{server}/')
    browser.js("new Promise(done => { const t = setInterval(() => { if (document.body.dataset.ready) "
               "{ clearInterval(t); done(); } }, 50); })")
    lines = [('Ann', 'hi you ok'), ('Bob', 'hello fine'), ('Ann', 'yo the'), ('Bob', 'is ok hi')]
    for k, (speaker, text) in enumerate(lines, 1):
        assert browser.js(f"say({json.dumps(speaker)}, {json.dumps(text)})") == k
    turns = browser.js("[...document.querySelectorAll('#chat .turn')].map(t => [t.querySelector('.speaker')"
                       ".textContent, t.querySelector('.text').textContent, t.dataset.pred, "
                       "t.querySelectorAll('.bars .bar').length, t.querySelector('.state').textContent])")
    labels = httpx.get(f'{server}/info').json()['labels']
    assert [t[:2] for t in turns] == [list(x) for x in lines]
    assert all(t[2] in labels and t[3] == len(labels) for t in turns)
    assert all(t[4] == 'may still change' or t[4].startswith('revised (was ') for t in turns)
    # the form too: type a line and submit it as a user does
    browser.js("document.querySelector('#say [name=text]').value = 'ok fine'; "
               "document.querySelector('#say button[type=submit]').click()")
    browser.js("new Promise(done => { const t = setInterval(() => { if (document.querySelectorAll('#chat .turn')"
               ".length === 5) { clearInterval(t); done(); } }, 50); })")
    assert browser.script_errors() == []
    shot = tmp_path / 'serving.png'
    browser.screenshot(shot)
    assert_png(shot)
    if os.environ.get('MOED_SERVING_PNG'):        # docs/serving.png is made this way
        shutil.copy(shot, os.environ['MOED_SERVING_PNG'])


@pytest.mark.slow
def test_two_ray_serve_replicas_answer_as_one_process(runs, causal_run):
    dialogues, _ = dialogues_of(runs['test'])
    proc, url = start_server(causal_run, '--replicas', '2', timeout=240)
    try:
        labels = httpx.get(f'{url}/info').json()['labels']
        answers = [httpx.post(f'{url}/predict', json={'turns': d}, timeout=60) for d in dialogues * 2]
        assert all(a.status_code == 200 for a in answers)
        expected = prediction.predict(causal_run, runs['test'])[[f'p_{n}' for n in labels]].to_numpy()
        got = np.concatenate([probabilities(a.json()['turns'], labels) for a in answers[:len(dialogues)]])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        sid = httpx.post(f'{url}/sessions').json()['id']
        for k in range(4):
            turns = httpx.post(f'{url}/sessions/{sid}/turns', json=TURN, timeout=60).json()['turns']
            assert len(turns) == k + 1 and all(t['final'] for t in turns)
        assert httpx.get(f'{url}/health').json()['replicas'] == 2
    finally:
        stop(proc)
