"""Meeting transcripts straight in (owndata/transcripts.py): a WebVTT or SubRip file is one conversation whose cues are
its turns, cut out of the recording beside it. Fast: a two-person call's .vtt and .srt read as the rows of its start /
end CSV; the mess real tools write (BOM, CRLF, header, NOTE / STYLE / REGION blocks, cue settings, multi-line cues,
inline tags, voice classes, hh omitted, overlaps, empty cues); the 'Name: text' rule; labels beside a transcript; splits
from the file's or the folder's name; every bad transcript exits 2 naming the file and the cue's line, with nothing
written. Slow: a run trained on start / end CSVs predicts on each test call's .vtt or .srt (predict.py as a real command
once) exactly what it predicts on the CSV rows, transcripts with labels beside them give the CSVs' features, and
predict.py refuses each bad transcript."""
import os
import shutil

import numpy as np
import pandas as pd
import pytest

import extract_features
import predict
import train
from helpers import ok, run_script
from media_maker import write_recording
from owndata import conversations, prediction, transcripts
from utils import run_cli

# a two-person call: (speaker, text, start, end) per turn; Bob's second turn begins with a colon word and has an
# ampersand and angle brackets, which WebVTT escapes
CALL = [('Ann Lee', 'Hello Bob, did you get the report?', 0.0, 1.0),
        ('Bob', 'Note: it is on the table & <ready>.', 1.0, 2.2),
        ('Ann Lee', 'Great, thanks!', 2.1, 3.0),           # overlaps Bob's turn by 0.1 s
        ('Bob', 'See you at noon.', 3.0, 4.0)]
SEGMENTS = [(1.0, 140, 0.2), (1.0, 260, 0.5), (1.0, 150, 0.3), (1.0, 250, 0.6)]    # the recording: 4 s
COMPARED = ['dialogue', 'speaker', 'text', 'start', 'end', 'audio', 'video', 'label', 'split']


def cues_of(path, text):
    return [(c.line, c.number, c.start, c.end, c.speaker, c.text) for c in transcripts.read_cues(path, text)]


def cli_error(capsys, main, argv):
    """Run a CLI in-process; it must exit 2 with one paragraph on stderr: that paragraph."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, list(map(str, argv)))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith('error: ') and 'Traceback' not in err, err
    assert err.count('\n') == 1, err            # one paragraph
    return err


@pytest.fixture(scope='module')
def call(tmp_path_factory):
    """call.mp4 (a face, a voice), its start / end CSV, and its transcripts written by the meeting tools' rules."""
    folder = tmp_path_factory.mktemp('call')
    write_recording(folder / 'call.mp4', SEGMENTS, size=96)
    rows = [dict(dialogue='call', turn=t, speaker=s, text=x, start=a, end=b, video='call.mp4')
            for t, (s, x, a, b) in enumerate(CALL)]
    pd.DataFrame(rows).to_csv(folder / 'call.csv', index=False)
    transcripts.write(folder / 'call.vtt', CALL)
    transcripts.write(folder / 'call.srt', CALL)
    return folder


# ----------------------------------------------------------------------------- a call, its CSV and its transcripts

def test_the_writer_writes_what_teams_and_zoom_write(call):
    assert (call / 'call.vtt').read_text().split('\n')[:8] == [
        'WEBVTT', '', '00:00:00.000 --> 00:00:01.000', '<v Ann Lee>Hello Bob, did you get the report?</v>', '',
        '00:00:01.000 --> 00:00:02.200', '<v Bob>Note: it is on the table &amp; &lt;ready&gt;.</v>', '']
    assert (call / 'call.srt').read_text().split('\n')[:8] == [
        '1', '00:00:00,000 --> 00:00:01,000', 'Ann Lee: Hello Bob, did you get the report?', '',
        '2', '00:00:01,000 --> 00:00:02,200', 'Bob: Note: it is on the table & <ready>.', '']


@pytest.mark.parametrize('name, lines', [('call.vtt', [3, 6, 9, 12]), ('call.srt', [2, 6, 10, 14])])
def test_a_transcript_is_the_rows_of_its_start_end_csv(call, name, lines):
    csv = conversations.read_conversations([call / 'call.csv'], split='test')
    spoken = conversations.read_conversations([call / name], split='test')
    pd.testing.assert_frame_equal(spoken.table[COMPARED], csv.table[COMPARED])
    assert list(spoken.table['turn']) == [1, 2, 3, 4] and list(spoken.table['line']) == lines
    assert list(spoken.table['video']) == [str(call / 'call.mp4')] * 4
    assert spoken.files[0].schema == ('WebVTT' if name.endswith('vtt') else 'SubRip')


