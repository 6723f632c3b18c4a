"""Fine-tune the text encoder on the training split's utterance labels before the features are extracted
(extract_features.py --finetune): the recipe behind every published ERC result (COSMIC: RoBERTa fine-tuned as
an utterance classifier, the epoch chosen on dev, then its hidden states extracted).

    encoder, record, crossfit, moed = finetune_encoder(settings, encoder, table, label_names, saved_as, speakers)

The classifier (`Classifier`): the encoder, the mean of its last hidden states over the utterance's tokens
(the pooling of the features), dropout 0.1, one linear layer to the classes. Training follows Hugging Face's
run_classification.py: AdamW (--finetune-lr, --finetune-weight-decay, none on biases and LayerNorm weights),
a linear warm-up over the first --finetune-warmup fraction of the steps then a linear decay to 0, gradient
norm clipped at 1, cross-entropy (weighted by inverse class frequency with --finetune-class-weight), shuffled
batches of similar length, everything seeded by --finetune-seed. After each epoch the classifier is scored on
the dev split (weighted F1) and the best epoch's weights are kept. Without a dev split a seeded 10% of the
training dialogues is held out for that choice (and not trained on).

The dialogue head (--finetune-head dialogue, `DialogueClassifier`): an utterance classifier is rewarded for
putting the whole decision into each utterance's features (it sees nothing else), so a context model on top
of them has little left to add. With this head the same pooled vectors go through a bidirectional GRU over
each dialogue's utterances before the linear layer: the encoder is trained to serve a context model, as MoED's
text path (a linear layer, then a recurrent encoder) reads it. Each utterance is still encoded alone (the
same tokens; about 1.5x the CPU time per epoch, since batches of whole dialogues mix lengths and pad more;
extraction is unchanged); batches are whole dialogues (shuffled), at least
--finetune-batch-size utterances each; the GRU and the linear layer, new weights, learn at HEAD_LR; the GRU
is dropped after the fine-tuning.

The MoED head (--finetune-head moed, `MoEDClassifier`): what the dialogue head learns stays in its GRU, which is
dropped, and a MoED trained afterwards on the fixed features gets less than the joint model did. With this head
the context model trained with the encoder is MoED itself, as train.py --Dataset custom builds it by default (text
only): each utterance encoded as the extraction shows it (with this head by default as 'speaker: text' with the
previous turn as a second segment: extract_features.py) and pooled as the extraction pools it (the mean of each of
--layers over its own tokens), the four vectors of each dialogue's utterances with their speaker indices read by
MoED, whose new weights learn at HEAD_LR while the encoder's are fine-tuned at --finetune-lr. The selected epoch's
MoED is kept with the features (feature_folder.HEAD) and train.py starts from it, so the run's model is the one the
encoder was trained for; the batches are the dialogue head's.

Cross-fitting (--finetune-folds K >= 2): an encoder fine-tuned on the training labels makes features of the
training utterances more confident than those of dev and test, and a context model on top learns to trust
them too much. So the training dialogues are split into K seeded folds and K encoders are fine-tuned, each on
all folds but one (its epoch chosen on the dev split as above); each fold's features come from the encoder
that did not see it. Dev, test and predict.py use the uniform average of the K fine-tuned classifiers' weights
(a model soup, Wortsman et al. 2022: fine-tunings of one pre-trained model, from one seed, average well), the
encoder saved in the feature folder. It costs K fine-tunings of (K-1)/K of the data, no fine-tuning on all of
it.
"""
import copy
import sys
import time
from typing import NamedTuple

import numpy as np
import torch
import transformers
from torch import nn
from tqdm import tqdm

import model as moed_model
import utils
from core import config
from owndata import features, text_encoder
from utils import UserError

HELD_OUT = 0.1      # share of the training dialogues held out for the epoch choice when there is no dev split


HEADS = ('utterance', 'dialogue', 'moed')  # --finetune-head
HEAD_LR = 1e-3      # the new weights of the dialogue and MoED heads: AdamW's usual rate (MoED: 1e-4 measured worse)
CLASSIFIERS = {     # --finetune-head -> dataset.json's finetune.classifier
    'utterance': 'mean of the last hidden states, dropout 0.1, linear',
    'dialogue': f'mean of the last hidden states, dropout 0.1, a bidirectional GRU over the dialogue (hidden/2 per '
                f'direction; it and the linear layer at lr {HEAD_LR}), dropout 0.1, linear',
    'moed': f'the features (the mean of each of --layers over the tokens) read by MoED with the defaults of train.py '
            f'--Dataset custom (text only; at lr {HEAD_LR})'}


