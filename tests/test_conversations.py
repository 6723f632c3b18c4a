"""owndata/conversations.py: the CSV schemas (plain, MELD, EmoryNLP, flags), file-scoped dialogue ids, splits from
file names, optional labels and media paths, and the problems it reports (file, line, dialogue named)."""
from pathlib import Path

import numpy as np
import pytest
import soundfile

from owndata import conversations as C
from utils import UserError

EMORYNLP = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'emorynlp'


def write(path, text, encoding='utf-8'):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def read(*paths, **overrides):
    return C.read_conversations(paths, overrides)


def test_plain_schema_with_split_column(tmp_path):
    csv = write(tmp_path / 'all.csv',
                'dialogue,turn,speaker,text,emotion,split\n'
                'b,0,Ann ,"Hi, you.",joy,test\n'
                'a,0,Bob,Hello.,neutral,train\n'
                'a,2,Ann,"Say ""hi""",anger,train\n'
                'c,5,Cy,Ok.,neutral,valid\n')
    conv = read(csv)
    t = conv.table
    assert list(t.columns) == list(C.TABLE_COLUMNS)
    assert t['key'].tolist() == ['all.csv:a', 'all.csv:a', 'all.csv:c', 'all.csv:b']    # train, dev, test
    assert t['split'].tolist() == ['train', 'train', 'dev', 'test']
    assert t['text'].tolist() == ['Hello.', 'Say "hi"', 'Ok.', 'Hi, you.']
    assert t['speaker'].tolist() == ['Bob', 'Ann', 'Cy', 'Ann']
    assert t['line'].tolist() == [3, 4, 5, 2]
    assert t['turn'].tolist() == [0, 2, 5, 0]
    assert t['label'].tolist() == ['neutral', 'anger', 'neutral', 'joy']
    assert t['audio'].isna().all() and t['visual'].isna().all()
    f = conv.files[0]
    assert (f.schema, f.split_from, f.columns['text'], f.columns['audio']) == ('plain', 'column', 'text', None)
    assert len(f.sha256) == 64


def test_meld_files_scope_dialogue_ids_and_name_the_split(tmp_path):
    header = 'Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode\n'
    paths = [write(tmp_path / f'{split}_sent_emo.csv', header + f'1,From {split}.,Joey,joy,positive,0,0,1,1\n'
                   f'2,Again.,Ross,neutral,neutral,0,1,1,1\n') for split in ('test', 'dev', 'train')]
    conv = read(*paths)
    t = conv.table
    assert t['key'].unique().tolist() == ['train_sent_emo.csv:0', 'dev_sent_emo.csv:0', 'test_sent_emo.csv:0']
    assert t['split'].tolist() == ['train', 'train', 'dev', 'dev', 'test', 'test']
    assert t['dialogue'].unique().tolist() == ['0']
    assert {f.schema for f in conv.files} == {'MELD'} and {f.split_from for f in conv.files} == {'file name'}


def test_emorynlp_schema_triple_dialogue_and_list_speakers(tmp_path):
    csv = write(tmp_path / 'emory_train.csv',
                'Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time\n'
                "Coffee.,['Rachel Green'],Neutral,1,1,1,15,0,1\n"
                "Hi!,\"['Joey Tribbiani', 'Ross Geller']\",Joyful,1,2,1,15,1,2\n"
                "Hey.,['Monica Geller'],Mad,1,1,1,16,0,1\n")
    conv = read(csv)
    t = conv.table
    assert conv.files[0].schema == 'EmoryNLP'
    assert t['dialogue'].tolist() == ['1/15/1', '1/15/1', '1/16/1']   # Scene_ID 1 of two episodes: two scenes
    assert t['speaker'].tolist() == ['Rachel Green', 'Joey Tribbiani', 'Monica Geller']     # the first named
    assert set(t['split']) == {'train'}


