"""The text features read packed (several inputs side by side in one sequence, a block-diagonal attention mask,
each input's own position ids) are the features of each input read alone, unpadded, by the plain Hugging Face
model: for the default encoder (all-MiniLM-L6-v2, BERT's absolute positions from 0), for a RoBERTa (positions
from the padding index + 1), and for a model the probe finds reads them otherwise (DeBERTa-v2), read padded.
The inputs are a conversation as the MoED head's recipe shows it ('speaker: text' and the previous turn as a
second segment) with real mess: curly quotes, an emoji, a one-word turn, a turn longer than the encoder's window
(shown alone, truncated).
"""
import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from conftest import WORDS
from owndata import features, text_encoder

LAYERS = (1, -2, -1, -1)
TURNS = [('Monica Geller', '“Okay,” I said… and then—nothing.'), ('Ross', 'Hi.'),
         ('Joey Tribbiani', "How you doin'? 😀 " + ' '.join(WORDS * 3)), ('Monica Geller', 'Yes!'),
         ('Ross', 'no ' * 700), ('Chandler', 'Could this BE any longer? ' * 4), ('Ross', 'ok')]


def conversation():
    return pd.DataFrame({'key': ['talk:1'] * 5 + ['talk:2'] * 2, 'speaker': [s for s, _ in TURNS],
                         'text': [t for _, t in TURNS]})


def read_alone(folder, max_length):
    """(4, N, D): each turn as 'speaker: text' with the previous turn of its dialogue as a second segment (none
    for a dialogue's first turn, nor for a turn that fills the window alone), read alone by the plain model,
    its own tokens' hidden states averaged."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    table, out = conversation(), []
    for i, (speaker, text) in enumerate(TURNS):
        shown = f'{speaker}: {text}'
        previous = f'{TURNS[i - 1][0]}: {TURNS[i - 1][1]}' if i and table['key'][i] == table['key'][i - 1] else ' '
        if len(tokenizer(shown, add_special_tokens=False)['input_ids']) + 3 < max_length:
            inputs = tokenizer(shown, previous, truncation='only_second', max_length=max_length, return_tensors='pt')
            own = torch.tensor([sequence != 1 for sequence in inputs.sequence_ids(0)])
        else:
            inputs = tokenizer(shown, truncation=True, max_length=max_length, return_tensors='pt')
            own = torch.ones(inputs['input_ids'].shape[1], dtype=torch.bool)
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states
        out.append(np.stack([hidden[layer][0][own].mean(0).numpy() for layer in LAYERS]))
    return np.stack(out, axis=1)


def extracted(folder, monkeypatch):
    """extract_text's features of the conversation and how many batches were read packed."""
    encoder = text_encoder.load_encoder(str(folder), 'cpu')
    packed = []
    real = text_encoder.pooled_packed
    monkeypatch.setattr(text_encoder, 'pooled_packed', lambda *args: packed.append(1) or real(*args))
    settings = features.ExtractionSettings(layers=LAYERS, speaker_in_text=True, context_turns=1, progress=False)
    return encoder, text_encoder.extract_text(settings, encoder, conversation())[0], len(packed)


def tiny_model(folder, model_class, config_class, **config):
    """A random 3-layer, 32-d model of model_class with conftest's WordPiece vocabulary, saved like a hub model."""
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *"abcdefghijklmnopqrstuvwxyz0123456789.,!?':",
             *(f'##{c}' for c in 'abcdefghijklmnopqrstuvwxyz'), *WORDS]
    tokenizer = transformers.BertTokenizer(vocab={word: i for i, word in enumerate(vocab)},
                                           model_max_length=128, **config.pop('tokenizer', {}))
    torch.manual_seed(0)
    model_class(config_class(vocab_size=len(vocab), **config)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_default_encoder_reads_packed_what_it_reads_alone(monkeypatch):
    encoder, vectors, packed = extracted(text_encoder.DEFAULT_TEXT_MODEL, monkeypatch)
    assert encoder.position_offset == 0 and packed >= 1       # one batch of mixed lengths: read packed
    np.testing.assert_allclose(vectors, read_alone(text_encoder.DEFAULT_TEXT_MODEL, 512), rtol=1e-4, atol=2e-5)


def test_a_roberta_reads_packed_from_its_own_first_position(tmp_path, monkeypatch):
    folder = tiny_model(tmp_path / 'roberta', transformers.RobertaModel, transformers.RobertaConfig, hidden_size=32,
                        num_hidden_layers=3, num_attention_heads=2, intermediate_size=37, pad_token_id=0,
                        type_vocab_size=2, max_position_embeddings=130)
    encoder, vectors, packed = extracted(folder, monkeypatch)
    assert encoder.position_offset == 1 and packed >= 1       # RoBERTa: positions from padding_idx + 1
    np.testing.assert_allclose(vectors, read_alone(folder, 128), rtol=1e-4, atol=1e-5)


def test_a_model_that_does_not_read_them_packed_as_alone_is_read_padded(tmp_path, monkeypatch):
    """DeBERTa-v2 builds its attention from relative positions and its own mask: the probe finds no offset."""
    folder = tiny_model(tmp_path / 'deberta', transformers.DebertaV2Model, transformers.DebertaV2Config,
                        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37,
                        max_position_embeddings=128, type_vocab_size=2, relative_attention=True,
                        position_biased_input=False, pos_att_type=['p2c', 'c2p'])
    encoder, vectors, packed = extracted(folder, monkeypatch)
    assert encoder.position_offset is None and packed == 0
    np.testing.assert_allclose(vectors, read_alone(folder, 128), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('lengths', [[5], [30, 3, 3, 3, 3, 3, 3, 3, 3, 3], [200, 190, 180, 50, 40, 7, 7], [600, 20]])
def test_packed_sequences_hold_each_input_once_and_no_more_than_the_room(lengths):
    """Each input in one sequence; a sequence holds at most 256 tokens or the longest input; few sequences."""
    sequences = text_encoder.packed_sequences(lengths, capacity=256)
    assert sorted(i for sequence in sequences for i in sequence) == list(range(len(lengths)))
    fills = [sum(lengths[i] for i in sequence) for sequence in sequences]
    assert max(fills) <= max(256, max(lengths)) and len(sequences) <= 2 * -(-sum(lengths) // 256) + 1, fills
