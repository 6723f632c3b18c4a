"""regroup_emorynlp.py on made-up CSVs in EmoryNLP's schema: season 4 is the test split, seasons 1-3 are train
and dev with 10% of their scenes (seeded) in dev, scenes stay whole and in order, emotions become sentiments,
extract_features.py reads the output as EmoryNLP; a file that is not EmoryNLP's is refused (exit 2, nothing
written)."""
import pandas as pd
import pytest

import regroup_emorynlp
from owndata import conversations
from utils import run_cli

EMOTIONS = ['Neutral', 'Joyful', 'Scared', 'Mad', 'Peaceful', 'Powerful', 'Sad']


def emorynlp_csvs(folder):
    """Three files of 4 seasons x 5 scenes (of 3 utterances) each, the seasons spread over the files."""
    folder.mkdir(exist_ok=True)
    rows = [{'Utterance': f'line {s} {e} {u}', 'Speaker': "['Monica Geller']", 'Emotion': EMOTIONS[(s + e + u) % 7],
             'Scene_ID': scene, 'Utterance_ID': u + 1, 'Season': s, 'Episode': e, 'Start_Time': '', 'End_Time': ''}
            for s in range(1, 5) for e in range(1, 3) for scene in range(1, 6) for u in range(3)]
    table = pd.DataFrame(rows).sample(frac=1, random_state=0)          # the regrouping sorts the scenes again
    for i, name in enumerate(regroup_emorynlp.FILES):
        table.iloc[i::3].to_csv(folder / name, index=False)
    return table


def test_season_four_is_the_test_split_and_the_labels_are_sentiments(tmp_path):
    source = emorynlp_csvs(tmp_path / 'emorynlp')
    regroup_emorynlp.main([str(tmp_path / 'emorynlp'), '--out', str(tmp_path / 'out')])
    parts = {name: pd.read_csv(tmp_path / 'out' / f'{name}.csv') for name in ('train', 'dev', 'test')}
    scenes = {name: set(zip(t['Season'], t['Episode'], t['Scene_ID'])) for name, t in parts.items()}
    assert {s for s, _, _ in scenes['test']} == {4} and len(scenes['test']) == 10
    assert len(scenes['dev']) == 3 and len(scenes['train']) == 27 and not scenes['dev'] & scenes['train']
    assert sum(len(t) for t in parts.values()) == len(source)
    for t in parts.values():
        assert t.groupby(['Season', 'Episode', 'Scene_ID'])['Utterance_ID'].apply(list).map(
            lambda ids: ids == [1, 2, 3]).all()
        assert set(t['Emotion']) <= {'positive', 'negative', 'neutral'}
    merged = parts['train'].merge(source, on=['Season', 'Episode', 'Scene_ID', 'Utterance_ID'])
    assert (merged['Emotion_x'] == merged['Emotion_y'].map({'Joyful': 'positive', 'Peaceful': 'positive',
                                                            'Powerful': 'positive', 'Neutral': 'neutral'})
            .fillna('negative')).all()
    regroup_emorynlp.main([str(tmp_path / 'emorynlp'), '--out', str(tmp_path / 'again'), '--seed', '1'])
    again = pd.read_csv(tmp_path / 'again' / 'dev.csv')
    assert set(zip(again['Season'], again['Episode'], again['Scene_ID'])) != scenes['dev']     # --seed draws
    conv = conversations.read_conversations([str(tmp_path / 'out' / f'{n}.csv') for n in parts],
                                            {})
    assert conv.table.groupby('split')['key'].nunique().to_dict() == {'dev': 3, 'test': 10, 'train': 27}


def test_a_file_that_is_not_emorynlps_is_refused(tmp_path, capsys):
    emorynlp_csvs(tmp_path / 'emorynlp')
    plain = pd.DataFrame({'dialogue': [1], 'turn': [1], 'text': ['hi']})
    plain.to_csv(tmp_path / 'emorynlp' / 'emorynlp_dev_final.csv', index=False)
    with pytest.raises(SystemExit) as stop:
        run_cli(regroup_emorynlp.main, [str(tmp_path / 'emorynlp'), '--out', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and 'emorynlp_dev_final.csv has no Season, Episode, Scene_ID' in err
    assert 'Traceback' not in err and not (tmp_path / 'out').exists()