@pytest.mark.skipif(not EMORYNLP.is_dir(), reason='the shared EmoryNLP files are not next to the repository')
def test_real_emorynlp_dev_slice(tmp_path):
    lines = (EMORYNLP / 'emorynlp_dev_final.csv').read_text(encoding='utf-8').splitlines(keepends=True)
    conv = read(write(tmp_path / 'emorynlp_dev_final.csv', ''.join(lines[:41])))
    t = conv.table
    assert len(t) == 40 and conv.files[0].schema == 'EmoryNLP' and set(t['split']) == {'dev'}
    assert t.iloc[0][['dialogue', 'turn', 'speaker', 'text', 'label']].tolist() == \
        ['1/15/1', 1, 'Rachel Green', 'Coffee.', 'Neutral']
    assert not t['speaker'].str.startswith('[').any()
    assert (t.groupby('key')['turn'].diff().dropna() > 0).all()


@pytest.mark.parametrize('name, split', [('train.csv', 'train'), ('MELD_dev_sent.csv', 'dev'),
                                         ('my-valid-set.csv', 'dev'), ('validation.csv', 'dev'),
                                         ('test2.csv', 'test'), ('Test.CSV', 'test')])
def test_split_from_file_name(name, split):
    assert C.split_from_name(f'/data/{name}') == split


@pytest.mark.parametrize('name', ['latest.csv', 'train_and_test.csv', 'conversations.csv'])
def test_file_name_without_one_split_is_refused(tmp_path, name):
    csv = write(tmp_path / name, 'dialogue,turn,speaker,text\nd,0,A,Hi.\n')
    with pytest.raises(UserError, match=f'{name} has no split column and its file name names'):
        read(csv)


def test_columns_mapped_by_flags(tmp_path):
    csv = write(tmp_path / 'mine_test.csv', 'show,scene,idx,who,words,feeling\nS,1,0,A,Hi.,joy\nS,2,0,B,Yo.,sad\n')
    conv = read(csv, dialogue=('show', 'scene'), turn='idx', speaker='who', text='words', label='feeling')
    assert conv.table['key'].tolist() == ['mine_test.csv:S/1', 'mine_test.csv:S/2']
    assert conv.table['label'].tolist() == ['joy', 'sad']
    assert conv.files[0].schema == 'flags'


def test_column_flags_parse():
    import argparse
    parser = argparse.ArgumentParser()
    C.add_column_flags(parser)
    args = parser.parse_args(['--dialogue-col', 'Season, Episode,Scene_ID', '--text-col', 'line'])
    assert C.columns_from_args(args) == {'dialogue': ('Season', 'Episode', 'Scene_ID'), 'text': 'line'}


def test_labels_are_optional(tmp_path):
    conv = read(write(tmp_path / 'new_test.csv', 'dialogue,turn,speaker,text\nd,0,A,Hi.\nd,1,B,Yo.\n'))
    assert conv.table['label'].isna().all() and conv.files[0].columns['label'] is None


def test_media_paths_relative_to_the_csv(tmp_path, monkeypatch):
    folder = tmp_path / 'corpus'
    (folder / 'wav').mkdir(parents=True)
    soundfile.write(folder / 'wav' / 'u0.wav', np.zeros(800, dtype=np.float32), 8000)
    np.save(folder / 'v0.npy', np.ones(3, dtype=np.float32))
    write(folder / 'train.csv', 'dialogue,turn,speaker,text,audio,visual\nd,0,A,Hi.,wav/u0.wav,v0.npy\n')
    monkeypatch.chdir(tmp_path)
    row = read(Path('corpus') / 'train.csv').table.iloc[0]
    assert row['audio'] == str(folder / 'wav' / 'u0.wav') and row['visual'] == str(folder / 'v0.npy')


def test_inputs_sharing_a_file_name_are_refused(tmp_path):
    text = 'dialogue,turn,speaker,text,split\nd,0,A,Hi.,train\n'
    a, b = write(tmp_path / 'a' / 'data.csv', text), write(tmp_path / 'b' / 'data.csv', text)
    with pytest.raises(UserError, match='share the file name data.csv'):
        read(a, b)