def test_the_recording_beside_videos_first_or_recording_flag(tmp_path):
    write_recording(tmp_path / 'talk.wav', SEGMENTS, video=False)
    transcripts.write(tmp_path / 'talk.vtt', CALL)
    table = conversations.read_conversations([tmp_path / 'talk.vtt'], split='test').table
    assert table['audio'].eq(str(tmp_path / 'talk.wav')).all() and table['video'].isna().all()   # sound only
    os.rename(write_recording(tmp_path / 'talk.mkv', SEGMENTS, size=64), tmp_path / 'talk.MKV')
    table = conversations.read_conversations([tmp_path / 'talk.vtt'], split='test').table      # a video first
    assert table['video'].eq(str(tmp_path / 'talk.MKV')).all() and table['audio'].eq(table['video']).all()
    table = conversations.read_conversations([tmp_path / 'talk.vtt'], split='test',
                                             recordings=[tmp_path / 'talk.wav']).table
    assert table['audio'].eq(str(tmp_path / 'talk.wav')).all()


# ----------------------------------------------------------------------------- what real tools write

MESSY_VTT = [                                   # (line, expected cue on it or None)
    '\ufeffWEBVTT - Weekly sync',
    'Kind: captions',
    'Language: en',
    '',
    'STYLE',
    '::cue(v[voice="Ann"]) { color: teal }',
    '',
    'REGION',
    'id:left width:40%',
    '',
    'NOTE recorded with a meeting tool,',
    'edited by hand --> twice',
    '',
    'a1b2c3-0',
    '00:01.000 --> 00:03.500 align:start line:0 position:10%',        # hh omitted, cue settings
    '<v.loud.fast Ann Lee>Hello <i>everyone</i>,',
    '   and welcome &amp; hi</v>',
    '',
    '00:00:03.000 --> 00:00:05.000',                                 # overlaps the cue before
    '<c.yellow><v Bob>Thanks</v></c> <00:00:04.000><c>Ann</c>.',
    '',
    '00:00:05.000 --> 00:00:06.000',                                 # a voice, no words
    '<v Bob></v>',
    '',
    '00:00:06.000 --> 00:00:07.000',                                 # empty
    '',
    '00:00:07.000 --> 00:00:08.000',
    'Note: the budget is due.',                                      # no voice: one party, the text whole
    '00:00:08.000 --> 00:00:09.250',                                 # no empty line before it
    '<v Ann Lee>Right.',
    '',
    'NOTE the end',
]


def test_messy_webvtt(tmp_path):
    text = '\r\n'.join(MESSY_VTT) + '\r\n'
    assert cues_of('sync.vtt', text) == [
        (15, 1, 1000, 3500, 'Ann Lee', 'Hello everyone, and welcome & hi'),
        (19, 2, 3000, 5000, 'Bob', 'Thanks Ann.'),
        (22, 3, 5000, 6000, 'Bob', ''),
        (25, 4, 6000, 7000, transcripts.UNNAMED, ''),
        (27, 5, 7000, 8000, transcripts.UNNAMED, 'Note: the budget is due.'),
        (29, 6, 8000, 9250, 'Ann Lee', 'Right.')]
    write_recording(tmp_path / 'sync.wav', [(10.0, 150, 0.3)], video=False)
    (tmp_path / 'sync.vtt').write_bytes(text.encode('utf-8'))            # the byte-order mark too
    table = conversations.read_conversations([tmp_path / 'sync.vtt'], split='test').table
    assert list(table['turn']) == [1, 2, 5, 6] and list(table['line']) == [15, 19, 27, 29]      # no empty turns
    assert list(table['start']) == [1.0, 3.0, 7.0, 8.0] and list(table['end']) == [3.5, 5.0, 8.0, 9.25]


MESSY_SRT = '\r\n'.join([
    '\ufeff10',
    '00:00:01,000 --> 00:00:02,500',
    'Ann Lee: <i>Hello</i> there,',
    '<font color="#ffffff">everyone</font>',
    '',
    '11',
    '00:00:02.500 --> 00:00:04,000',                                   # a dot before the milliseconds
    'Bob: Is a < b?',
    '',
    'it goes on after an empty line',
    '',
    '12',
    '00:00:04,000 --> 00:00:05,000',
    'Bob:',                                                            # a name and no words
    '',
    '13',
    '00:00:05,000 --> 00:00:06,000',
    'Ann Lee: Note: at 10:30.',
    '',
])