class Classifier(nn.Module):
    """encoder -> mean of the last hidden states over the pooled tokens -> dropout -> linear.
    batch: the tokenizer's dict, input_ids (B, L); mask (B, L): the tokens pooled (text_encoder.tokenize);
    returns logits (B, n_classes)."""
    head_lr = None      # the linear layer learns at --finetune-lr

    def __init__(self, encoder_model, n_classes, dropout=0.1):
        super().__init__()
        self.encoder = encoder_model
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder_model.config.hidden_size, n_classes)

    def forward(self, batch, mask):
        return self.head(self.dropout(text_encoder.masked_mean(self.encoder(**batch).last_hidden_state, mask)))


class DialogueClassifier(nn.Module):
    """--finetune-head dialogue: each utterance encoded alone and pooled as Classifier does, then dropout, a
    bidirectional GRU over its dialogue's utterances (hidden/2 per direction) and one linear layer. The encoder
    is trained for a context model on top, as MoED's text path (a linear layer, then a recurrent encoder)
    reads it; the GRU is dropped afterwards. chunks: (tokenizer dict, pooling mask, positions in the batch's
    utterance order) per encoder call; lengths: utterances per dialogue, the dialogues one after another.
    Returns logits (sum(lengths), n_classes) in that order."""
    head_lr = HEAD_LR

    def __init__(self, encoder_model, n_classes, dropout=0.1):
        super().__init__()
        hidden = encoder_model.config.hidden_size
        self.encoder = encoder_model
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden // 2, bidirectional=True)
        self.head = nn.Linear(2 * (hidden // 2), n_classes)

    def forward(self, chunks, lengths, speakers=None):
        vectors = dialogue_order(chunks, lambda batch, mask: text_encoder.masked_mean(
            self.encoder(**batch).last_hidden_state, mask)[None])[0]
        padded = nn.utils.rnn.pad_sequence(vectors.split(lengths))         # (T, B, hidden)
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(padded), torch.tensor(lengths), enforce_sorted=False)
        out = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0])[0]      # (T, B, hidden)
        return self.head(self.dropout(torch.cat([out[:n, b] for b, n in enumerate(lengths)])))


class MoEDClassifier(nn.Module):
    """--finetune-head moed: each utterance encoded as the extraction shows it, its features pooled as it pools them
    (the mean of each of `layers` over its tokens), then MoED as train.py --Dataset custom builds it by default
    (cfg, text only) over its dialogue: the encoder is fine-tuned for the model that will read its features, and
    MoED's weights are kept with them (feature_folder's HEAD) as train.py's starting point. chunks, lengths as
    DialogueClassifier; speakers: each utterance's speaker index, in the same order. Returns MoED's log
    probabilities (sum(lengths), n_classes) in that order."""

    head_lr = HEAD_LR

    def __init__(self, encoder_model, cfg, layers):
        super().__init__()
        self.encoder, self.layers = encoder_model, layers
        self.moed = moed_model.MoED(cfg)

    def forward(self, chunks, lengths, speakers):
        vectors = dialogue_order(chunks, lambda batch, mask: text_encoder.pooled_layers(self.encoder, batch,
                                                                                        self.layers, mask))  # (4, N, D)
        text = [nn.utils.rnn.pad_sequence(layer.split(lengths)) for layer in vectors]      # four (T, B, D)
        qmask = nn.utils.rnn.pad_sequence(
            nn.functional.one_hot(speakers, self.moed.cfg.n_speakers).float().split(lengths))
        return self.moed(text, None, None, qmask, torch.tensor(lengths))['log_prob']


def dialogue_order(chunks, encode):
    """encode(tokenizer dict, pooling mask) -> (k, n, D) of each chunk, joined as (k, N, D) in the batch's
    utterance order (each chunk's positions)."""
    pooled = torch.cat([encode(batch, mask) for batch, mask, _ in chunks], 1)
    vectors = torch.empty_like(pooled)
    vectors[:, torch.cat([positions for _, _, positions in chunks])] = pooled
    return vectors


