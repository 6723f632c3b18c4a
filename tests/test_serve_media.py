"""serve.py on a run trained on recordings: turns sent with their video (base64) get predict.py's labels, through
POST /predict and through a session fed turn by turn (each append decodes only its new turn); a turn cut by start /
end from one long recording too; bad media are a 422 naming the turn and field, and the next request is answered;
a real server takes a clip as curl would send it. The recordings' emotion is heard (pitch and loudness), not read."""
import base64
import json
import pathlib

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import extract_features
import train
from media_maker import conversations_with_recordings, write_recording
from owndata import media_jobs, prediction
from serving import api, service
from test_serve import start_server, stop
from utils import run_cli

pytestmark = pytest.mark.slow
SPLITS = {'train': (10, 1), 'dev': (2, 2), 'test': (3, 3)}     # split -> (dialogues, seed); 4 turns each


@pytest.fixture(scope='module')
def media_run(tmp_path_factory, encoder_dir):
    root = tmp_path_factory.mktemp('served_media')
    csvs = []
    for split, (n, seed) in SPLITS.items():
        rows = conversations_with_recordings(root / 'media', n, 4, 0.6, seed, split=split)
        pd.DataFrame(rows).to_csv(root / f'{split}.csv', index=False)
        csvs.append(root / f'{split}.csv')
    long_rows = conversations_with_recordings(root / 'long', 3, 4, 0.6, 3, per_dialogue=True, split='test')
    pd.DataFrame(long_rows).to_csv(root / 'long_test.csv', index=False)
    run_cli(extract_features.main, [*map(str, csvs), '--out', str(root / 'feats'), '--text-model', str(encoder_dir)])
    run_cli(train.main, ['--Dataset', 'custom', '--data-dir', str(root / 'feats'), '--valid', 'dev', '--batch-size',
                         '2', '--epochs', '8', '--quiet', '--out-dir', str(root / 'run')])
    return root


def b64(path):
    return base64.b64encode(path.read_bytes()).decode()


def request_dialogues(root, csv):
    """The CSV's dialogues as request turns carrying their recordings, and predict.py's table of them."""
    table = prediction.predict(root / 'run', csv, workers=1)
    rows = pd.read_csv(csv)
    dialogues = []
    for _, d in rows.groupby('dialogue', sort=False):
        turns = []
        for row in d.itertuples():
            turn = {'speaker': row.speaker, 'text': row.text, 'video': b64(root / row.video)}
            if 'start' in rows:
                turn.update(start=row.start, end=row.end)
            turns.append(turn)
        dialogues.append(turns)
    return dialogues, table


def client_of(run_dir, **limits):
    limits = service.Limits(**{'body_bytes': service.MEDIA_BODY_BYTES, **limits})
    loaded = prediction.load(run_dir, workers=1, progress=False)
    return TestClient(api.create_app(lambda: service.Service.in_process(loaded, limits), limits))


def labels_of(turns):
    return [t['predicted'] for t in turns]


@pytest.mark.parametrize('csv', ['test.csv', 'long_test.csv'])
def test_turns_sent_with_their_video_get_predict_pys_labels_whole_and_turn_by_turn(media_run, csv, monkeypatch):
    dialogues, table = request_dialogues(media_run, media_run / csv)
    names = json.loads((media_run / 'run' / 'config.json').read_text())['features']['label_names']
    with client_of(media_run / 'run') as c:
        info = c.get('/info').json()
        assert info['media']['needs'] == 'video' and info['limits']['body_bytes'] == service.MEDIA_BODY_BYTES
        decoded = []                        # a session: each append decodes its own turn's recording only
        real_work = media_jobs.work
        monkeypatch.setattr(media_jobs, 'work', lambda task: decoded.append(task[1]) or real_work(task))
        session = c.post('/sessions').json()['id']
        for k, turn in enumerate(dialogues[0]):
            decoded.clear()
            appended = c.post(f'/sessions/{session}/turns', json=turn)
            assert appended.status_code == 200, appended.text
            assert sorted(decoded) == ['audio', 'visual'], (k, decoded)     # its turn's two features, no others
        assert labels_of(appended.json()['turns']) == list(table['predicted'][:len(dialogues[0])])
        answer = c.post('/predict', json={'dialogues': [{'turns': d} for d in dialogues]})
        assert answer.status_code == 200, answer.text
        served = [t for d in answer.json()['dialogues'] for t in d['turns']]
        assert labels_of(served) == list(table['predicted'])
        np.testing.assert_allclose([[t['probabilities'][n] for n in names] for t in served],
                                   table[[f'p_{n}' for n in names]].to_numpy(), atol=1e-5)
        f1 = prediction.scores(table.assign(predicted=labels_of(served)))['f1']
        assert f1 >= 80, f1                 # the emotion is in the sound: the media reach the model


def test_bad_media_are_a_422_naming_the_turn_and_field_and_the_server_goes_on(media_run, tmp_path):
    write_recording(tmp_path / 'voice.wav', [(1.0, 140, 0.2)], video=False)
    write_recording(tmp_path / 'long.mp4', [(2.0, 140, 0.2)])
    dialogues, table = request_dialogues(media_run, media_run / 'test.csv')
    good = dialogues[0]
    bad = {
        'missing': (dict(good[1], video=None), 'turns.1.video: is missing'),
        'not base64': (dict(good[1], video='not base64!'), 'turns.1.video: is not base64'),
        'not a recording': (dict(good[1], video=base64.b64encode(b'hello ' * 100).decode()),
                            'turns.1.video: is not a recording'),
        'no video stream': (dict(good[1], video=b64(tmp_path / 'voice.wav')), 'turns.1.video: cannot give'),
        'too long': (dict(good[1], video=b64(tmp_path / 'long.mp4')), 'recording_seconds'),
        'outside': (dict(good[1], start=5.0, end=6.0), 'lies outside the recording'),
    }
    with client_of(media_run / 'run', recording_seconds=1.5) as c:
        assert c.get('/health').status_code == 200
        turns_dir = pathlib.Path(c.app.state.service.folder) / 'turns'
        for name, (turn, words) in bad.items():
            answer = c.post('/predict', json={'turns': [good[0], turn]})
            assert answer.status_code == 422 and words in answer.json()['error'], (name, answer.text)
            session = c.post('/sessions').json()['id']
            appended = c.post(f'/sessions/{session}/turns', json=turn)
            assert appended.status_code == 422 and words.split(': ', 1)[-1] in appended.json()['error'], name
        answer = c.post('/predict', json={'turns': good})
        assert answer.status_code == 200 and labels_of(answer.json()['turns']) == list(table['predicted'][:4])
        assert not list(turns_dir.iterdir())       # no request left a recording behind (sessions hold none)


def test_a_real_server_takes_a_clip_as_curl_sends_it(media_run):
    dialogues, table = request_dialogues(media_run, media_run / 'test.csv')
    proc, url = start_server(media_run / 'run')
    try:
        answer = httpx.post(f'{url}/predict', json={'turns': dialogues[1]}, timeout=120)
        assert answer.status_code == 200, answer.text
        first = len(dialogues[0])
        assert labels_of(answer.json()['turns']) == list(table['predicted'][first:first + len(dialogues[1])])
        assert httpx.get(f'{url}/info').json()['media']['needs'] == 'video'
    finally:
        stop(proc)