def test_messy_subrip_names_its_speakers_by_their_leading_names():
    assert cues_of('zoom.srt', MESSY_SRT) == [
        (2, 1, 1000, 2500, 'Ann Lee', 'Hello there, everyone'),
        (7, 2, 2500, 4000, 'Bob', 'Is a < b? it goes on after an empty line'),
        (13, 3, 4000, 5000, 'Bob', ''),
        (17, 4, 5000, 6000, 'Ann Lee', 'Note: at 10:30.')]


@pytest.mark.parametrize('texts, speakers', [
    (['Welcome back.', 'Note: this is a test.', 'At 10:30 we meet.'], [transcripts.UNNAMED] * 3),     # subtitles
    (['Note: this is a test.'] * 2 + ['See https://example.org'], [transcripts.UNNAMED] * 3),
    (['SPEAKER_01: Hi', 'SPEAKER_02: Hello', 'SPEAKER_01: Bye'], ['SPEAKER_01', 'SPEAKER_02', 'SPEAKER_01']),
    (['A name of more than forty characters, really: hi', 'Bob: hi'], [transcripts.UNNAMED] * 2),
])
def test_a_leading_name_counts_only_when_every_cue_has_one(texts, speakers):
    text = ''.join(f'{i + 1}\n00:00:0{i},000 --> 00:00:0{i + 1},000\n{line}\n\n' for i, line in enumerate(texts))
    assert [cue[4] for cue in cues_of('x.srt', text)] == speakers


# ----------------------------------------------------------------------------- labels and splits for training

def test_labels_beside_a_transcript_and_the_split_from_its_folder(call, tmp_path, capsys):
    folder = tmp_path / 'calls' / 'train'
    folder.mkdir(parents=True)
    shutil.copy(call / 'call.vtt', folder / 'monday.vtt')
    shutil.copy(call / 'call.mp4', folder / 'monday.mp4')
    labels = folder / 'monday.labels.csv'
    pd.DataFrame({'turn': [4, 1, 2, 3], 'emotion': ['joy', 'neutral', 'anger', 'joy']}).to_csv(labels, index=False)
    conv = conversations.read_conversations([folder / 'monday.vtt'])
    assert list(conv.table['label']) == ['neutral', 'anger', 'joy', 'joy'] and set(conv.table['split']) == {'train'}
    pd.DataFrame({'turn': [1, 2, 3, 4], 'mood': ['a', 'b', 'c', 'd']}).to_csv(labels, index=False)
    conv = conversations.read_conversations([folder / 'monday.vtt'], {'label': 'mood'})
    assert list(conv.table['label']) == ['a', 'b', 'c', 'd']
    pd.DataFrame({'turn': [1, 2, 4], 'emotion': ['joy'] * 3}).to_csv(labels, index=False)
    err = cli_error(capsys, extract_features.main, [folder / 'monday.vtt', '--out', tmp_path / 'feats'])
    assert f'{folder}/monday.vtt, line 9: this cue (turn 3) has no row in {labels}' in err
    pd.DataFrame({'turn': [1, 2, 3, 4, 7], 'emotion': ['joy'] * 5}).to_csv(labels, index=False)
    err = cli_error(capsys, extract_features.main, [folder / 'monday.vtt', '--out', tmp_path / 'feats'])
    assert f"{labels}, line 6: the turn '7' is not a cue of {folder}/monday.vtt" in err
    pd.DataFrame({'turn': [1, 2, 3, 4], 'emotion': ['joy'] * 4}).to_csv(labels, index=False)
    os.rename(folder, tmp_path / 'calls' / 'monday')                # a folder that names no split
    err = cli_error(capsys, extract_features.main, [tmp_path / 'calls' / 'monday' / 'monday.vtt', '--out',
                                                    tmp_path / 'feats'])
    assert 'its file name (nor its folder) names no split' in err
    assert not (tmp_path / 'feats').exists() and not (tmp_path / '.feats.work').exists()


# ----------------------------------------------------------------------------- bad transcripts