class Speakers(NamedTuple):
    """Each utterance's speaker index (the folder's, extract_features.py) and their number (n_speakers)."""
    index: np.ndarray
    n: int


def moed_config(width, n_classes, n_speakers):
    """The ModelConfig train.py --Dataset custom builds by default for text features of this width."""
    args = config.parse_args(['--Dataset', config.CUSTOM, '--data-dir', '.'])
    config.resolve_extracted(args, 'l')
    dims = {'D_text': width, 'D_audio': 0, 'D_visual': 0}
    return config.model_config(args, dims, n_classes, n_speakers)


def settings_record(settings):
    """The fine-tuning flags as dataset.json records them (part of the recipe)."""
    return {name: getattr(settings, f'finetune_{name}') for name in
            ('epochs', 'lr', 'batch_size', 'warmup', 'weight_decay', 'class_weight', 'label_smoothing', 'seed',
             'folds', 'head')}


def check_labels(table, label_names):
    """Refuse fine-tuning without labelled training utterances (one paragraph, before any work)."""
    train = table[table['split'] == 'train']
    if train.empty or train['label'].isna().all():
        files = ', '.join(sorted(table['file'].unique()))
        raise UserError(f"--finetune trains the text encoder on the training split's emotion labels, but {files} "
                        f"{'have no train rows' if train.empty else 'give the train rows no labels'}; give a "
                        "labelled train CSV, or extract without --finetune (frozen encoder).")
    if len(label_names) < 2:
        raise UserError(f"--finetune needs at least two emotions in the training labels; found {label_names}.")


def selection_split(table, seed):
    """(rows to train on, rows to choose the epoch on, a sentence saying which): the dev split's labelled rows,
    or without one a seeded HELD_OUT share of the training dialogues."""
    train = np.flatnonzero((table['split'] == 'train').to_numpy())
    dev = np.flatnonzero(((table['split'] == 'dev') & table['label'].notna()).to_numpy())
    if len(dev):
        return train, dev, f"epoch chosen on the dev split ({len(dev)} utterances)"
    keys = table['key'].to_numpy()
    dialogues = sorted(set(keys[train]))
    rng = np.random.RandomState(seed)
    held = set(rng.permutation(dialogues)[:max(1, round(HELD_OUT * len(dialogues)))])
    chosen = np.array([keys[i] in held for i in train])
    return train[~chosen], train[chosen], (f"no dev split: epoch chosen on {len(held)} training dialogues held out "
                                           f"at random (seed {seed}, {HELD_OUT:.0%}), not trained on")


def folds_of(table, rows, k, seed):
    """The rows split into k folds by dialogue (seeded), as lists of row indices."""
    keys = table['key'].to_numpy()[rows]
    dialogues = np.random.RandomState(seed).permutation(sorted(set(keys)))
    fold_of = {key: i % k for i, key in enumerate(dialogues)}
    which = np.array([fold_of[key] for key in keys])
    return [rows[which == i] for i in range(k)]


def batches(encoder, inputs, rows, batch_size, rng=None, keys=None, speakers=None):
    """(rows, the model's inputs) of batches of rows, inputs = text_encoder.encoder_inputs(...); shuffled when rng is
    given: tokenized(plan_batches(...)). speakers: each row's speaker index, for the MoED head."""
    yield from tokenized(encoder, inputs, plan_batches(encoder, inputs, rows, batch_size, rng, keys), speakers)


