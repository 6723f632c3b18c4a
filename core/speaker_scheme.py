"""The speaker index of every utterance: the schemes of extract_features.py's --speakers, decided on the
training conversations and recorded in dataset.json, then applied again by predict.py and the viewer.

    index, n_speakers, speakers = assign_speakers(table, 'party', None)     # decided on these conversations
    index = speaker_indices(table, speakers, n_speakers)                     # a recorded scheme, applied again
    index = parties(dialogues, names)                                        # each dialogue's in order of appearance

table: conversations.Conversations.table (columns key, speaker, split) plus a `path` column.
"""
import numpy as np

from utils import UserError


def assign_speakers(table, scheme, max_speakers):
    """(speaker index per row, n_speakers, the scheme as dataset.json records it), decided on this table:
    'party' (capped at max_speakers when given) or 'top-K' (the K most frequent train speakers)."""
    if scheme == 'party':
        most = int(parties(table['key'], table['speaker']).max()) + 1
        n_speakers = min(most, max_speakers) if max_speakers else most
        speakers = {'scheme': 'party', 'max_speakers': max_speakers, 'most_parties_in_a_dialogue': most,
                    'rule': "each dialogue's speakers numbered in order of appearance; parties past n_speakers "
                            "share the last index"}
        return speaker_indices(table, speakers, n_speakers), n_speakers, speakers
    k = int(scheme[len('top-'):])
    counts = table.loc[table['split'] == 'train', 'speaker'].value_counts()
    if counts.empty:
        raise UserError(f"--speakers top-{k} takes the most frequent speakers of the train split, but the CSVs "
                        "have no train rows.")
    names = sorted(counts.index, key=lambda name: (-counts[name], name))[:k]
    speakers = {'scheme': f'top-{k}', 'names': names, 'other_index': k,
                'rule': f"the {k} most frequent train speakers (ties by name) are 0..{k - 1}; everyone else is {k}"}
    return speaker_indices(table, speakers, k + 1), k + 1, speakers


def speaker_indices(table, speakers, n_speakers):
    """Speaker index per row under a recorded scheme (dataset.json's speakers): each dialogue's parties in
    order of appearance, capped at n_speakers - 1, or the recorded top-K names and 'other'."""
    if speakers['scheme'] == 'party':
        return np.minimum(parties(table['key'], table['speaker']), n_speakers - 1)
    index = {name: i for i, name in enumerate(speakers['names'])}
    return table['speaker'].map(lambda name: index.get(name, speakers['other_index'])).to_numpy()


def parties(dialogues, names):
    """Each row's speaker (names) numbered by order of appearance in its dialogue (dialogues; first speaker 0)."""
    seen = {}                   # dialogue -> {name: its index}
    return np.array([seen.setdefault(d, {}).setdefault(n, len(seen[d])) for d, n in zip(dialogues, names)],
                    dtype=np.int64)
