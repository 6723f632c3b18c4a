"""The live page of a run trained on recordings takes your voice (and face): headless Chromium with a fake
microphone fed a wav of espeak-ng's speech (and a fake camera fed a y4m of a real face) records each turn with
MediaRecorder between Record and Stop (or Send), and sends it with the typed speaker and text through the page's
session; the label the page shows for each turn is the one POST /predict gives for the same turns with the same
recorded bytes (read back from the page's window.lastTurnSent), and those bytes are a recording whose sound is
the speech (PyAV decodes them), with frames for a run that reads faces.

Small runs are trained here (about a minute on 2 cores): tones whose pitch and loudness carry the emotion, as
wav files in the CSVs' audio column (media_maker.py), their openSMILE features and a tiny random BERT's, MoED on
text and audio; and mp4 clips of a face with such tones, MoED on text, audio and faces.
MOED_SERVING_MIC_PNG=docs/serving-mic.png keeps the page's screenshot.
"""
import base64
import io
import json
import os
import re
import shutil

import av
import httpx
import numpy as np
import pandas as pd
import pytest
import soundfile

import extract_features
import helpers
import media_maker
import train
from helpers import assert_png, needs_chromium
from media_maker import ESPEAK, RATE, conversations_with_recordings, speak
from test_serve import start_server, stop
from utils import run_cli

pytestmark = [pytest.mark.slow, needs_chromium]
SPLITS = {'train': (8, 1), 'dev': (2, 2), 'test': (2, 3)}     # split -> (dialogues, seed); 4 turns each
LINES = [('Ann', 'I got the job'), ('Bob', 'no way, really?'), ('Ann', 'they called this morning')]
MIC_FLAGS = ('--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream')


@pytest.fixture(scope='module')
def audio_run(tmp_path_factory, encoder_dir):
    """A run of MoED on text and audio features (--modals al) of wav clips, 3 epochs."""
    root = tmp_path_factory.mktemp('mic')
    csvs = []
    for split, (n, seed) in SPLITS.items():
        rows = conversations_with_recordings(root / 'media', n, 4, 0.6, seed, split=split, fmt='wav')
        csvs.append(root / f'{split}.csv')
        pd.DataFrame(rows).rename(columns={'video': 'audio'}).to_csv(csvs[-1], index=False)
    extract_features.main([*map(str, csvs), '--out', str(root / 'feats'), '--text-model', str(encoder_dir),
                           '--device', 'cpu'])
    run_cli(train.main, ['--Dataset', 'custom', '--data-dir', str(root / 'feats'), '--modals', 'al', '--epochs', '3',
                         '--valid', 'dev', '--out-dir', str(root / 'run'), '--quiet', '--seed', '3'])
    return root / 'run'


@pytest.fixture(scope='module')
def server(audio_run):
    proc, url = start_server(audio_run)
    yield url
    stop(proc)


@pytest.fixture(scope='module')
def video_server(tmp_path_factory, encoder_dir):
    """serve.py of a run of MoED on text, audio and faces (--modals avl) of mp4 clips, 2 epochs."""
    root = tmp_path_factory.mktemp('camera')
    csvs = []
    for split, (n, seed) in SPLITS.items():
        csvs.append(root / f'{split}.csv')
        pd.DataFrame(conversations_with_recordings(root / 'media', n, 4, 0.6, seed, split=split)).to_csv(
            csvs[-1], index=False)
    extract_features.main([*map(str, csvs), '--out', str(root / 'feats'), '--text-model', str(encoder_dir),
                           '--device', 'cpu'])
    run_cli(train.main, ['--Dataset', 'custom', '--data-dir', str(root / 'feats'), '--modals', 'avl', '--epochs',
                         '2', '--valid', 'dev', '--out-dir', str(root / 'run'), '--quiet', '--seed', '3'])
    proc, url = start_server(root / 'run')
    yield url
    stop(proc)