def plan_batches(encoder, inputs, rows, batch_size, rng=None, keys=None):
    """The batches of rows, in order, each (its rows, the utterances of each of its dialogues or None); shuffled
    when rng is given. Without keys (the utterance head): rows of similar lengths together, batch_size a batch
    (the order of the batches shuffled too); with each row's dialogue key (the dialogue and MoED heads): whole
    dialogues (each in rows' order), at least batch_size utterances a batch, so a batch may hold more and an
    epoch has fewer batches than len(rows) / batch_size."""
    if keys is not None:
        groups = {}
        for i, key in enumerate(keys[rows]):
            groups.setdefault(key, []).append(i)
        groups = [np.array(group) for group in groups.values()]
        if rng is not None:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        plan, start = [], 0
        while start < len(groups):
            end, size = start, 0
            while end < len(groups) and size < batch_size:
                size, end = size + len(groups[end]), end + 1
            plan.append((rows[np.concatenate(groups[start:end])], [len(g) for g in groups[start:end]]))
            start = end
        return plan
    texts, contexts = inputs
    lengths = text_encoder.token_lengths(encoder, [texts[i] for i in rows], contexts and [contexts[i] for i in rows])
    if rng is None:
        order = np.argsort(-lengths, kind='stable')
    else:       # shuffle, then sort within chunks of 50 batches: random batches of similar length
        order = rng.permutation(len(rows))
        chunk = batch_size * 50
        order = np.concatenate([part[np.argsort(-lengths[part], kind='stable')]
                                for part in np.split(order, range(chunk, len(order), chunk))])
    parts = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        parts = [parts[i] for i in rng.permutation(len(parts))]
    return [(rows[part], None) for part in parts]


def tokenized(encoder, inputs, plan, speakers=None, chunk=16):
    """(rows, the model's inputs) of each batch of plan (plan_batches): for the utterance head (tokenizer dict,
    pooling mask); for whole dialogues (chunks, utterances per dialogue, their speaker indices or None) as
    DialogueClassifier and MoEDClassifier take them, the chunks chunk utterances of similar length each."""
    texts, contexts = inputs
    for chosen, dialogues in plan:
        if dialogues is None:
            yield chosen, text_encoder.tokenize(encoder, [texts[i] for i in chosen],
                                                contexts and [contexts[i] for i in chosen])
            continue
        lengths = text_encoder.token_lengths(encoder, [texts[i] for i in chosen],
                                             contexts and [contexts[i] for i in chosen])
        order = np.argsort(-lengths, kind='stable')
        chunks = []
        for part in (order[i:i + chunk] for i in range(0, len(order), chunk)):
            batch, mask = text_encoder.tokenize(encoder, [texts[i] for i in chosen[part]],
                                                contexts and [contexts[i] for i in chosen[part]])
            chunks.append((batch, mask, torch.as_tensor(part)))
        yield chosen, (chunks, dialogues, None if speakers is None else torch.as_tensor(speakers[chosen]))


def on_device(model_inputs, device):
    """A batch's model inputs (batches) moved to device."""
    if len(model_inputs) == 3:
        chunks, lengths, speakers = model_inputs
        return ([(batch.to(device), mask.to(device), positions.to(device)) for batch, mask, positions in chunks],
                lengths, None if speakers is None else speakers.to(device))
    return tuple(part.to(device) for part in model_inputs)


def predict_rows(model, encoder, inputs, rows, batch_size, device, keys=None, speakers=None):
    """Predicted class of each row (in rows' order)."""
    preds = np.empty(len(rows), dtype=np.int64)
    position = {row: i for i, row in enumerate(rows)}
    model.eval()
    with torch.inference_mode():
        for part, model_inputs in batches(encoder, inputs, rows, batch_size * 2, keys=keys, speakers=speakers):
            logits = model(*on_device(model_inputs, device))
            preds[[position[r] for r in part]] = logits.argmax(-1).cpu().numpy()
    return preds


def optimizer_and_schedule(model, settings, steps):
    """AdamW without decay on biases and LayerNorm weights; a linear warm-up over the first --finetune-warmup
    of the steps (all the optimizer steps of the fine-tuning), then a linear decay to 0 at the last. The
    new layers of a head with its own rate (model.head_lr: the dialogue head's GRU and linear layer, MoED) learn
    at that rate, the rest at --finetune-lr."""
    groups, own = [], model.head_lr is not None
    for fresh in (False, True):
        lr = model.head_lr if fresh else settings.finetune_lr
        named = [(n, p) for n, p in model.named_parameters() if (own and not n.startswith('encoder.')) == fresh]
        groups += [{'params': [p for n, p in named if p.ndim >= 2], 'weight_decay': settings.finetune_weight_decay,
                    'lr': lr}, {'params': [p for n, p in named if p.ndim < 2], 'weight_decay': 0.0, 'lr': lr}]
    optimizer = torch.optim.AdamW([group for group in groups if group['params']], lr=settings.finetune_lr)
    warmup = int(round(settings.finetune_warmup * steps))
    return optimizer, transformers.get_linear_schedule_with_warmup(optimizer, warmup, steps)