PLAIN = 'dialogue,turn,speaker,text,emotion\nd,0,Zoé,"Hi, 😀 “you”",joy\nd,1,Bob,中文,sad\ne,0,Ann,Ok.,joy\n'
# name -> the bytes of a file that must read as PLAIN does (valid, if unusual)
UNUSUAL = {
    'byte-order mark': b'\xef\xbb\xbf' + PLAIN.encode(),
    'Windows line endings': PLAIN.replace('\n', '\r\n').encode(),
    'byte-order mark and Windows line endings': b'\xef\xbb\xbf' + PLAIN.replace('\n', '\r\n').encode(),
    'no final newline': PLAIN.rstrip('\n').encode(),
    'blank lines': PLAIN.replace('\ne,', '\n\n,,,,\ne,').encode(),
    'unknown columns': PLAIN.replace('\n', ',x\n').replace('emotion,x', 'emotion,notes').encode(),
}


@pytest.mark.parametrize('name', UNUSUAL)
def test_unusual_but_valid_files_read_as_plain_ones(tmp_path, name):
    expected = read(write(tmp_path / 'plain' / 'test.csv', PLAIN)).table.drop(columns='line')
    path = tmp_path / 'unusual' / 'test.csv'
    path.parent.mkdir()
    path.write_bytes(UNUSUAL[name])
    table = read(path).table
    assert table.drop(columns='line').equals(expected)
    assert table['text'].tolist() == ['Hi, 😀 “you”', '中文', 'Ok.'] and table['speaker'].iat[0] == 'Zoé'
    assert table.groupby('key').size().tolist() == [2, 1]          # a one-utterance dialogue is one


HEADER = 'dialogue,turn,speaker,text,emotion,split\n'
# name -> (CSV body after the header, what the message says); the bad row is always line 3, dialogue d
BAD_ROWS = {
    'empty text': ('d,0,A,Hi.,joy,train\nd,1,B,  ,joy,train\n', 'the text (text) is empty'),
    'invisible text': ('d,0,A,Hi.,joy,train\nd,1,B,\u200b\u00a0,joy,train\n',
                       'the text (text) is empty (only invisible'),
    'duplicate turn': ('d,1,A,Hi.,joy,train\nd,1,B,Yo.,joy,train\n', 'turn 1 appears twice in this dialogue'),
    'turns out of order': ('d,2,A,Hi.,joy,train\nd,1,B,Yo.,joy,train\n', 'turns out of order'),
    'unknown split': ('d,0,A,Hi.,joy,train\nd,1,B,Yo.,joy,holdout\n', "unknown split 'holdout'"),
    'two splits': ('d,0,A,Hi.,joy,train\nd,1,B,Yo.,joy,test\n', 'this dialogue is in two splits'),
    'turn not an integer': ('d,0,A,Hi.,joy,train\nd,one,B,Yo.,joy,train\n', "the turn (turn) 'one' is not an integer"),
    'empty speaker': ('d,0,A,Hi.,joy,train\nd,1,[],Yo.,joy,train\n', 'the speaker (speaker) is empty'),
    'empty label': ('d,0,A,Hi.,joy,train\nd,1,B,Yo.,,train\n', 'the label (emotion) is empty'),
    'label in two cases': ('d,0,A,Hi.,joy,train\nd,1,B,Yo.,Joy,train\n',
                           "the label 'Joy' differs only in case from 'joy'"),
    'wrong field count': ('d,0,A,Hi.,joy,train\nd,1,B,Yo, you.,joy,train\n', 'the row has 7 fields'),
}


@pytest.mark.parametrize('problem', BAD_ROWS)
def test_bad_rows_name_file_line_and_dialogue(tmp_path, problem):
    body, message = BAD_ROWS[problem]
    csv = write(tmp_path / 'talks.csv', HEADER + body)
    with pytest.raises(UserError) as err:
        read(csv)
    assert str(err.value).startswith(f'{csv}, line 3') and message in str(err.value)
    if problem != 'wrong field count':
        assert '(dialogue d)' in str(err.value)