VTT_HEAD = 'WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n<v Ann>Hi\n\n'       # its second cue's timing is on line 6
BAD = {  # name -> (file name, its text, the words of the message; {path} is the transcript's)
    'malformed vtt time': ('call.vtt', VTT_HEAD + '00:00:01.000 --> 00:00:1x.000\n<v Bob>Hi\n',
                           "{path}, line 6: the cue time '00:00:01.000 --> 00:00:1x.000' is not"),
    'vtt minutes past 59': ('call.vtt', VTT_HEAD + '00:61:00.000 --> 00:62:00.000\n<v Bob>Hi\n',
                            "{path}, line 6: the cue time"),
    'srt time': ('call.srt', '1\n00:00:00,000 --> 00:00:01,000\nAnn: hi\n\n2\n00:00:01;000 --> 00:00:02,000\nBob: x\n',
                 "{path}, line 6: this block is not a SubRip cue"),
    'beyond the end': ('call.vtt', VTT_HEAD + '00:00:02.000 --> 00:00:09.000\n<v Bob>Hi\n',
                       '{path}, line 6 (dialogue call): the wav file'),
    'end before start': ('call.srt', '1\n00:00:02,000 --> 00:00:01,000\nAnn: hi\n',
                         '{path}, line 2 (dialogue call): the wav file'),
    'no cue': ('call.vtt', 'WEBVTT\n\nNOTE nothing was said\n', '{path} holds no cue'),
    'empty srt': ('call.srt', '', '{path} holds no cue'),
    'no words': ('call.vtt', VTT_HEAD.replace('Hi', '') + '00:00:01.000 --> 00:00:02.000\n<b> </b>\n',
                 '{path}: none of its 2 cues holds words'),
    'no header': ('call.vtt', '00:00:00.000 --> 00:00:01.000\nHi\n', '{path}, line 1: a WebVTT file starts with'),
    'stray block': ('call.vtt', VTT_HEAD + 'and then some\n', '{path}, line 6: this block is neither a cue'),
    'no recording': ('lonely.vtt', VTT_HEAD, '{path}: no recording of the same name beside it'),
}


def write_bad(folder, name):
    file_name, text, words = BAD[name]
    folder.mkdir(parents=True, exist_ok=True)
    write_recording(folder / 'call.wav', [(3.0, 150, 0.3)], video=False)
    (folder / file_name).write_text(text)
    return folder / file_name, words.format(path=folder / file_name)


@pytest.mark.parametrize('name', list(BAD))
def test_a_bad_transcript_exits_2_naming_the_file_and_line_and_writes_nothing(tmp_path, capsys, name):
    path, words = write_bad(tmp_path / 'test', name)
    err = cli_error(capsys, extract_features.main, [path, '--out', tmp_path / 'feats'])
    assert words in err, err
    assert sorted(os.listdir(tmp_path)) == ['test']


def test_recording_flags_that_do_not_fit_are_refused(call, tmp_path, capsys):
    err = cli_error(capsys, extract_features.main, [call / 'call.vtt', call / 'call.srt', '--out', tmp_path / 'f',
                                                    '--recording', call / 'call.mp4'])
    assert '--recording names 1 file(s) for 2 meeting transcript(s)' in err
    err = cli_error(capsys, extract_features.main, [call / 'call.vtt', '--out', tmp_path / 'f', '--media-dir', call])
    assert f'--media-dir finds the clips of CSVs without a video column, but {call}/call.vtt' in err
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- slow: a run predicts on transcripts

SPLITS = {'train': (6, 1), 'dev': (2, 2), 'test': (3, 3)}      # split -> (dialogues, seed); 4 turns each
TURNS, SECONDS = 4, 0.6
TONES = {'calm': (120, 0.12), 'happy': (210, 0.35), 'angry': (300, 0.7)}     # emotion -> (f0 Hz, amplitude)
PHRASES = ('Did the numbers come in?', 'Note: the report is late.', 'Yes & no.', 'Fine, <see> you.', 'Okay')