@pytest.fixture
def speech_wav(tmp_path):
    """What the fake microphone hears, looped: espeak-ng saying a sentence, then half a second of quiet."""
    assert shutil.which(ESPEAK), f'{ESPEAK} is not installed: apt-get install espeak-ng (.ci/run does)'
    sound = np.concatenate([speak('the report is on the table near the window', 'en+f2', 60, 160, 120),
                            np.zeros(RATE // 2, np.float32)])
    path = tmp_path / 'speech.wav'
    soundfile.write(path, sound, RATE, subtype='PCM_16')
    return path


@pytest.fixture
def face_y4m(tmp_path):
    """What the fake camera sees, looped: 2 s of a real face (scikit-image's astronaut) drifting a little."""
    path = tmp_path / 'face.y4m'
    face = media_maker.face_image(200)
    with av.open(str(path), 'w', format='yuv4mpegpipe') as container:
        stream = container.add_stream('rawvideo', rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, 'yuv420p'
        for k in range(50):
            frame = np.full((240, 320, 3), 90, np.uint8)
            x = 60 + int(8 * np.sin(k / 6))
            frame[20:220, x:x + 200] = face
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
        container.mux(stream.encode())
    return path


def browser_with(tmp_path, monkeypatch, *capture):
    """Headless Chromium (helpers.Browser) whose fake devices play the capture flags' files and whose page may
    use them unasked: Chromium started through a launcher that adds the flags."""
    launcher = tmp_path / 'chromium-with-devices'
    flags = ' '.join([*MIC_FLAGS, *(f"'{flag}'" for flag in capture)])
    launcher.write_text(f'#!/bin/sh\nexec {helpers.CHROMIUM} {flags} "$@"\n')
    launcher.chmod(0o755)
    monkeypatch.setattr(helpers, 'CHROMIUM', str(launcher))
    return helpers.Browser(tmp_path / 'profile')


@pytest.fixture
def mic_browser(tmp_path, monkeypatch, speech_wav):
    """A browser whose microphone is speech_wav."""
    browser = browser_with(tmp_path, monkeypatch, f'--use-file-for-fake-audio-capture={speech_wav}')
    yield browser
    browser.close()


@pytest.fixture
def camera_browser(tmp_path, monkeypatch, speech_wav, face_y4m):
    """A browser whose microphone is speech_wav and whose camera face_y4m."""
    browser = browser_with(tmp_path, monkeypatch, f'--use-file-for-fake-audio-capture={speech_wav}',
                           f'--use-file-for-fake-video-capture={face_y4m}')
    yield browser
    browser.close()


def wait_for(browser, condition, seconds=30):
    """Wait until a JavaScript condition holds on the page (a bounded wait; a timeout says what the page shows in
    its errors)."""
    browser.js(f"new Promise((done, fail) => {{ const until = Date.now() + {seconds * 1000}; "
               f"const t = setInterval(() => {{ if ({condition}) {{ clearInterval(t); done(); }} "
               f"else if (Date.now() > until) {{ clearInterval(t); fail(new Error('timed out: ' + "
               f"{json.dumps(condition)} + '; the page says: ' + document.getElementById('errors').textContent)); "
               f"}} }}, 50); }})")


def click(browser, selector):
    browser.js(f"document.querySelector({json.dumps(selector)}).click()")


def speak_a_turn(browser, speaker, text, n, send_while_recording):
    """Type the turn, press Record, let the microphone run about 1.5 s, press Stop then Send (or Send at once);
    wait for the page's n-th turn; the body the page sent."""
    browser.js(f"document.querySelector('#say [name=speaker]').value = {json.dumps(speaker)}; "
               f"document.querySelector('#say [name=text]').value = {json.dumps(text)}")
    click(browser, '#record')
    wait_for(browser, "document.getElementById('take').textContent.startsWith('recording')")
    browser.js("new Promise(done => setTimeout(done, 1500))")
    if not send_while_recording:
        click(browser, '#record')
        wait_for(browser, "document.getElementById('take').textContent.startsWith('recorded')")
    click(browser, '#say button[type=submit]')
    wait_for(browser, f"document.querySelectorAll('#chat .turn').length === {n}")
    return browser.js("window.lastTurnSent")


def decoded(data_url):
    """The recording of a data URL: (its MIME type, PyAV's container of its bytes)."""
    mime, payload = re.fullmatch(r'data:([^;,]+)(?:;[^;]*)*?;base64,(.+)', data_url, re.DOTALL).groups()
    return mime, av.open(io.BytesIO(base64.b64decode(payload, validate=True)))


def decoded_sound(data_url):
    """The recording of a data URL: (its MIME type, seconds of sound, the samples' RMS) as PyAV decodes it."""
    mime, container = decoded(data_url)
    with container:
        assert container.streams.audio, f'{mime}: no audio stream'
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
        rate = container.streams.audio[0].rate
        channels = container.streams.audio[0].codec_context.channels
    samples = samples.astype(np.float64)
    return mime, len(samples) / channels / rate, float(np.sqrt(np.mean(samples ** 2)))


def test_the_page_records_each_turn_and_shows_the_label_the_api_gives_for_it(server, mic_browser, tmp_path):
    info = httpx.get(f'{server}/info').json()
    assert info['media']['needs'] == 'audio', info['media']
    mic_browser.open_url(f'{server}/')
    wait_for(mic_browser, "document.body.dataset.ready")
    assert mic_browser.js("document.body.dataset.needs") == 'audio'
    assert mic_browser.js("!document.getElementById('record').hidden")

    # Send without a recording: the page says what to do and sends nothing
    mic_browser.js("document.querySelector('#say [name=text]').value = 'hello'")
    click(mic_browser, '#say button[type=submit]')
    wait_for(mic_browser, "document.getElementById('errors').textContent.includes('press Record')")
    assert mic_browser.js("window.lastTurnSent === undefined && !document.querySelector('#chat .turn')")

    sent = [speak_a_turn(mic_browser, speaker, text, n, send_while_recording=n == 2)
            for n, (speaker, text) in enumerate(LINES, 1)]
    for (speaker, text), turn in zip(LINES, sent):
        assert set(turn) == {'speaker', 'text', 'audio'} and (turn['speaker'], turn['text']) == (speaker, text)
        mime, seconds, rms = decoded_sound(turn['audio'])
        assert mime.startswith('audio/') and 1.0 <= seconds <= 4.0, (mime, seconds)
        assert rms > 0.01, f'the recording is silent (RMS {rms}): the fake microphone was not heard'

    shown = mic_browser.js("[...document.querySelectorAll('#chat .turn')].map(t => [t.querySelector('.speaker')"
                           ".firstChild.textContent, t.querySelector('.text').textContent, t.dataset.pred, "
                           "t.querySelector('.rec').textContent])")
    answer = httpx.post(f'{server}/predict', json={'turns': sent}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert [t[:2] for t in shown] == [list(line) for line in LINES]
    assert [t[2] for t in shown] == [t['predicted'] for t in answer.json()['turns']]
    assert all(t[2] in info['labels'] and re.fullmatch(r'\S+ \d+\.\d s', t[3]) for t in shown), shown
    assert mic_browser.script_errors() == []

    shot = tmp_path / 'serving-mic.png'
    click(mic_browser, '#record')                # the controls as a user sees them while speaking
    wait_for(mic_browser, "document.getElementById('take').textContent.startsWith('recording 0.')")
    mic_browser.screenshot(shot)
    assert_png(shot)
    if os.environ.get('MOED_SERVING_MIC_PNG'):        # docs/serving-mic.png is made this way
        shutil.copy(shot, os.environ['MOED_SERVING_MIC_PNG'])


def test_a_run_with_faces_records_the_camera_too(video_server, camera_browser):
    """A run reading faces: the page records camera and microphone (webm), sends it as the turn's video, and
    shows the label POST /predict gives for the same bytes; the recording holds frames and sound."""
    assert httpx.get(f'{video_server}/info').json()['media']['needs'] == 'video'
    camera_browser.open_url(f'{video_server}/')
    wait_for(camera_browser, "document.body.dataset.ready")
    assert camera_browser.js("document.body.dataset.needs") == 'video'
    sent = [speak_a_turn(camera_browser, speaker, text, n, send_while_recording=False)
            for n, (speaker, text) in enumerate(LINES[:2], 1)]
    for turn in sent:
        assert set(turn) == {'speaker', 'text', 'video'}
        mime, container = decoded(turn['video'])
        with container:
            frames = sum(1 for _ in container.decode(video=0))
            assert mime.startswith('video/') and frames >= 10 and container.streams.audio, (mime, frames)
    shown = camera_browser.js("[...document.querySelectorAll('#chat .turn')].map(t => t.dataset.pred)")
    answer = httpx.post(f'{video_server}/predict', json={'turns': sent}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert shown == [t['predicted'] for t in answer.json()['turns']]
    assert camera_browser.js("!document.getElementById('preview').hidden") and camera_browser.script_errors() == []