def test_missing_column_lists_the_columns_found_and_the_flag(tmp_path):
    csv = write(tmp_path / 'train.csv', 'dialogue,turn,speaker,utterance\nd,0,A,Hi.\n')
    with pytest.raises(UserError) as err:
        read(csv)
    message = str(err.value)
    assert message.startswith(f'{csv}: no column for the text')
    assert '--text-col NAME' in message and 'Columns found: dialogue, turn, speaker, utterance' in message


EMORYNLP_HEADER = 'Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode'
BAD_HEADERS = {     # name -> (the header, what the message says)
    'EmoryNLP without Season': (EMORYNLP_HEADER.replace(',Season', ''),
                                'closest known schema is EmoryNLP, and the file lacks: dialogue (looked for Season, '
                                'Episode, Scene_ID, without Season; map it with --dialogue-col NAME)'),
    'separated by semicolons': ('dialogue;turn;speaker;text', "the file seems separated by ';', not commas"),
    'separated by tabs': ('dialogue\tturn\tspeaker\ttext', "the file seems separated by '\\t', not commas"),
}


@pytest.mark.parametrize('problem', BAD_HEADERS)
def test_bad_headers_name_the_closest_schema(tmp_path, problem):
    header, message = BAD_HEADERS[problem]
    csv = write(tmp_path / 'train.csv', header + '\n' + ','.join(['1'] * len(header.split(','))) + '\n')
    with pytest.raises(UserError) as err:
        read(csv)
    assert str(err.value).startswith(f'{csv}: no column for the') and message in str(err.value)


def test_flag_naming_an_absent_column(tmp_path):
    csv = write(tmp_path / 'train.csv', 'dialogue,turn,speaker,text\nd,0,A,Hi.\n')
    with pytest.raises(UserError, match="--text-col names the column 'words', which the file does not have"):
        read(csv, text='words')


def test_non_utf8_file_names_the_line(tmp_path):
    csv = write(tmp_path / 'train.csv', 'dialogue,turn,speaker,text\nd,0,A,Hi.\nd,1,B,Café!\n', encoding='latin-1')
    with pytest.raises(UserError, match=r'train.csv, line 3: the file is not UTF-8 \(byte 0xe9'):
        read(csv)


@pytest.mark.parametrize('problem', ['no path', 'missing wav', 'unreadable wav', 'missing npy'])
def test_bad_media_files(tmp_path, problem):
    soundfile.write(tmp_path / 'ok.wav', np.zeros(800, dtype=np.float32), 8000)
    (tmp_path / 'broken.wav').write_bytes(b'RIFF\x00\x00not a wav at all')
    np.save(tmp_path / 'ok.npy', np.ones(3))
    audio, visual, message = {'no path': ('', 'ok.npy', 'the audio column has no wav path'),
                              'missing wav': ('gone.wav', 'ok.npy', 'the wav file {}/gone.wav does not exist'),
                              'unreadable wav': ('broken.wav', 'ok.npy', 'broken.wav cannot be read as audio'),
                              'missing npy': ('ok.wav', 'gone.npy',
                                              'the visual feature file {}/gone.npy does not exist'),
                              }[problem]
    csv = write(tmp_path / 'train.csv', f'dialogue,turn,speaker,text,audio,visual\nd,0,A,Hi.,ok.wav,ok.npy\n'
                                        f'd,1,B,Yo.,{audio},{visual}\n')
    with pytest.raises(UserError) as err:
        read(csv)
    assert str(err.value).startswith(f'{csv}, line 3 (dialogue d)')
    assert message.format(tmp_path) in str(err.value)


def test_header_only_and_empty_files(tmp_path):
    with pytest.raises(UserError, match='has a header but no utterances'):
        read(write(tmp_path / 'train.csv', 'dialogue,turn,speaker,text\n\n'))
    with pytest.raises(UserError, match='is empty'):
        read(write(tmp_path / 'test.csv', ''))