def calls_csv(folder, split, n, seed):
    """Start / end rows of n two-person calls, one recording each (folder/<split><seed>_<d>.mp4), whose emotion is
    in the voice's pitch and loudness and not in the words."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n):
        emotions = rng.choice(sorted(TONES), size=TURNS)
        name = f'{split}{seed}_{d}'
        write_recording(folder / f'{name}.mp4', [(SECONDS, *TONES[e]) for e in emotions], size=160, seed=seed * 100 + d)
        rows += [dict(dialogue=f'd{d}', turn=t, speaker=('Ann', 'Bob')[t % 2], text=str(rng.choice(PHRASES)),
                      emotion=str(e), video=f'{folder.name}/{name}.mp4', start=round(t * SECONDS, 3),
                      end=round((t + 1) * SECONDS, 3)) for t, e in enumerate(emotions)]
    return pd.DataFrame(rows)


@pytest.fixture(scope='module')
def run(tmp_path_factory, encoder_dir):
    """Start / end CSVs of one recording per dialogue (media/<split><seed>_<d>.mp4), their features and a 3-epoch run
    on all three modalities; beside each recording its transcript (.vtt, every third one .srt) and labels."""
    root = tmp_path_factory.mktemp('calls')
    spoken = {}
    for split, (n, seed) in SPLITS.items():
        (root / 'media').mkdir(exist_ok=True)
        rows = calls_csv(root / 'media', split, n, seed)
        rows.to_csv(root / f'{split}.csv', index=False)
        for d, (dialogue, turns) in enumerate(rows.groupby('dialogue', sort=False)):
            stem = root / 'media' / f'{split}{seed}_{d}'
            path = stem.with_suffix('.srt' if d % 3 == 2 else '.vtt')
            transcripts.write(path, list(zip(turns['speaker'], turns['text'], turns['start'], turns['end'])))
            pd.DataFrame({'turn': range(1, len(turns) + 1), 'emotion': turns['emotion']}).to_csv(
                f'{stem}.labels.csv', index=False)
            spoken.setdefault(split, []).append(path)
    csvs = [root / f'{split}.csv' for split in SPLITS]
    run_cli(extract_features.main, [*map(str, csvs), '--out', str(root / 'feats'), '--text-model', str(encoder_dir),
                                    '--workers', '2'])
    run_cli(train.main, ['--Dataset', 'custom', '--data-dir', str(root / 'feats'), '--valid', 'dev', '--epochs', '3',
                         '--quiet', '--out-dir', str(root / 'run')])
    return root, spoken


def arrays(folder):
    with np.load(folder / 'features.npz') as npz:
        return {name: npz[name] for name in npz.files}


@pytest.mark.slow
def test_transcripts_with_labels_give_the_features_of_their_csvs(run, encoder_dir):
    root, spoken = run
    files = [str(path) for split in SPLITS for path in spoken[split]]
    run_cli(extract_features.main, [*files, '--out', str(root / 'spoken'), '--text-model', str(encoder_dir),
                                    '--workers', '2'])
    expected, got = arrays(root / 'feats'), arrays(root / 'spoken')
    assert sorted(got) == sorted(expected) == ['audio', 'text', 'visual']
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    utterances = [pd.read_csv(root / folder / 'utterances.csv') for folder in ('feats', 'spoken')]
    for column in ('speaker', 'text', 'label', 'split', 'speaker_index'):
        assert list(utterances[1][column]) == list(utterances[0][column]), column


@pytest.mark.slow
def test_predict_on_each_calls_transcript_gives_its_csv_rows_predictions(run, tmp_path):
    root, spoken = run
    by_csv = prediction.predict(root / 'run', str(root / 'test.csv'), workers=2)
    first, second, third = spoken['test']
    elsewhere = tmp_path / 'elsewhere'                     # a transcript away from its recording: --recording
    elsewhere.mkdir()
    shutil.copy(third, elsewhere / 'third.srt')
    shutil.copy(transcripts.labels_path(third), elsewhere / 'third.labels.csv')
    ok(run_script('predict.py', root / 'run', first, '--out', tmp_path / 'first.csv', cwd=tmp_path))   # as a user
    run_cli(predict.main, [str(root / 'run'), str(second), '--out', str(tmp_path / 'second.csv'), '--workers', '2'])
    run_cli(predict.main, [str(root / 'run'), str(elsewhere / 'third.srt'), '--out', str(tmp_path / 'third.csv'),
                           '--recording', str(third.with_suffix('.mp4')), '--workers', '2'])
    for d, name in enumerate(('first', 'second', 'third')):
        got = pd.read_csv(tmp_path / f'{name}.csv')
        expected = by_csv[by_csv['dialogue'] == f'd{d}'].reset_index(drop=True)
        assert list(got['turn']) == [1, 2, 3, 4] and list(got['speaker']) == list(expected['speaker'])
        assert list(got['text']) == list(expected['text']) and list(got['label']) == list(expected['label'])
        assert list(got['predicted']) == list(expected['predicted'])
        probabilities = [column for column in expected if column.startswith('p_')]
        np.testing.assert_allclose(got[probabilities].to_numpy(), expected[probabilities].to_numpy(), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('name', list(BAD))
def test_predict_refuses_a_bad_transcript_and_writes_nothing(run, tmp_path, capsys, name):
    root, _ = run
    path, words = write_bad(tmp_path / 'calls', name)
    err = cli_error(capsys, predict.main, [root / 'run', path, '--out', tmp_path / 'call.csv'])
    assert words in err, err
    assert os.listdir(tmp_path) == ['calls']
