"""EmoryNLP regrouped into a second corpus for studies: another split and another label set on the same kind
of transcripts, so that a recipe chosen on EmoryNLP's own split is also measured on data it was not tuned on.

    python regroup_emorynlp.py ../shared/data/emorynlp --out emorynlp-sentiment

Reads the three EmoryNLP CSVs (emorynlp_{train,dev,test}_final.csv) of the folder and writes train.csv,
dev.csv and test.csv (EmoryNLP's columns, read by extract_features.py as EmoryNLP) into --out:

- the split by season: every scene of season 4 is the test split (episodes no fine-tuning or model ever
  trained on, and a label distribution of its own: fewer neutral turns); the scenes of seasons 1-3 are
  shuffled (seeded, --seed) and 10% of them are the dev split, the rest the train split;
- the labels are the sentiment of the emotion, as EmoryNLP's authors group their feeling wheel: Joyful,
  Peaceful, Powerful -> positive; Mad, Sad, Scared -> negative; Neutral -> neutral.

A scene is the triple (Season, Episode, Scene_ID), rows in Utterance_ID order. The folder is written whole,
then renamed into place.
"""
import argparse
import os

import numpy as np
import pandas as pd

import utils
from core.config import seed_value
from utils import UserError

FILES = [f'emorynlp_{split}_final.csv' for split in ('train', 'dev', 'test')]
SCENE = ['Season', 'Episode', 'Scene_ID']
SENTIMENT = {'Joyful': 'positive', 'Peaceful': 'positive', 'Powerful': 'positive',
             'Mad': 'negative', 'Sad': 'negative', 'Scared': 'negative', 'Neutral': 'neutral'}
TEST_SEASON = 4
DEV_SHARE = 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('folder', help=f"the folder of EmoryNLP's CSVs ({', '.join(FILES)})")
    p.add_argument('--out', required=True, help='the folder to write train.csv, dev.csv and test.csv into')
    p.add_argument('--seed', type=seed_value, default=0, help='the dev scenes\' draw (default 0)')
    return p.parse_args(argv)


def read(folder):
    """The three CSVs as one table, checked: the columns the regrouping needs, every emotion known."""
    tables = []
    for name in FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise UserError(f"{path} does not exist: give the folder of EmoryNLP's {', '.join(FILES)}.")
        table = pd.read_csv(path)
        missing = [c for c in [*SCENE, 'Utterance_ID', 'Emotion'] if c not in table.columns]
        if missing:
            raise UserError(f"{path} has no {', '.join(missing)} column: it is not one of EmoryNLP's CSVs.")
        unknown = sorted(set(table['Emotion'].dropna()) - set(SENTIMENT))
        if unknown:
            line = int(np.flatnonzero(table['Emotion'].isin(unknown))[0]) + 2
            raise UserError(f"{path}, line {line}: the emotion {unknown[0]!r} is not one of EmoryNLP's seven "
                            f"({', '.join(SENTIMENT)}).")
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def regroup(table, seed):
    """split name -> its rows (EmoryNLP's columns, the emotions as sentiments), scenes whole, in scene order."""
    table = table.assign(Emotion=table['Emotion'].map(SENTIMENT)).sort_values([*SCENE, 'Utterance_ID'],
                                                                              kind='stable')
    scenes = list(zip(*(table[c] for c in SCENE)))
    early = sorted({scene for scene in scenes if scene[0] != TEST_SEASON})
    drawn = np.random.RandomState(seed).permutation(len(early))[:round(DEV_SHARE * len(early))]
    dev = {early[i] for i in drawn}
    split = np.array(['test' if scene[0] == TEST_SEASON else 'dev' if scene in dev else 'train' for scene in scenes])
    return {name: table[split == name] for name in ('train', 'dev', 'test')}


def main(argv=None):
    args = parse_args(argv)
    utils.check_output_folder(args.out, '--out')
    parts = regroup(read(args.folder), args.seed)

    def write(folder):
        for name, rows in parts.items():
            rows.to_csv(os.path.join(folder, f'{name}.csv'), index=False)
    utils.replace_folder(args.out, write)
    for name, rows in parts.items():
        shares = ', '.join(f'{label} {share:.0%}' for label, share in rows['Emotion'].value_counts(normalize=True)
                           .items())
        print(f"{args.out}/{name}.csv: {len(rows)} utterances, {rows.groupby(SCENE).ngroups} scenes ({shares})")
    return 0


if __name__ == '__main__':
    utils.run_cli(main)