def make_head(settings, base, n_classes, speakers):
    """The classifier of --finetune-head around a copy of base's encoder model (speakers: Speakers, for the
    MoED head)."""
    encoder_model = copy.deepcopy(base.model).float()
    if settings.finetune_head == 'moed':
        cfg = moed_config(encoder_model.config.hidden_size, n_classes, speakers.n)
        return MoEDClassifier(encoder_model, cfg, text_encoder.resolve_layers(settings.layers, base))
    return (DialogueClassifier if settings.finetune_head == 'dialogue' else Classifier)(encoder_model, n_classes)


def fine_tune(settings, base, inputs, labels, train_rows, select_rows, n_classes, title, keys=None, speakers=None):
    """A copy of base.model fine-tuned on train_rows with the head of --finetune-head, the epoch chosen on
    select_rows: (the classifier in eval mode (its .encoder the encoder model), per-epoch history, the
    selected epoch's index from 1). keys: each row's dialogue (the dialogue and MoED heads); speakers: each
    row's speaker index and their number (the MoED head)."""
    device = settings.device
    torch.manual_seed(settings.finetune_seed)
    rng = np.random.RandomState(settings.finetune_seed)
    model = make_head(settings, base, n_classes, speakers).to(device)
    index = None if speakers is None else speakers.index
    weight = None
    if settings.finetune_class_weight:
        weight = torch.tensor(utils.inverse_class_frequency(labels[train_rows], n_classes), dtype=torch.float32,
                              device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=settings.finetune_label_smoothing)
    # every epoch's batches drawn first: with whole dialogues their number depends on the shuffle
    plans = [plan_batches(base, inputs, train_rows, settings.finetune_batch_size, rng, keys)
             for _ in range(settings.finetune_epochs)]
    steps = sum(len(plan) for plan in plans)
    optimizer, schedule = optimizer_and_schedule(model, settings, steps)
    history, best = [], (-1.0, None, 0)
    bar = tqdm(total=steps, unit='batch', desc=title, file=sys.stderr)
    for epoch, plan in enumerate(plans, 1):
        model.train()
        total, seen = 0.0, 0
        for part, model_inputs in tokenized(base, inputs, plan, index):
            loss = loss_fn(model(*on_device(model_inputs, device)), torch.as_tensor(labels[part], device=device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total, seen = total + loss.item() * len(part), seen + len(part)
            bar.update(1)
        preds = predict_rows(model, base, inputs, select_rows, settings.finetune_batch_size, device, keys, index)
        f1 = utils.weighted_f1(labels[select_rows], preds)
        history.append({'epoch': epoch, 'train_loss': round(total / seen, 4), 'select_f1': round(f1, 2),
                        'select_acc': round(utils.accuracy(labels[select_rows], preds), 2)})
        bar.write(f"{title} epoch {epoch}: train loss {total / seen:.4f}, weighted F1 {f1:.2f} on the rows the "
                  "epoch is chosen on")
        if f1 > best[0]:
            best = (f1, copy.deepcopy(model.state_dict()), epoch)
    bar.close()
    model.load_state_dict(best[1])
    model.eval()
    return model, history, best[2]


def as_encoder(base, model, name, hashed=True):
    """A text_encoder.Encoder around a fine-tuned encoder model: its sha256 recomputed, or None where nothing
    records it (a cross-fitting fold's encoder, used once and dropped); read packed as the base is (the same
    architecture: load_encoder's probe holds for it)."""
    sha256 = text_encoder.encoder_sha256(base.tokenizer, model) if hashed else None
    return text_encoder.Encoder(name=name, tokenizer=base.tokenizer, model=model, sha256=sha256,
                                n_hidden_states=base.n_hidden_states, max_length=base.max_length,
                                position_offset=base.position_offset)


def cross_fit(settings, base, table, inputs, labels, train_rows, select_rows, n_classes, keys, speakers):
    """Cross-fitting (the module's docstring): (the classifier whose weights are the average of the K fold
    classifiers', each fold's record, (training rows, their (4, n, D) text features from the fold encoders that
    did not see them))."""
    k = settings.finetune_folds
    crossfit = (train_rows, np.zeros((4, len(train_rows), base.model.config.hidden_size), dtype=np.float32))
    position = {row: i for i, row in enumerate(train_rows)}
    total, folds = None, []
    for i, fold in enumerate(folds_of(table, train_rows, k, settings.finetune_seed)):
        model, history, epoch = fine_tune(settings, base, inputs, labels, np.setdiff1d(train_rows, fold),
                                          select_rows, n_classes, f'fold {i + 1}/{k}', keys, speakers)
        fold_encoder = as_encoder(base, model.encoder, 'fold', hashed=False)
        crossfit[1][:, [position[r] for r in fold]] = text_encoder.extract_text(
            features.ExtractionSettings.from_args(settings), fold_encoder, table.iloc[fold])[0]
        folds.append({'utterances': len(fold), 'history': history, 'selected_epoch': epoch,
                      'select_f1': history[epoch - 1]['select_f1']})
        state = model.state_dict()
        if total is None:
            total = {name: value.detach().clone() for name, value in state.items()}
        else:
            for name, value in state.items():
                if value.is_floating_point():
                    total[name] += value
    model.load_state_dict({name: value / k if value.is_floating_point() else value for name, value in total.items()})
    model.eval()
    return model, folds, crossfit


def finetune_encoder(settings, base, table, label_names, saved_as, speakers=None):
    """(the fine-tuned encoder (with cross-fitting the fold encoders' average), named saved_as (where
    extract_features.py saves it), dataset.json's record of the fine-tuning, with cross-fitting (training rows,
    their (4, n, D) text features from the fold encoders) else None, and the MoED head's MoED (in eval mode)
    else None). speakers: Speakers of the table's rows (needed by the MoED head)."""
    check_labels(table, label_names)
    started = time.perf_counter()
    labels = table['label'].map({name: i for i, name in enumerate(label_names)}).fillna(-1).astype(np.int64).to_numpy()
    inputs = text_encoder.encoder_inputs(table, text_encoder.text_input(settings))
    train_rows, select_rows, selection = selection_split(table, settings.finetune_seed)
    train_rows = train_rows[labels[train_rows] >= 0]
    print(f"fine-tuning {base.name} on {len(train_rows)} training utterances; {selection}", file=sys.stderr)
    n = len(label_names)
    keys = None if settings.finetune_head == 'utterance' else table['key'].to_numpy()
    index = speakers.index if settings.finetune_head == 'moed' else None
    record = {'base_text_model': text_encoder.encoder_description(base)['text_model'], 'base_sha256': base.sha256,
              'settings': settings_record(settings), 'classifier': CLASSIFIERS[settings.finetune_head],
              'selection': selection}
    if settings.finetune_folds > 1:
        model, record['folds'], crossfit = cross_fit(settings, base, table, inputs, labels, train_rows, select_rows,
                                                     n, keys, speakers)
        preds = predict_rows(model, base, inputs, select_rows, settings.finetune_batch_size, settings.device, keys,
                             index)
        record.update(history=[], selected_epoch=None, dev_f1=round(utils.weighted_f1(labels[select_rows], preds), 2),
                      dev_acc=round(utils.accuracy(labels[select_rows], preds), 2))
    else:
        model, history, epoch = fine_tune(settings, base, inputs, labels, train_rows, select_rows, n, 'fine-tune',
                                          keys, speakers)
        crossfit, record['folds'] = None, []
        record.update(history=history, selected_epoch=epoch, dev_f1=history[epoch - 1]['select_f1'],
                      dev_acc=history[epoch - 1]['select_acc'])
    test = np.flatnonzero(((table['split'] == 'test') & table['label'].notna()).to_numpy())
    if len(test):
        preds = predict_rows(model, base, inputs, test, settings.finetune_batch_size, settings.device, keys, index)
        record.update(test_f1=round(utils.weighted_f1(labels[test], preds), 2),
                      test_acc=round(utils.accuracy(labels[test], preds), 2))
    encoder = as_encoder(base, model.encoder, saved_as)
    record['sha256'] = encoder.sha256
    record['seconds'] = round(time.perf_counter() - started, 1)
    return encoder, record, crossfit, getattr(model, 'moed', None)


def save_encoder(encoder, folder):
    """The fine-tuned encoder as a Hugging Face model folder: safetensors weights, config, tokenizer."""
    encoder.model.save_pretrained(folder, safe_serialization=True)
    encoder.tokenizer.save_pretrained(folder)
